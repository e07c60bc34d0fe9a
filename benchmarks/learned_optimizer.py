"""Learned optimizers (Andrychowicz et al., 2016) against tuned Adam and SGD.

Meta-trains a coordinate-wise rule (the paper's 2-layer, 20-unit LSTM, and the small MLP
rule) on 10-dimensional quadratics `||W theta - y||^2` with truncated BPTT (horizon 100,
truncations of 20), then optimises held-out problems for `--steps` steps with it and with
Adam and SGD, whose learning rates are tuned per family on separate tuning problems
(grid 1e-4 .. 1, best median final loss). Families:

- `quadratics-10`: held-out problems of the training family;
- `quadratics-20x2` (shift): dimension 20, `W` and `y` with standard deviation 2;
- `mlp-sine` (shift): a 20-unit sigmoid MLP fitting a random sine wave (MSE), a different
  objective altogether.

Reports per family and optimizer the median over problems and meta-training seeds of the
loss after 10 / 50 / `steps` steps, and how often (over problems x seeds) the learned
rule ends below tuned Adam. Everything runs through `keras_meta.inner.adapt`, the inner
loop the learners use.

    python benchmarks/learned_optimizer.py                 # RESULTS.md's run
    python benchmarks/learned_optimizer.py --quick         # a smoke run
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from keras_meta import inner
from keras_meta.optimizers import LearnedRule, MLPRegression, Quadratics, Stacked, meta_train

GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
FAMILIES = {
    "quadratics-10": Quadratics(dim=10),
    "quadratics-20x2": Quadratics(dim=20, scale=2.0),
    "mlp-sine": MLPRegression(hidden_units=20, activation="sigmoid"),
}


def curve_fn(problems, make_rule, steps, size):
    """A compiled `(params, data, lr, weights) -> losses[size, steps + 1]` for `size` stacked
    problems of one family (every rule here is elementwise, so stacking is exact);
    `make_rule(lr, weights)` gives the rule (weights: a learned rule's, as arguments so
    that one trace serves every meta-training seed)."""
    stacked = Stacked(problems, size)

    @tf.function
    def run(params, data, lr, weights):
        losses = []
        inner.adapt(lambda p, k: stacked.loss(p, data), params, make_rule(lr, weights), steps,
                    first_order=True,
                    on_step=lambda k, p: losses.append(stacked.losses(p, data)))
        return tf.stack(losses, 1)

    return run


def curves(run, problems, seeds, lr, weights=()):
    params, data = Stacked(problems, len(seeds)).sample_many(seeds)
    out = run([tf.constant(p) for p in params], tuple(tf.constant(d) for d in data),
              tf.constant(lr, tf.float32), [tf.constant(w) for w in weights]).numpy()
    # A diverged run counts as infinitely bad, not as a missing value.
    return np.nan_to_num(out, nan=np.inf)


def tuned(problems, rule, steps, tune_seeds, eval_seeds):
    run = curve_fn(problems, lambda lr, weights: rule(lr), steps, len(eval_seeds))
    finals = {lr: np.median(curves(run, problems, tune_seeds, lr)[:, -1]) for lr in GRID}
    best = min(finals, key=finals.get)
    return best, curves(run, problems, eval_seeds, best)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=300, help="meta-training iterations")
    parser.add_argument("--seeds", type=int, default=3, help="meta-training seeds")
    parser.add_argument("--problems", type=int, default=32, help="held-out problems per family")
    parser.add_argument("--steps", type=int, default=100, help="optimisation steps at test")
    parser.add_argument("--meta-lr", type=float, default=3e-3, help="Adam's rate for the rule")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.seeds, args.problems, args.steps = 3, 1, 4, 20
    tune_seeds = list(range(50_000, 50_000 + args.problems))
    eval_seeds = list(range(100_000, 100_000 + args.problems))
    print(f"iterations={args.iterations} seeds={args.seeds} problems={args.problems} "
          f"steps={args.steps} meta_lr={args.meta_lr}; "
          f"TF {tf.__version__}, Keras {keras.__version__}")

    rules = {}
    for kind in ("lstm", "mlp"):
        for seed in range(args.seeds):
            start = time.perf_counter()
            rule = meta_train(LearnedRule(kind=kind, seed=seed), FAMILIES["quadratics-10"],
                              iterations=args.iterations, meta_batch_size=8, horizon=100,
                              unroll=20, seed=seed,
                              optimizer=keras.optimizers.Adam(args.meta_lr, clipnorm=1.0))
            print(f"meta-trained {kind} seed {seed} in {time.perf_counter() - start:.0f} s",
                  flush=True)
            rules[kind, seed] = rule

    marks = sorted({10, 50, args.steps} & set(range(args.steps + 1)))
    print("\n| family | optimizer | lr | " + " | ".join(f"loss@{m}" for m in marks)
          + " | learned < Adam at the end |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in marks) + " | --- |")
    for name, problems in FAMILIES.items():
        rows = {}
        for kind in ("sgd", "adam"):
            lr, losses = tuned(problems, getattr(inner, kind), args.steps, tune_seeds,
                               eval_seeds)
            rows[kind] = (f"{lr:g}", losses)
        for kind in ("lstm", "mlp"):
            template = rules[kind, 0]
            run = curve_fn(problems, lambda lr, weights, r=template: r.update_rule(weights, lr),
                           args.steps, len(eval_seeds))
            losses = np.concatenate([curves(run, problems, eval_seeds, 1.0,
                                            rules[kind, s].get_weights())
                                     for s in range(args.seeds)])
            rows[f"learned {kind}"] = ("-", losses)
        adam_final = np.tile(rows["adam"][1][:, -1], args.seeds)
        for label, (lr, losses) in rows.items():
            medians = " | ".join(f"{np.median(losses[:, m]):.4g}" for m in marks)
            wins = ""
            if label.startswith("learned"):
                wins = f"{np.mean(losses[:, -1] < adam_final):.0%}"
            print(f"| {name} | {label} | {lr} | {medians} | {wins} |", flush=True)


if __name__ == "__main__":
    main()
