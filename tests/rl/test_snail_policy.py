"""SNAILPolicy: SNAIL's blocks as an RL² policy (Mishra et al., 2018, meta-RL).

Each step's output equals SNAIL's blocks run on the trial's inputs alone (acting from the
caches, and past `max_steps` from the window, is exact; only those later steps run the
blocks); `unroll`'s one pass over each trial equals the step-by-step scan
(outputs, states, gradients; eager and compiled), falling back to the scan for a given state
or a trial longer than `max_steps`; RL2 collects with it and its PPO unroll reproduces the
collected states; `.keras` round trip.
"""

import importlib.util

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_meta.algorithms.snail import AttentionBlock, DenseBlock
from keras_meta.rl import RL2, BernoulliBandit, RL2Policy, SNAILPolicy
from keras_meta.rl.rl2_inputs import trial_inputs


def policy(seed=0):
    keras.utils.set_random_seed(seed)
    return SNAILPolicy(observation_dim=2, num_actions=3, max_steps=5, hidden_units=(4,),
                       blocks=[("tc", 3), ("attention", 3, 2)])


def blocks_on(policy, inputs):
    """Logits and value at the last position of the blocks run on `inputs` `[1, T, input_dim]`."""
    sequence = inputs
    for layer in policy.encoder:
        sequence = layer(sequence)
    for layer in policy.block_layers:
        sequence = layer(sequence)
    last = sequence[:, -1]
    return policy.policy_head(last).numpy(), policy.value_head(last)[..., 0].numpy()


