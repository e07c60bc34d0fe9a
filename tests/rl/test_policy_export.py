"""MAMLRL.export_adaptive: a SavedModel whose `adapt` takes MAML-RL's inner
policy-gradient step from a batch of transitions and whose `action` then acts as the
policy adapted in Python (`MAMLRL.adapt_step`), run in processes that never import
keras_meta: with plain `tf.saved_model.load`, and as a TF-Agents policy
(`SavedModelPyTFEagerPolicy`, the adapted weights carried as its policy state)."""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

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
np.savez(f"{root}/{sys.argv[2]}.npz",
         adapted=loaded.signatures["action"](observation=tf.constant(data["test"]),
                                             **weights)["action"].numpy(),
         method=loaded.action(tf.constant(data["test"]), *ordered)["action"].numpy(),
         meta=loaded.action_meta(tf.constant(data["test"]))["action"].numpy())
assert "keras_meta" not in sys.modules
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Exports a small Navigation2D learner, saves one task's processed transitions and
    test observations; returns the directory, the learner, its buffer and the
    observations."""
    root = tmp_path_factory.mktemp("adaptive_policy")
    keras.utils.set_random_seed(0)
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(2)])
    learner = MAMLRL(GaussianPolicy(body, 2), Navigation2D(horizon=10), inner_lr=0.5, seed=3)
    learner.export_adaptive(root / "policy")
    task = learner.env.sample_tasks(1, seed=4)[0]
    buffer = learner.collect([w[None] for w in learner.policy.weights_list()], [task], 4,
                             seed=5)
    batch = learner.process(buffer)
    valid = batch.masks.numpy()[0] > 0
    test = np.random.default_rng(6).uniform(-0.5, 0.5, (7, 2)).astype(np.float32)
    np.savez(root / "data.npz", observations=batch.observations.numpy()[0][valid],
             actions=batch.actions.numpy()[0][valid].astype(np.float32),
             advantages=batch.advantages.numpy()[0][valid].astype(np.float32), test=test)
    return root, learner, buffer, test


def _run_without_keras_meta(script, root, output, **env):
    """Runs `script` on `root` in a fresh interpreter; returns the arrays it saved to
    `root/<output>.npz`."""
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **env}
    subprocess.run([sys.executable, "-c", script, str(root), output], check=True, env=env,
                   cwd=root)
    return np.load(root / f"{output}.npz")


def test_exported_policy_adapts_and_acts_as_in_python(exported):
    root, learner, buffer, test = exported
    served = _run_without_keras_meta(_ADAPT_AND_ACT, root, "served")
    adapted = learner.adapt_step(learner.policy, buffer)
    expected = adapted.mode(None, test).numpy()
    np.testing.assert_allclose(served["adapted"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served["method"], expected, rtol=1e-5, atol=1e-6)
    meta = learner.policy.mode(None, test).numpy()
    np.testing.assert_allclose(served["meta"], meta, rtol=1e-6, atol=1e-6)
    # The comparison would pass for an `adapt` that did nothing.
    assert np.abs(expected - meta).max() > 1e-3


# TF-Agents drives the export: specs from its policy_specs.pbtxt; on a batch of 7 time
# steps, the state of the rows from `adapt_state` (first 4 rows: the task) and
# `get_initial_state` (last 3: meta); then a PyDriver on a one-env walk at the task's
# weights, recording what the policy saw and did.
_TF_AGENTS = """
import sys
import numpy as np, tensorflow as tf
from tf_agents.drivers import py_driver
from tf_agents.environments import py_environment
from tf_agents.policies import py_tf_eager_policy
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts

class Walk(py_environment.PyEnvironment):
    def observation_spec(self):
        return array_spec.ArraySpec((2,), np.float32)

    def action_spec(self):
        return array_spec.ArraySpec((2,), np.float32)

    def _reset(self):
        self._position = np.array([0.1, -0.2], np.float32)
        return ts.restart(self._position)

    def _step(self, action):
        self._position = (self._position + 0.1 * action).astype(np.float32)
        return ts.transition(self._position, np.float32(0.0))

root = sys.argv[1]
data = np.load(f"{root}/data.npz")
test = data["test"]
loaded = tf.saved_model.load(f"{root}/policy")
transitions = [tf.constant(data[k]) for k in ("observations", "actions", "advantages")]
policy = py_tf_eager_policy.SavedModelPyTFEagerPolicy(
    f"{root}/policy", load_specs_from_pbtxt=True, batch_time_steps=False)
adapted = loaded.adapt_state(*transitions, tf.constant(4))
meta = policy.get_initial_state(3)
state = {k: tf.concat([adapted[k], meta[k]], 0) for k in meta}
step = policy.action(ts.restart(test, batch_size=7), state)
mid = ts.transition(test, np.ones(7, np.float32), np.ones(7, np.float32))
seen = []
env = Walk()
py_driver.PyDriver(env, py_tf_eager_policy.SavedModelPyTFEagerPolicy(
    f"{root}/policy", load_specs_from_pbtxt=True), observers=[seen.append], max_steps=5).run(
    env.reset(), loaded.adapt_state(*transitions, tf.constant(1)))
np.savez(f"{root}/{sys.argv[2]}.npz", first=np.asarray(step.action),
         mid=np.asarray(policy.action(mid, step.state).action),
         train_step=policy.get_train_step(),
         walk_observations=np.stack([t.observation for t in seen]),
         walk_actions=np.stack([t.action for t in seen]))
assert "keras_meta" not in sys.modules
"""


@pytest.mark.skipif(importlib.util.find_spec("tf_agents") is None,
                    reason="needs the tf-agents extra")
def test_tf_agents_saved_model_policy_acts_as_the_adapted_policy(exported):
    root, learner, buffer, test = exported
    served = _run_without_keras_meta(_TF_AGENTS, root, "tf_agents", TF_USE_LEGACY_KERAS="1")
    adapted = learner.adapt_step(learner.policy, buffer).mode(None, test[:4]).numpy()
    meta = learner.policy.mode(None, test[4:]).numpy()
    for key in ("first", "mid"):
        np.testing.assert_allclose(served[key][:4], adapted, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(served[key][4:], meta, rtol=1e-6, atol=1e-6)
    assert np.abs(adapted - learner.policy.mode(None, test[:4]).numpy()).max() > 1e-3
    assert served["train_step"] == learner.iteration
    # The driver's steps: each action the adapted policy's at the observation it saw.
    walk = served["walk_observations"]
    assert len(walk) == 5 and len(np.unique(walk, axis=0)) == 5
    np.testing.assert_allclose(
        served["walk_actions"], learner.adapt_step(learner.policy, buffer).mode(None, walk),
        rtol=1e-5, atol=1e-6)
