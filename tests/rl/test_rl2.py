import warnings

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

from keras_meta.rl import RL2, BernoulliBandit, Navigation2D, RL2Policy, RolloutBuffer, TaskEnv, TrainingState
from keras_meta.rl.rl2 import episode_returns_in_trial
from keras_meta.rl.rl2_inputs import trial_inputs


def _manual_states(policy, obs, actions, rewards, dones, trial_starts):
    """Steps the GRU by hand: x_t = [s_t, onehot(a_{t-1}), r_{t-1}, d_{t-1}], zeroed at trial starts."""
    h = policy.get_initial_state(1)
    prev = np.zeros(policy.action_features + 2, np.float32)
    states = []
    for t in range(len(obs)):
        if t in trial_starts:
            h = policy.get_initial_state(1)
            prev = np.zeros_like(prev)
        x = np.concatenate([np.reshape(obs[t], -1), prev])[None].astype(np.float32)
        _, _, h = policy.step(tf.constant(x), h)
        states.append(h.numpy()[0])
        onehot = np.eye(policy.num_actions, dtype=np.float32)[actions[t]]
        prev = np.concatenate([onehot, [rewards[t], dones[t]]]).astype(np.float32)
    return np.stack(states)


def test_state_carried_within_trial_and_reset_between_trials():
    keras.utils.set_random_seed(0)
    policy = RL2Policy(observation_dim=1, num_actions=2, units=6)
    # One buffer row holding two trials of two one-pull episodes each (episodes_per_trial=2).
    buffer = RolloutBuffer(1, 1, horizon=4, observation_shape=(1,), discrete=True, episodes_per_trial=2,
                           autoreset_mode="SameStep")
    actions, rewards = [1, 0, 1, 1], [1.0, 0.0, 1.0, 0.0]
    for a, r in zip(actions, rewards):
        buffer.add(np.zeros((1, 1, 1), np.float32), np.array([[a]]), np.array([[r]], np.float32),
                   np.array([[True]]), np.array([[False]]), np.zeros((1, 1, 1), np.float32))
    d = buffer.data()
    np.testing.assert_array_equal(d["trial_ids"][0, 0], [0, 0, 1, 1])
    inputs, resets = trial_inputs(policy, d)
    np.testing.assert_array_equal(resets[0], [True, False, True, False])
    _, _, states = policy.unroll(inputs, resets)
    expected = _manual_states(policy, np.zeros((4, 1)), actions, rewards, [1.0] * 4, trial_starts={0, 2})
    np.testing.assert_allclose(states.numpy()[0], expected, rtol=1e-5, atol=1e-6)
    # Same step input, different memory: inside a trial the state differs from a fresh one,
    # across the trial boundary it is exactly the fresh one.
    fresh = policy.step(tf.constant(inputs[0, 2:3]), policy.get_initial_state(1))[2].numpy()[0]
    np.testing.assert_allclose(states.numpy()[0, 2], fresh, rtol=1e-6, atol=1e-7)
    carried = _manual_states(policy, np.zeros((4, 1)), actions, rewards, [1.0] * 4, trial_starts={0})
    assert not np.allclose(carried[2], expected[2], atol=1e-4)


def test_collect_states_match_manual_unroll():
    learner = RL2(None, BernoulliBandit(2), episodes_per_trial=3, units=5, seed=1)
    tasks = BernoulliBandit(2).sample_tasks(2, seed=0)
    buffer, states = learner.collect(tasks, trials_per_task=2, seed=7, record_states=True)
    d = buffer.data()
    assert d["lengths"].tolist() == [[3, 3], [3, 3]]
    for t in range(2):
        for e in range(2):
            acts = d["actions"][t, e].astype(int)
            rews = d["rewards"][t, e]
            manual = _manual_states(learner.policy, d["observations"][t, e], acts, rews, [1.0] * 3, {0})
            np.testing.assert_allclose(states[t, e], manual, rtol=1e-5, atol=1e-6)
    inputs, resets = trial_inputs(learner.policy, d)
    _, _, unrolled = learner.policy.unroll(inputs, resets)
    np.testing.assert_allclose(unrolled.numpy().reshape(states.shape), states, rtol=1e-5, atol=1e-6)


