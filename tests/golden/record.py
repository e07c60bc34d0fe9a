"""Records the golden outputs that the architecture must keep (tests/golden/test_golden.py).

Run on the commit whose behaviour is the reference, from the repository root:

    .venv/bin/python tests/golden/record.py

Everything goes through public API only (`compile`, `fit`, `evaluate`, `weights`), so the
same script reads the same figures from any later layout.
"""

import os
import sys

import keras
import numpy as np

import keras_meta as km

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "algorithms"))
from learner_table import LEARNERS, MODES, mlp  # noqa: E402

GOLDEN = os.path.join(os.path.dirname(__file__), "learners.npz")
TASKS = km.tasks.Sinusoid(shots=5, queries=5)
# The generic modes without `eager` (the same traced code, op by op) plus a BatchNorm model.
RECORDED_MODES = ("function", "xla", "vectorized", "xla_vectorized")


def supervised(name, mode, batch_norm=False):
    """Weights after one SGD(1) step (the meta-gradient), after 5 Adam steps, and a curve."""
    out = {}
    learner = LEARNERS[name](mlp(batch_norm=batch_norm))
    start = [v.numpy() for v in learner.trainable_variables]
    learner.compile(optimizer=keras.optimizers.SGD(1.0), **MODES[mode])
    learner.fit(TASKS, meta_batch_size=4, steps_per_epoch=1, verbose=0, seed=3)
    for i, (a, v) in enumerate(zip(start, learner.trainable_variables)):
        out[f"meta_gradient/{i}"] = a - v.numpy()
    learner = LEARNERS[name](mlp(batch_norm=batch_norm))
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), **MODES[mode])
    history = learner.fit(TASKS, meta_batch_size=4, steps_per_epoch=5, verbose=0, seed=4)
    out["loss_history"] = np.asarray(history.history["loss"])
    for i, v in enumerate(learner.weights):
        out[f"weights_after_5/{i}"] = v.numpy()
    curve = learner.evaluate(TASKS, steps=[0, 1, 3], meta_batch_size=4, num_batches=2, seed=5)
    out["evaluate"] = np.asarray([[curve[s]["loss"], curve[s]["loss_ci95"]] for s in (0, 1, 3)])
    return out


def rl():
    from keras_meta.rl import MAMLRL, RL2, GaussianPolicy, Navigation2D

    out = {}
    keras.utils.set_random_seed(0)
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(2)])
    learner = MAMLRL(GaussianPolicy(body, 2), Navigation2D(horizon=10), seed=3)
    learner.fit(epochs=2, meta_batch_size=2, episodes_per_task=2, verbose=0)
    for i, v in enumerate(learner.policy.weights):
        out[f"maml_rl/{i}"] = v.numpy()
    keras.utils.set_random_seed(0)
    learner = RL2(None, Navigation2D(horizon=5), episodes_per_trial=2, units=8, seed=0, ppo_epochs=1)
    learner.fit(epochs=2, meta_batch_size=2, verbose=0)
    for i, v in enumerate(learner.policy.weights):
        out[f"rl2/{i}"] = v.numpy()
    return out


def record_all():
    arrays = {}
    for name in LEARNERS:
        for mode in RECORDED_MODES:
            for key, value in supervised(name, mode).items():
                arrays[f"{name}/{mode}/{key}"] = value
    for mode in RECORDED_MODES:
        for key, value in supervised("maml", mode, batch_norm=True).items():
            arrays[f"maml_bn/{mode}/{key}"] = value
    arrays.update(rl())
    return arrays


if __name__ == "__main__":
    np.savez(GOLDEN, **record_all())
    print("wrote", GOLDEN)
