import keras
import numpy as np
import tensorflow as tf

from keras_meta.rl import CategoricalPolicy, GaussianPolicy


def _gaussian(std_head=False):
    out = 4 if std_head else 2
    body = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(out)])
    return GaussianPolicy(body, 2, log_std_init=-0.5, std_head=std_head).build_for(3)


def test_gaussian_log_prob_entropy_kl_against_numpy():
    policy = _gaussian()
    assert any("log_std" in v.path for v in policy.trainable_variables)
    obs = tf.random.stateless_normal([4, 3], seed=[1, 2])
    actions = tf.random.stateless_normal([4, 2], seed=[3, 4])
    mean, log_std = (t.numpy() for t in policy.distribution(None, obs))
    np.testing.assert_allclose(log_std, -0.5)
    expected = -0.5 * (((actions.numpy() - mean) / np.exp(log_std)) ** 2 + 2 * log_std + np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(policy.log_prob(None, obs, actions), expected, rtol=1e-5)
    np.testing.assert_allclose(policy.entropy(None, obs), (log_std + 0.5 * np.log(2 * np.pi * np.e)).sum(-1), rtol=1e-5)
    other = [w + 0.1 for w in policy.weights_list()]
    kl = policy.kl(None, other, obs).numpy()
    # Monte-Carlo estimate of KL(p || q) = E_p[log p - log q].
    samples = policy.sample(None, tf.repeat(obs, 20000, axis=0), seed=[5, 6])
    mc = (policy.log_prob(None, tf.repeat(obs, 20000, axis=0), samples)
          - policy.log_prob(other, tf.repeat(obs, 20000, axis=0), samples)).numpy().reshape(4, 20000).mean(-1)
    np.testing.assert_allclose(kl, mc, atol=0.03)
    np.testing.assert_allclose(policy.kl(None, None, obs), 0.0, atol=1e-6)


def test_sampling_is_a_function_of_the_seed():
    policy = _gaussian(std_head=True)
    obs = tf.zeros([3, 3])
    a = policy.sample(None, obs, seed=[7, 8])
    np.testing.assert_array_equal(a, policy.sample(None, obs, seed=[7, 8]))
    assert not np.array_equal(a, policy.sample(None, obs, seed=[7, 9]))
    np.testing.assert_array_equal(policy.mode(None, obs), policy(obs)[:, :2])


def test_adapted_policy_is_a_new_model_and_leaves_meta_weights():
    policy = _gaussian()
    before = [w.numpy() for w in policy.weights_list()]
    new = [w + 1.0 for w in policy.weights_list()]
    adapted = policy.adapted(new)
    assert isinstance(adapted, keras.Model) and adapted is not policy
    for w, b in zip(policy.weights_list(), before):
        np.testing.assert_array_equal(w, b)
    obs = tf.ones([2, 3])
    np.testing.assert_allclose(adapted(obs), policy.dist_params(new, obs), rtol=1e-6)


def test_categorical_policy():
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    policy = CategoricalPolicy(body, 3).build_for(2)
    obs = tf.random.stateless_normal([5, 2], seed=[0, 1])
    logits = policy.distribution(None, obs).numpy()
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    actions = np.array([0, 1, 2, 1, 0])
    np.testing.assert_allclose(policy.log_prob(None, obs, actions), logp[np.arange(5), actions], rtol=1e-5)
    np.testing.assert_allclose(policy.entropy(None, obs), -(np.exp(logp) * logp).sum(-1), rtol=1e-5)
    samples = policy.sample(None, tf.repeat(obs[:1], 20000, axis=0), seed=[2, 3]).numpy()
    np.testing.assert_allclose(np.bincount(samples, minlength=3) / 20000, np.exp(logp[0]), atol=0.02)
    np.testing.assert_array_equal(policy.mode(None, obs), logits.argmax(-1))


def test_keras_file_round_trip_keeps_distributions_and_samples(tmp_path):
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    policies = [_gaussian(), _gaussian(std_head=True), CategoricalPolicy(body, 3).build_for(2)]
    for i, policy in enumerate(policies):
        # Move off the initial weights so a reload from config alone would differ.
        for variable in policy.trainable_variables:
            variable.assign(variable + 0.3)
        path = tmp_path / f"policy_{i}.keras"
        policy.save(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded) is type(policy)
        obs = tf.random.stateless_normal([4, policy.body.inputs[0].shape[-1]], seed=[i, 1])
        for a, b in zip(tf.nest.flatten(loaded.distribution(None, obs)), tf.nest.flatten(policy.distribution(None, obs))):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(loaded.sample(None, obs, seed=[2, 3]), policy.sample(None, obs, seed=[2, 3]))