def test_bandit_returns_rise_across_a_trial_after_training():
    env = BernoulliBandit(2, dependent=True)
    learner = RL2(None, env, episodes_per_trial=8, units=16, seed=0, ppo_epochs=4,
                  optimizer=keras.optimizers.Adam(0.01), entropy_coef=0.0)
    held_out = env.sample_tasks(1000, seed=123)
    before = learner.meta_evaluate(held_out, seed=1)
    history = learner.fit(epochs=3, steps_per_epoch=20, meta_batch_size=64, verbose=0)
    assert isinstance(history, keras.callbacks.History) and len(history.history["return"]) == 3
    after = learner.meta_evaluate(held_out, seed=1)
    late = np.mean([after[k] for k in (5, 6, 7)])
    # A memoryless policy earns 0.5 per pull on (q, 1-q) bandits; exploiting what the trial
    # revealed approaches E[max(q, 1-q)] = 0.75 on later pulls.
    assert abs(after[0] - 0.5) < 0.05
    assert late - after[0] > 0.1, after
    assert late - np.mean([before[k] for k in (5, 6, 7)]) > 0.1, (before, after)


def test_continuous_navigation_trains_one_iteration():
    learner = RL2(None, Navigation2D(horizon=5), episodes_per_trial=2, units=8, seed=0, ppo_epochs=1)
    history = learner.fit(epochs=1, steps_per_epoch=1, meta_batch_size=3, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not learner.policy.discrete and learner.policy.action_dim == 2
    returns = learner.meta_evaluate(Navigation2D().sample_tasks(2, seed=3))
    assert set(returns) == {0, 1} and all(v < 0 for v in returns.values())


def test_rescale_actions_needs_a_continuous_action_space():
    with pytest.raises(ValueError, match="finite bounds for `rescale_actions=True`. Received: action_space=Discrete"):
        RL2(None, BernoulliBandit(2), units=4, rescale_actions=True)


def test_trial_shorter_than_one_episode_is_refused():
    with pytest.raises(ValueError, match=r"Expected a trial of at least one episode.*Received: episodes_per_trial=0"):
        RL2(None, BernoulliBandit(2), episodes_per_trial=0)
    with pytest.raises(ValueError, match=r"Expected a trial of at least one episode.*Received: max_trial_steps=3"):
        RL2(None, Navigation2D(horizon=5), episodes_per_trial=2, max_trial_steps=3)


class _GrowingEnv(gymnasium.Env, TaskEnv):
    """A task env whose observation size depends on the task (not allowed for RL²)."""

    horizon = 1

    def __init__(self, size=1):
        self._config = dict(size=size)
        self.observation_space = spaces.Box(-1, 1, (size,), np.float32)
        self.action_space = spaces.Discrete(2)

    def sample_tasks(self, n, seed):
        return [{"size": 1 + i} for i in range(n)]

    def set_task(self, task):
        self.observation_space = spaces.Box(-1, 1, (task["size"],), np.float32)

    def get_task(self):
        return {"size": self.observation_space.shape[0]}

    def reset(self, *, seed=None, options=None):
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, np.float32), 0.0, True, False, {}


def test_spaces_changing_between_tasks_are_refused():
    learner = RL2(None, _GrowingEnv(), episodes_per_trial=2, units=4)
    with pytest.raises(ValueError, match=r"Expected the observation and action spaces to stay the same across "
                                         r"tasks. Received: observation_space=Box"):
        learner.collect(_GrowingEnv().sample_tasks(2, seed=0))


