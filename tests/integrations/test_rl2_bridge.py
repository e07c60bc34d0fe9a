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
from keras_meta.rl import RL2, BernoulliBandit, Navigation2D, RL2Policy  # noqa: E402

import tensorflow as tf  # noqa: E402

PY = sys.executable


def test_trial_driver_keeps_state_within_trial_and_resets_between_trials():
    keras.utils.set_random_seed(0)
    policy = RL2Policy(observation_dim=1, num_actions=2, units=4)
    rng = np.random.default_rng(0)
    for v in policy.trainable_variables:  # nonzero biases: a zero input must still move the state
        v.assign(rng.normal(0, 0.5, v.shape).astype(np.float32))
    env = kmtfa.tf_env(BernoulliBandit(2))
    tf_policy = kmtfa.RL2KerasPolicy(policy, env.time_step_spec(), env.action_spec(), seed=3)
    frames = []
    tasks = [{"probs": np.array([0.9, 0.1])}, {"probs": np.array([0.2, 0.8])}]
    log = kmtfa.TrialDriver(env, tf_policy, episodes_per_trial=3, num_trials=2, observers=[frames.append],
                            tasks=tasks).run()
    # Bandit episodes are one pull: FIRST (act) -> LAST (policy called, action ignored) -> FIRST ...;
    # a trial ends at its last LAST step, so it makes 3 + 2 policy calls.
    assert len(frames) == len(log["trial"]) == 2 * 5
    hidden = log["state"][:, :4]
    starts = np.flatnonzero(np.diff(np.r_[-1, log["trial"]]) != 0)
    assert starts.tolist() == [0, 5]
    for s in starts:  # reset between trials
        np.testing.assert_array_equal(log["state"][s], 0.0)
    firsts = np.flatnonzero(log["step_type"] == 0)
    within = [i for i in firsts if i not in starts]
    assert within and all(np.abs(hidden[i]).sum() > 0 for i in within)  # kept across episode ends

    # The same trials unrolled by hand with resets exactly at the trial boundaries.
    for trial in range(2):
        rows = np.flatnonzero((log["trial"] == trial) & (log["step_type"] == 0))
        pulls = log["action"][rows].astype(int)
        rewards = log["reward"][rows[:-1] + 1]  # the LAST step after a pull carries its reward
        h = policy.get_initial_state(1)
        prev = np.zeros(4, np.float32)
        for i, row in enumerate(rows):
            np.testing.assert_allclose(hidden[row], h.numpy()[0], rtol=1e-5, atol=1e-6)
            # The flattened state dict reads hidden, prev_action, prev_done, prev_reward.
            np.testing.assert_allclose(log["state"][row, 4:], prev[[0, 1, 3, 2]], atol=1e-7)
            x = np.concatenate([[0.0], prev])[None].astype(np.float32)
            _, _, h = policy.step(tf.constant(x), h)
            if i + 1 < len(rows):
                prev = np.concatenate([np.eye(2)[pulls[i]], [rewards[i], 1.0]]).astype(np.float32)

    # TF-Agents' automatic reset would zero the state at every FIRST step; the RL² policy opts out.
    assert tf_policy._automatic_state_reset is False


def test_trial_driver_rejects_bad_trials():
    env = kmtfa.tf_env(BernoulliBandit(2))
    tf_policy = kmtfa.RL2KerasPolicy(RL2Policy(1, num_actions=2, units=2), env.time_step_spec(), env.action_spec())
    with pytest.raises(ValueError, match=r"Expected a trial of at least one episode.*Received: episodes_per_trial=0"):
        kmtfa.TrialDriver(env, tf_policy, episodes_per_trial=0)
    with pytest.raises(TypeError, match="Expected `policy` to be a keras_meta.rl.RL2Policy. Received: policy of type"):
        kmtfa.RL2KerasPolicy(object(), env.time_step_spec(), env.action_spec())


def test_exported_rl2_policy_reproduces_actions_with_state_in_plain_tensorflow(tmp_path):
    keras.utils.set_random_seed(1)
    learner = RL2(None, Navigation2D(horizon=4), episodes_per_trial=2, units=6)
    time_step_spec, action_spec = kmtfa.specs_for(Navigation2D())
    path = kmtfa.export_policy(learner, str(tmp_path / "rl2"), time_step_spec, action_spec)
    # A hand-made trial: two episodes, the second starting after a LAST step.
    step_types = [0, 1, 1, 2, 0, 1, 1]
    rng = np.random.default_rng(0)
    obs = rng.uniform(-0.5, 0.5, (len(step_types), 2)).astype(np.float32)
    rewards = rng.uniform(-1, 0, len(step_types)).astype(np.float32)
    rewards[0] = rewards[4] = 0.0
    in_memory = kmtfa.RL2KerasPolicy(learner.policy, time_step_spec, action_spec, deterministic=True)
    state = in_memory.get_initial_state(1)
    expected, expected_hidden = [], []
    from tf_agents.trajectories import time_step as ts

    for st, o, r in zip(step_types, obs, rewards):
        step = ts.TimeStep(tf.constant([st], tf.int32), tf.constant([r]), tf.constant([1.0]), tf.constant(o[None]))
        out = in_memory.action(step, state)
        state = out.state
        expected.append(out.action.numpy()[0].tolist())
        expected_hidden.append(state["hidden"].numpy()[0].tolist())
    assert len({tuple(np.round(a, 5)) for a in expected}) > 3  # actions depend on the carried state
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({path!r})
        action = loaded.signatures["action"]
        state = loaded.signatures["get_initial_state"](batch_size=tf.constant(1))
        actions, hidden = [], []
        for st, o, r in zip({step_types!r}, {obs.tolist()!r}, {rewards.tolist()!r}):
            inputs = {{"0/step_type": tf.constant([st], tf.int32), "0/reward": tf.constant([r], tf.float32),
                      "0/discount": tf.ones([1]), "0/observation": tf.constant([o], tf.float32)}}
            inputs.update({{"1/" + k: v for k, v in state.items()}})
            out = action(**inputs)
            state = {{k[len("state/"):]: v for k, v in out.items() if k.startswith("state/")}}
            actions.append(out["action"].numpy()[0].tolist())
            hidden.append(state["hidden"].numpy()[0].tolist())
        print(json.dumps({{"actions": actions, "hidden": hidden, "keras_meta": "keras_meta" in sys.modules,
                          "tf_agents": "tf_agents" in sys.modules}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    run = subprocess.run([PY, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["keras_meta"] is False and result["tf_agents"] is False
    np.testing.assert_allclose(result["actions"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["hidden"], expected_hidden, rtol=1e-5, atol=1e-6)
