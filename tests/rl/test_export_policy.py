"""MAMLRL.export_adaptive: a SavedModel whose `adapt` takes MAML-RL's inner
policy-gradient step from a batch of transitions and whose `action` then acts as the
policy adapted in Python (`MAMLRL.adapt_step`), run in a process that never imports
keras_meta. TF-Agents' SavedModelPyTFEagerPolicy cannot drive it: the adapted weights are
inputs of `action`, not a PolicySaver policy state, so plain `tf.saved_model.load` does."""

import os
import subprocess
import sys

import keras
import numpy as np

from keras_meta.rl import GaussianPolicy, MAMLRL, Navigation2D

_ADAPT_AND_ACT = """
import sys
import numpy as np, tensorflow as tf
root = sys.argv[1]
data = np.load(f"{root}/data.npz")
loaded = tf.saved_model.load(f"{root}/policy")
weights = loaded.signatures["adapt"](
    observations=tf.constant(data["observations"]), actions=tf.constant(data["actions"]),
    advantages=tf.constant(data["advantages"]))
ordered = [weights[f"weights_{i}"] for i in range(len(weights))]
np.savez(f"{root}/served.npz",
         adapted=loaded.signatures["action"](observation=tf.constant(data["test"]),
                                             **weights)["action"].numpy(),
         method=loaded.action(tf.constant(data["test"]), *ordered)["action"].numpy(),
         meta=loaded.action_meta(tf.constant(data["test"]))["action"].numpy())
assert "keras_meta" not in sys.modules
"""


def test_exported_policy_adapts_and_acts_as_in_python(tmp_path):
    keras.utils.set_random_seed(0)
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(2)])
    learner = MAMLRL(GaussianPolicy(body, 2), Navigation2D(horizon=10), inner_lr=0.5, seed=3)
    learner.export_adaptive(tmp_path / "policy")
    task = learner.env.sample_tasks(1, seed=4)[0]
    buffer = learner.collect([w[None] for w in learner.policy.weights_list()], [task], 4,
                             seed=5)
    batch = learner.process(buffer)
    valid = batch.masks.numpy()[0] > 0
    test = np.random.default_rng(6).uniform(-0.5, 0.5, (7, 2)).astype(np.float32)
    np.savez(tmp_path / "data.npz", observations=batch.observations.numpy()[0][valid],
             actions=batch.actions.numpy()[0][valid].astype(np.float32),
             advantages=batch.advantages.numpy()[0][valid].astype(np.float32), test=test)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", _ADAPT_AND_ACT, str(tmp_path)], check=True, env=env,
                   cwd=tmp_path)
    served = np.load(tmp_path / "served.npz")
    adapted = learner.adapt_step(learner.policy, buffer)
    expected = adapted.mode(None, test).numpy()
    np.testing.assert_allclose(served["adapted"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served["method"], expected, rtol=1e-5, atol=1e-6)
    meta = learner.policy.mode(None, test).numpy()
    np.testing.assert_allclose(served["meta"], meta, rtol=1e-6, atol=1e-6)
    # The comparison would pass for an `adapt` that did nothing.
    assert np.abs(expected - meta).max() > 1e-3