def test_episode_returns_in_trial_counts_episodes():
    buffer = RolloutBuffer(1, 2, horizon=4, observation_shape=(1,), discrete=True, episodes_per_trial=2,
                           autoreset_mode="SameStep")
    for r in ([1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]):
        buffer.add(np.zeros((1, 2, 1)), np.zeros((1, 2), np.int64), np.array([r], np.float32),
                   np.ones((1, 2), bool), np.zeros((1, 2), bool), np.zeros((1, 2, 1)))
    # Episode index 0: rewards at steps 0 and 2 of both rows -> (1 + 0 + 1 + 1) / 4.
    np.testing.assert_allclose(episode_returns_in_trial(buffer), [0.75, 0.25])


def _rollout(policy, inputs, resets, seed):
    """Unrolled outputs, and the states and sampled actions of a step-by-step rollout."""
    dist, values, states = policy.unroll(inputs, resets)
    state, stepped, actions = policy.get_initial_state(inputs.shape[0]), [], []
    for t in range(inputs.shape[1]):
        state = tf.where(resets[:, t, None], policy.get_initial_state(inputs.shape[0]), state)
        step_dist, _, state = policy.step(tf.constant(inputs[:, t]), state)
        stepped.append(state.numpy())
        actions.append(policy.sample(step_dist, tf.constant([seed, t], tf.int64)).numpy())
    return [dist.numpy(), values.numpy(), states.numpy(), np.stack(stepped, 1), np.stack(actions, 1)]


@pytest.mark.parametrize("spaces_kwargs", [dict(num_actions=3), dict(action_dim=2, log_std_init=-0.5)],
                         ids=["discrete", "continuous"])
def test_policy_keras_round_trip_keeps_recurrent_outputs_and_actions(spaces_kwargs, tmp_path):
    keras.utils.set_random_seed(0)
    policy = RL2Policy(observation_dim=2, units=4, hidden_units=(5,), **spaces_kwargs)
    for variable in policy.trainable_variables:  # away from the initializers a rebuild would give
        variable.assign(variable + 0.1)
    path = tmp_path / "policy.keras"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not yet been built")
        policy.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is RL2Policy and loaded.get_config() == policy.get_config()
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(3, 6, policy.input_dim)).astype(np.float32)
    resets = np.zeros((3, 6), bool)
    resets[:, 0] = resets[1, 3] = True  # a second trial starts mid-sequence in row 1
    for got, want in zip(_rollout(loaded, inputs, resets, 5), _rollout(policy, inputs, resets, 5), strict=True):
        np.testing.assert_array_equal(got, want)


def test_model_checkpoint_of_fit_saves_the_whole_training_state(tmp_path):
    learner = RL2(None, BernoulliBandit(2), episodes_per_trial=2, units=4, ppo_epochs=1, seed=2)
    path = tmp_path / "rl2.keras"
    learner.fit(epochs=2, steps_per_epoch=2, meta_batch_size=2, verbose=0,
                callbacks=[keras.callbacks.ModelCheckpoint(str(path))])
    restored = keras.saving.load_model(path)
    assert isinstance(restored, TrainingState) and isinstance(restored.policy, RL2Policy)
    assert int(restored.iteration.numpy()) == learner.iteration == 4
    for got, want in zip(restored.weights + restored.optimizer.variables,
                         learner.training_state.weights + learner.optimizer.variables, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    # A learner built around the restored state continues the task sequence where it was.
    resumed = RL2(restored.policy, BernoulliBandit(2), episodes_per_trial=2, ppo_epochs=1, seed=2,
                  optimizer=restored.optimizer)
    resumed.iteration = int(restored.iteration.numpy())
    for other in (learner, resumed):
        other.fit(epochs=1, steps_per_epoch=1, meta_batch_size=2, verbose=0)
    assert resumed.iteration == learner.iteration == 5
    # (Bit-for-bit equality needs op determinism; tests/reliability checks it under that.)
    for got, want in zip(resumed.training_state.weights + resumed.optimizer.variables,
                         learner.training_state.weights + learner.optimizer.variables, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7)
