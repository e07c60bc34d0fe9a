import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

if importlib.util.find_spec("tf_agents") is None:  # importing it here would bypass the bridge's env setup
    pytest.skip("needs the tf-agents extra", allow_module_level=True)

from keras_meta.integrations import tf_agents as kmtfa  # noqa: E402
from keras_meta.rl import MAMLRL, GaussianPolicy, Navigation2D  # noqa: E402

import tensorflow as tf  # noqa: E402

PY = sys.executable


def _learner():
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)])
    return MAMLRL(GaussianPolicy(body, 2), Navigation2D(horizon=8), seed=0)


def test_py_environment_termination_vs_truncation():
    env = Navigation2D(horizon=3)
    env.set_task({"goal": np.array([0.1, 0.0], np.float32)})
    py_env = kmtfa.GymnasiumPyEnvironment(env)
    first = py_env.reset()
    assert first.is_first()
    step = py_env.step(np.array([0.1, 0.0], np.float32))
    assert step.is_last() and float(step.discount) == 0.0  # reached the goal: termination
    py_env.reset()
    env.set_task({"goal": np.array([0.4, 0.4], np.float32)})
    for _ in range(3):
        step = py_env.step(np.zeros(2, np.float32))
    assert step.is_last() and float(step.discount) == 1.0  # horizon: truncation
    with pytest.raises(TypeError, match="task interface"):
        import gymnasium

        kmtfa.GymnasiumPyEnvironment(gymnasium.make("CartPole-v1"))


def test_driver_collects_with_bridged_policy_and_adapts():
    learner = _learner()
    env = kmtfa.tf_env(Navigation2D(horizon=8))
    policy = kmtfa.KerasPolicy(learner.policy, env.time_step_spec(), env.action_spec(), seed=1)
    replay = kmtfa.collect_episodes(env, policy, num_episodes=3)
    traj = replay.gather_all()
    assert int(tf.reduce_sum(tf.cast(traj.is_last(), tf.int32))) >= 3
    np.testing.assert_array_equal(traj.observation[0, 0], [0.0, 0.0])
    steps = kmtfa.collect_steps(env, policy, num_steps=5)
    assert steps.num_frames() >= 5
    task = Navigation2D().sample_tasks(1, seed=4)[0]
    meta = [w.numpy() for w in learner.policy.weights_list()]
    adapted = kmtfa.driver_adapt(learner, env, task, episodes=3, steps=1)
    assert any(not np.allclose(a, m) for a, m in zip(adapted.weights_list(), meta))
    for w, m in zip(learner.policy.weights_list(), meta):
        np.testing.assert_array_equal(w, m)


def test_policy_actions_are_a_function_of_the_seed_and_the_call_count():
    policy = _learner().policy
    env = kmtfa.tf_env(Navigation2D(horizon=8))
    time_step = env.reset()

    def actions(**kwargs):
        bridged = kmtfa.KerasPolicy(policy, env.time_step_spec(), env.action_spec(), **kwargs)
        return [bridged.action(time_step).action.numpy() for _ in range(3)]

    first, again, other = actions(seed=1), actions(seed=1), actions(seed=2)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[0], first[1])  # the counter advances between calls
    assert not np.allclose(first[0], other[0])
    obs = tf.cast(time_step.observation, tf.float32)
    for greedy in actions(seed=1, deterministic=True):
        np.testing.assert_allclose(greedy, policy.mode(None, obs), rtol=1e-6)
    with pytest.raises(NotImplementedError, match="KerasPolicy samples directly"):
        kmtfa.KerasPolicy(policy, env.time_step_spec(), env.action_spec()).distribution(time_step)


def test_driver_adapt_refuses_rescaled_actions():
    learner = MAMLRL(_learner().policy, Navigation2D(horizon=8), rescale_actions=True)
    with pytest.raises(ValueError, match="Received: learner with rescale_actions=True"):
        kmtfa.driver_adapt(learner, kmtfa.tf_env(Navigation2D(horizon=8)), Navigation2D().sample_tasks(1, seed=4)[0])


class FaultyNavigation(Navigation2D):
    """Raises on the third step after construction, as a crashing simulator would."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps_taken = 0

    def step(self, action):
        if self.steps_taken == 2:
            raise ValueError("sensor fault")
        self.steps_taken += 1
        return super().step(action)


def test_failing_env_step_in_a_driver_names_task_episode_and_step():
    env = FaultyNavigation(horizon=8)
    env.set_task({"goal": np.array([0.3, 0.3], np.float32)})
    tf_env = kmtfa.tf_env(env)
    policy = kmtfa.KerasPolicy(_learner().policy, tf_env.time_step_spec(), tf_env.action_spec(), seed=1)
    expected = ("Expected the task environment to complete step 2 of episode 0 (sub-environment 0, "
                "task={'goal': array([0.3, 0.3], dtype=float32)}). Received: ValueError: sensor fault")
    with pytest.raises(RuntimeError) as info:
        kmtfa.collect_episodes(tf_env, policy, num_episodes=1)
    # TF's py_function re-creates the exception from its type and text, dropping the chained
    # cause, so the original error lives on in the message.
    assert str(info.value) == expected


def test_exported_adapted_policy_loads_without_keras_meta(tmp_path):
    learner = _learner()
    task = Navigation2D().sample_tasks(1, seed=5)[0]
    adapted = learner.adapt(task=task, episodes=3, steps=1)
    time_step_spec, action_spec = kmtfa.specs_for(Navigation2D())
    path = kmtfa.export_policy(adapted, str(tmp_path / "policy"), time_step_spec, action_spec)
    obs = np.array([[0.1, -0.2], [0.3, 0.05]], np.float32)
    expected = adapted.mode(None, obs).numpy()
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({path!r})
        action = loaded.signatures["action"]
        obs = np.array({obs.tolist()!r}, np.float32)
        out = action(**{{"0/step_type": tf.zeros([2], tf.int32), "0/reward": tf.zeros([2]),
                        "0/discount": tf.ones([2]), "0/observation": tf.constant(obs)}})
        print(json.dumps({{"action": out["action"].numpy().tolist(),
                          "keras_meta": "keras_meta" in sys.modules}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    run = subprocess.run([PY, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["keras_meta"] is False
    np.testing.assert_allclose(result["action"], expected, rtol=1e-5, atol=1e-6)


def test_explicit_legacy_keras_zero_is_refused():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="0")
    run = subprocess.run([PY, "-c", "import keras_meta.integrations.tf_agents"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode != 0
    assert "Expected TF_USE_LEGACY_KERAS to be unset or '1'" in run.stderr
    assert "Received: TF_USE_LEGACY_KERAS='0'" in run.stderr


def test_core_import_does_not_pull_tf_agents():
    script = ("import sys, keras_meta, keras_meta.rl; "
              "print(sorted(m for m in ('tf_agents', 'tensorflow_probability', 'tf_keras') if m in sys.modules))")
    # The bridge set TF_USE_LEGACY_KERAS=1 in this process; a user's fresh process has it unset.
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    run = subprocess.run([PY, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