def test_each_step_equals_the_blocks_on_the_trial_so_far():
    p = policy()
    assert any(isinstance(layer, AttentionBlock) for layer in p.block_layers)
    inputs = np.random.default_rng(0).normal(size=(1, 8, p.input_dim)).astype(np.float32)
    state = p.get_initial_state(1)
    # The window and count, the rings of the dense blocks of dilation 2 and 4 (that of
    # dilation 8 only reads before the trial start), the attention's keys and values.
    assert state.shape == (1, 5 * 4 + 1 + (2 + 4) * 2 * 3 + 5 * (3 + 2))
    for t in range(8):
        dist, value, state = p.step(tf.constant(inputs[:, t]), state)
        # Past max_steps=5 the policy reads the last 5 steps.
        logits, expected_value = blocks_on(p, tf.constant(inputs[:, max(0, t - 4):t + 1]))
        np.testing.assert_allclose(dist, logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(value, expected_value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("actions", [{"num_actions": 3}, {"action_dim": 2}], ids=["discrete", "continuous"])
def test_cached_steps_equal_the_blocks_on_the_window_with_resets(actions, monkeypatch):
    """Acting from the caches equals the blocks run over each step's window (the trial's
    last `max_steps` inputs: trials shorter than, equal to and longer than `max_steps=5`,
    resets at different steps in each row), and `unroll` gives the stepped states."""
    keras.utils.set_random_seed(3)
    p = SNAILPolicy(observation_dim=2, max_steps=5, blocks=[("tc", 3), ("attention", 3, 2), ("tc", 2)],
                    **actions)
    resets = np.zeros((3, 12), bool)
    resets[0, [0, 3, 8]] = resets[1, 0] = resets[2, [0, 7]] = True   # lengths 3, 5, 4 | 12 | 7, 5
    inputs = np.random.default_rng(4).normal(size=resets.shape + (p.input_dim,)).astype(np.float32)
    runs = []
    for block in (DenseBlock, AttentionBlock):
        monkeypatch.setattr(block, "call", lambda self, *a, call=block.call: runs.append(1) or call(self, *a))
    state, start = p.get_initial_state(3), np.zeros(3, int)
    stepped = []
    for t in range(12):
        start = np.where(resets[:, t], t, start)
        state = tf.where(resets[:, t, None], tf.zeros_like(state), state)
        runs.clear()
        dist, value, state = p.step(tf.constant(inputs[:, t]), state)
        stepped.append((dist, value, state))
        # Only a step past `max_steps` runs the blocks over its window.
        assert bool(runs) == any(t - start >= 5), t
        for row in range(3):
            window = inputs[row:row + 1, max(start[row], t - 4):t + 1]
            sequence = p._encode(window)
            for layer in p.block_layers:
                sequence = layer(sequence)
            want = p._heads(sequence[:, -1])
            np.testing.assert_allclose(dist[row], want[0][0], rtol=1e-5, atol=1e-6, err_msg=f"{row}, {t}")
            np.testing.assert_allclose(value[row], want[1][0], rtol=1e-5, atol=1e-6, err_msg=f"{row}, {t}")
    for got, want in zip(p.unroll(inputs, resets), zip(*stepped), strict=True):
        np.testing.assert_allclose(got, tf.stack(want, 1), rtol=1e-5, atol=1e-6)


def test_rl2_collects_and_trains_with_it_and_unroll_reproduces_collection():
    env = BernoulliBandit(2)
    learner = RL2(SNAILPolicy.for_env(env, max_steps=4, blocks=[("tc", 4), ("attention", 4, 4)]),
                  env, episodes_per_trial=4, seed=1, ppo_epochs=1)
    buffer, states = learner.collect(env.sample_tasks(2, seed=0), trials_per_task=2, seed=7,
                                     record_states=True)
    inputs, resets = trial_inputs(learner.policy, buffer.data())
    _, _, unrolled = learner.policy.unroll(inputs, resets)
    np.testing.assert_allclose(unrolled.numpy().reshape(states.shape), states, rtol=1e-5, atol=1e-6)
    before = [v.numpy() for v in learner.policy.trainable_variables]
    history = learner.fit(epochs=1, steps_per_epoch=2, meta_batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, b.numpy())
               for a, b in zip(before, learner.policy.trainable_variables))
    assert set(learner.meta_evaluate(env.sample_tasks(3, seed=5), seed=1)) == {0, 1, 2, 3}


def test_keras_round_trip(tmp_path):
    p = policy()
    for variable in p.trainable_variables:
        variable.assign(variable + 0.1)
    p.save(tmp_path / "policy.keras")
    loaded = keras.saving.load_model(tmp_path / "policy.keras")
    assert type(loaded) is SNAILPolicy and loaded.get_config() == p.get_config()
    inputs = np.random.default_rng(1).normal(size=(2, 6, p.input_dim)).astype(np.float32)
    resets = np.zeros((2, 6), bool)
    resets[:, 0] = resets[1, 3] = True
    for got, want in zip(loaded.unroll(inputs, resets), p.unroll(inputs, resets), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def layouts(p):
    """`(name, resets [B, T], state)` layouts of `unroll`, from one trial per row to fallbacks."""
    one = np.zeros((3, 5), bool)
    one[:, 0] = True
    several = np.zeros((3, 9), bool)
    several[:, 0] = several[0, 4] = several[1, 1] = several[1, 2] = several[2, 5] = True
    unmarked = several.copy()
    unmarked[:, 0] = False
    longer = np.zeros((2, 8), bool)
    longer[:, 0] = longer[1, 6] = True
    state = p.step(tf.ones([3, p.input_dim]), p.get_initial_state(3))[2]
    return [("one trial per row", one, None), ("several trials per row", several, None),
            ("rows start a trial without a reset", unmarked, None),
            ("a trial longer than max_steps", longer, None),
            ("a non-empty initial state", several, state)]


@pytest.mark.parametrize("index", range(5))
def test_unroll_equals_the_step_by_step_scan_with_gradients(index):
    p = policy()
    name, resets, state = layouts(p)[index]
    inputs = tf.constant(np.random.default_rng(index).normal(size=resets.shape + (p.input_dim,)),
                         tf.float32)
    weights = np.random.default_rng(9).normal(size=resets.shape + (3,)).astype(np.float32)

    def run(unroll):
        with tf.GradientTape() as tape:
            dist, values, states = unroll(p, inputs, resets, state)
            loss = tf.reduce_sum(dist * weights) + tf.reduce_sum(values * weights[..., 0])
        return dist, values, states, tape.gradient(loss, p.trainable_variables)

    got, want = run(SNAILPolicy.unroll), run(RL2Policy.unroll)
    compiled = run(tf.function(SNAILPolicy.unroll))
    for result in (got, compiled):
        for a, b in zip(result[:3], want[:3], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
        for a, b in zip(result[3], want[3], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)


def test_one_pass_unroll_runs_the_blocks_once(monkeypatch):
    p = policy()
    calls = []
    monkeypatch.setattr(SNAILPolicy, "core_step", lambda *a: calls.append(a))
    resets = np.zeros((2, 8), bool)
    resets[:, 0] = resets[:, 4] = True
    p.unroll(tf.zeros([2, 8, p.input_dim]), resets)
    assert calls == []


@pytest.mark.skipif(importlib.util.find_spec("tf_agents") is None, reason="needs the tf-agents extra")
def test_tf_agents_trial_driver_carries_the_cached_state():
    from keras_meta.integrations import tf_agents as kmtfa

    keras.utils.set_random_seed(2)
    p = SNAILPolicy(observation_dim=1, num_actions=2, max_steps=3, blocks=[("tc", 2), ("attention", 2, 2)])
    env = kmtfa.tf_env(BernoulliBandit(2))
    tf_policy = kmtfa.RL2KerasPolicy(p, env.time_step_spec(), env.action_spec(), seed=3)
    tasks = [{"probs": np.array([0.9, 0.1])}, {"probs": np.array([0.2, 0.8])}]
    # Trials of 5 pulls: the last two read past max_steps=3 (the window path, the caches kept).
    log = kmtfa.TrialDriver(env, tf_policy, episodes_per_trial=5, num_trials=2, tasks=tasks).run()
    hidden = log["state"][:, :p.units]
    for trial in range(2):
        # Each pull is a FIRST step; the LAST step after it carries its reward.
        rows = np.flatnonzero((log["trial"] == trial) & (log["step_type"] == 0))
        actions = np.eye(2)[log["action"][rows[:-1]].astype(int)]
        prev = np.concatenate([actions, log["reward"][rows[:-1] + 1, None], np.ones([4, 1])], 1)
        inputs = np.concatenate([np.zeros([5, 1]), np.concatenate([np.zeros([1, 4]), prev])], 1)
        states = p.unroll(inputs[None].astype(np.float32), np.eye(1, 5, dtype=bool))[2][0]
        np.testing.assert_array_equal(hidden[rows[0]], 0.0)
        # The state a LAST step reads is the one its pull left (the trial ends at its last pull's).
        np.testing.assert_allclose(hidden[rows[:-1] + 1], states[:-1], rtol=1e-5, atol=1e-6)
