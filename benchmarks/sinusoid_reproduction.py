"""Reproduces the MAML paper's sinusoid regression table (Finn et al., 2017, §5.1).

Protocol: MLP 40-40 (ReLU), meta-batch 25 tasks, K support and K query points per task,
one inner step with alpha = 0.01 during meta-training, Adam(1e-3). Evaluation on held-out
test tasks (a disjoint seed stream): adapt with K points, MSE on 100 query points, after
1, 5 and 10 steps, against a "pretrained" baseline (one network trained jointly on all
tasks, then fine-tuned with the same steps). The evaluation step size is chosen on
validation tasks from a small grid for each step count, then reported on test tasks
(the whole grid is printed too).

    python benchmarks/sinusoid_reproduction.py --shots 5 --iterations 20000
"""

import argparse
import json
import time

import keras
import numpy as np

import keras_meta as km

EVAL_STEPS = [0, 1, 5, 10]
EVAL_LRS = [0.001, 0.003, 0.005, 0.01, 0.02]


def mlp():
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(40, activation="relu"),
                             keras.layers.Dense(40, activation="relu"), keras.layers.Dense(1)])


def pretrained_baseline(iterations, shots, seed):
    """Joint training on points of many tasks (the paper's 'pretrained' baseline)."""
    keras.utils.set_random_seed(seed)
    model = mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    tasks = km.tasks.Sinusoid(shots=shots, queries=shots)
    per_step = 25 * 2 * shots
    batch = tasks.sample(iterations * 25 // 10, seed)
    x = np.concatenate([batch.support_x, batch.query_x], 1).reshape(-1, 1)
    y = np.concatenate([batch.support_y, batch.query_y], 1).reshape(-1, 1)
    model.fit(x, y, batch_size=per_step, epochs=10, verbose=0)
    return model


def curve(learner, shots, split, lr, num_batches=24):
    tasks = km.tasks.Sinusoid(shots=shots, queries=100, split=split)
    result = learner.evaluate_adaptation(tasks, EVAL_STEPS, meta_batch_size=25,
                                         num_batches=num_batches, seed=1, inner_lr=lr)
    return {s: result[s]["loss"] for s in EVAL_STEPS}


def lr_per_step(learner, shots):
    """The evaluation step size for each step count, chosen on validation tasks."""
    scores = {lr: curve(learner, shots, "val", lr, num_batches=4) for lr in EVAL_LRS}
    score = lambda lr, s: scores[lr][s] if np.isfinite(scores[lr][s]) else np.inf
    return {s: min(EVAL_LRS, key=lambda lr: score(lr, s)) for s in EVAL_STEPS}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inner-steps", type=int, default=1,
                        help="inner steps during meta-training (the paper: 1)")
    parser.add_argument("--clipnorm", type=float, default=None,
                        help="clip the meta-gradient norm (Adam's clipnorm)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    maml = km.MAML(mlp(), inner_lr=0.01, inner_steps=args.inner_steps)
    maml.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=args.clipnorm), steps_per_execution=50)
    start = time.perf_counter()
    maml.fit(km.tasks.Sinusoid(shots=args.shots, queries=args.shots), meta_batch_size=25,
             epochs=max(1, args.iterations // 1000), steps_per_epoch=min(1000, args.iterations),
             seed=args.seed, verbose=2)
    train_seconds = time.perf_counter() - start

    baseline = km.MAML(pretrained_baseline(args.iterations, args.shots, args.seed), inner_lr=0.01)
    baseline.compile()
    rows = {}
    for name, learner in (("MAML", maml), ("pretrained", baseline)):
        grid = {lr: curve(learner, args.shots, "test", lr) for lr in EVAL_LRS}
        chosen = lr_per_step(learner, args.shots)
        rows[name] = {"grid": grid, "chosen_lr": chosen,
                      "mse": {s: grid[chosen[s]][s] for s in EVAL_STEPS}}
    print(f"\nsinusoid K={args.shots}, {args.inner_steps} inner step(s) in training, "
          f"meta-gradient clipnorm {args.clipnorm}: "
          f"{int(maml.task_step.numpy())} meta-iterations, "
          f"meta-batch 25, train {train_seconds:.0f} s; test MSE on 24x25 tasks, 100 queries")
    header = "".join(f"{f'{s} steps':>10}" for s in EVAL_STEPS)
    print(f"{'method':<12}{'eval lr':>16}" + header)
    for name, row in rows.items():
        for lr, mse in row["grid"].items():
            print(f"{name:<12}{lr:>16}" + "".join(f"{mse[s]:>10.3f}" for s in EVAL_STEPS))
        print(f"{name:<12}{'val-selected':>16}" + "".join(f"{row['mse'][s]:>10.3f}" for s in EVAL_STEPS)
              + "   lr per step: " + str(row["chosen_lr"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shots": args.shots, "inner_steps": args.inner_steps, "clipnorm": args.clipnorm, "iterations": int(maml.task_step.numpy()),
                       "train_seconds": train_seconds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
