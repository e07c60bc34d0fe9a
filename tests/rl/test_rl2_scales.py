import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_meta.rl import RL2, Navigation2D, RL2Policy


def _batches(scale):
    env = Navigation2D(horizon=5)
    learner = RL2(None, env, episodes_per_trial=2, units=4, reward_scale=scale, seed=0)
    buffer = learner.collect(env.sample_tasks(2, seed=0), trials_per_task=1, seed=3)
    return learner, buffer


def test_reward_scale_scales_value_targets_only():
    learner, buffer = _batches(1.0)
    base = learner.process(buffer)
    learner.reward_scale = 0.1
    scaled = learner.process(buffer)
    # The value head's predictions are read as scaled returns: targets = scale * GAE returns(V / scale).
    values = learner._unroll_fn(base.inputs, base.resets)[1].numpy()
    shape = buffer.data()["masks"].shape
    _, ret = buffer.gae((values / 0.1).reshape(shape).astype(np.float32), np.zeros(shape, np.float32),
                        learner.gamma, learner.gae_lambda, trial_level=True)
    np.testing.assert_allclose(scaled.returns.numpy(), 0.1 * ret.reshape(values.shape), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scaled.inputs.numpy(), base.inputs.numpy())
    np.testing.assert_allclose(scaled.old_log_probs.numpy(), base.old_log_probs.numpy())


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_non_positive_reward_scale_is_refused(scale):
    with pytest.raises(ValueError, match="reward_scale"):
        RL2(None, Navigation2D(horizon=5), reward_scale=scale)


def test_input_scale_multiplies_the_input_parts_and_round_trips():
    keras.utils.set_random_seed(0)
    scaled = RL2Policy(observation_dim=2, action_dim=2, units=4, input_scale=(2, 10, 5, 1))
    plain = RL2Policy(observation_dim=2, action_dim=2, units=4)
    plain.set_weights(scaled.get_weights())
    x = tf.random.normal([3, scaled.input_dim])
    factors = tf.constant([2, 2, 10, 10, 5, 1], tf.float32)
    state = scaled.get_initial_state(3)
    for a, b in zip(scaled.step(x, state), plain.step(x * factors, state)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    clone = RL2Policy.from_config(scaled.get_config())
    assert clone.input_scale == (2.0, 10.0, 5.0, 1.0)
    with pytest.raises(ValueError, match="input_scale"):
        RL2Policy(observation_dim=2, action_dim=2, units=4, input_scale=(1, 2))
