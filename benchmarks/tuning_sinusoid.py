"""A small KerasTuner search around MAML on the sinusoid (km.tuning.MetaHyperModel).

Searches layers, units, inner/outer learning rates and inner steps with Hyperband, the
objective being the post-adaptation query MSE after 5 steps on held-out sinusoid tasks
(the same 100 tasks for every trial); then re-evaluates the reloaded best learner on 400
other held-out tasks with a 95% CI, next to the default configuration (2x40 ReLU,
inner_lr 0.01, 1 inner step, Adam 1e-3) trained for the largest trial budget.

    .venv/bin/python benchmarks/tuning_sinusoid.py --max-epochs 9 --steps-per-epoch 100
"""

import argparse
import json
import tempfile
import time

import keras
import keras_tuner as kt

import keras_meta as km

EVAL_STEPS = 5


def build_learner(hp):
    layers = [keras.layers.Dense(hp.Int("units", 16, 64, step=16), activation="relu")
              for _ in range(hp.Int("layers", 1, 3))]
    model = keras.Sequential([keras.Input((1,)), *layers, keras.layers.Dense(1)])
    maml = km.MAML(model, inner_lr=hp.Float("inner_lr", 1e-3, 0.1, sampling="log"),
                   inner_steps=hp.Int("inner_steps", 1, 3))
    maml.compile(keras.optimizers.Adam(hp.Float("outer_lr", 1e-4, 1e-2, sampling="log")))
    return maml


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--meta-batch-size", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train = km.tasks.Sinusoid(shots=5, queries=10)
    validation = km.tasks.Sinusoid(shots=5, queries=10, split="test")
    hypermodel = km.tuning.MetaHyperModel(build_learner, validation, eval_steps=EVAL_STEPS, meta_batch_size=25,
                                          num_batches=4, eval_seed=1)
    folder = tempfile.mkdtemp()
    tuner = kt.Hyperband(hypermodel, objective=hypermodel.objective, max_epochs=args.max_epochs, factor=3,
                         seed=args.seed, directory=folder, project_name="sinusoid")
    start = time.perf_counter()
    tuner.search(train, meta_batch_size=args.meta_batch_size, steps_per_epoch=args.steps_per_epoch, verbose=0)
    wall = time.perf_counter() - start
    trials = list(tuner.oracle.trials.values())
    best_trial = tuner.oracle.get_best_trials(1)[0]
    best = tuner.get_best_models(1)[0]
    test = lambda learner: learner.evaluate(validation, steps=[EVAL_STEPS], meta_batch_size=25, num_batches=16,
                                            seed=12345)[EVAL_STEPS]
    default_hp = kt.HyperParameters()
    default_hp.Fixed("units", 40), default_hp.Fixed("layers", 2), default_hp.Fixed("inner_lr", 0.01)
    default_hp.Fixed("inner_steps", 1), default_hp.Fixed("outer_lr", 1e-3)
    default = build_learner(default_hp)
    default.fit(train, meta_batch_size=args.meta_batch_size, epochs=args.max_epochs,
                steps_per_epoch=args.steps_per_epoch, verbose=0)
    result = {
        "trials": len(trials), "wall_s": wall,
        "meta_steps_in_search": sum(t.hyperparameters.values.get("tuner/epochs", 0)
                                    - t.hyperparameters.values.get("tuner/initial_epoch", 0)
                                    for t in trials) * args.steps_per_epoch,
        "best_hyperparameters": {k: v for k, v in best_trial.hyperparameters.values.items()
                                 if not k.startswith("tuner/")},
        "best_validation_mse": best_trial.score,
        "best_test": test(best), "default_test": test(default), "args": vars(args),
    }
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
