"""Meta-gradient RL: TF GAE against the C++ buffer, gamma/lambda meta-gradients against
float64 finite differences, and a short run where both move while the agent learns."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta.rl import RolloutBuffer, generalized_advantages


def _filled_buffer(rng):
    """Two tasks x three rows of random steps with terminations, truncations and rows that
    stop mid-episode (NEXT_STEP reset steps skipped)."""
    buffer = RolloutBuffer(2, 3, 7, (2,), (1,))
    for _ in range(9):
        done = rng.random((2, 3))
        buffer.add(rng.normal(size=(2, 3, 2)), rng.normal(size=(2, 3, 1)).astype(np.float32),
                   rng.normal(size=(2, 3)), done < 0.15, (done >= 0.15) & (done < 0.3), rng.normal(size=(2, 3, 2)))
    return buffer


def test_tf_gae_equals_the_cpp_buffer():
    rng = np.random.default_rng(0)
    buffer = _filled_buffer(rng)
    d = buffer.data()
    assert d["terminated"][d["masks"] > 0].any() and d["truncated"][d["masks"] > 0].any()
    assert (d["masks"] == 0).any()
    values = rng.normal(size=d["masks"].shape).astype(np.float32)
    next_values = rng.normal(size=d["masks"].shape).astype(np.float32)
    for gamma, lam in ((0.9, 0.8), (0.99, 1.0), (0.5, 0.0)):
        want_adv, want_ret = buffer.gae(values, next_values, gamma, lam)
        adv, ret = generalized_advantages(d["rewards"], values, next_values, d["terminated"], d["truncated"],
                                          d["masks"], gamma, lam)
        np.testing.assert_allclose(adv.numpy(), want_adv, atol=2e-5)
        np.testing.assert_allclose(ret.numpy(), want_ret, atol=2e-5)


def test_tf_gae_derivatives_match_finite_differences():
    rng = np.random.default_rng(1)
    d = _filled_buffer(rng).data()
    values, next_values = rng.normal(size=(2,) + d["masks"].shape)
    weights = rng.normal(size=d["masks"].shape)

    def total(gamma, lam):
        return tf.reduce_sum(weights * generalized_advantages(
            d["rewards"].astype(np.float64), values, next_values, d["terminated"], d["truncated"], d["masks"],
            gamma, lam)[1])

    gamma, lam = tf.constant(0.9, tf.float64), tf.constant(0.7, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch([gamma, lam])
        y = total(gamma, lam)
    grads = [g.numpy() for g in tape.gradient(y, [gamma, lam])]
    h = 1e-6
    fd = [(total(0.9 + h, 0.7) - total(0.9 - h, 0.7)).numpy() / (2 * h),
          (total(0.9, 0.7 + h) - total(0.9, 0.7 - h)).numpy() / (2 * h)]
    np.testing.assert_allclose(grads, fd, rtol=1e-6)
    assert all(abs(g) > 1e-3 for g in grads)


def _learner(dtype="float32", **kwargs):
    # Both: another test may have set a global dtype policy, which wins over floatx.
    previous, previous_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        keras.utils.set_random_seed(0)
        body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)])
        critic = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="tanh"),
                                   keras.layers.Dense(1)])
        policy = km.rl.GaussianPolicy(body, 2, log_std_init=-1.0)
        return km.rl.MetaGradientPG(policy, km.rl.Navigation2D(horizon=kwargs.pop("horizon", 5)), critic=critic,
                                    **kwargs)
    finally:
        keras.config.set_floatx(previous)
        keras.config.set_dtype_policy(previous_policy)


def test_gamma_lambda_meta_gradients_match_float64_finite_differences():
    learner = _learner("float64", gamma=0.8, gae_lambda=0.6, reference_gamma=0.95, reference_lambda=1.0,
                       episodes=3, lr=0.5)
    params = learner.weights()
    assert params[0].dtype == tf.float64
    batch, _ = learner.collect(params, seed=1)
    next_batch, _ = learner.collect(learner.update(params, batch, 0.8, 0.6), seed=2)
    _, d_gamma, d_lam, _ = learner.meta_gradient(params, batch, next_batch, tf.constant(0.8, tf.float64),
                                                 tf.constant(0.6, tf.float64))
    # The reference targets at theta'(0.8, 0.6), held fixed as the meta-gradient holds them.
    reference = learner.targets(learner.update(params, batch, 0.8, 0.6), next_batch, 0.95, 1.0)
    objective = lambda g, l: float(learner.meta_objective(params, batch, next_batch, tf.constant(g, tf.float64),
                                                          tf.constant(l, tf.float64), reference))
    h = 1e-5
    fd_gamma = (objective(0.8 + h, 0.6) - objective(0.8 - h, 0.6)) / (2 * h)
    fd_lam = (objective(0.8, 0.6 + h) - objective(0.8, 0.6 - h)) / (2 * h)
    np.testing.assert_allclose([float(d_gamma), float(d_lam)], [fd_gamma, fd_lam], rtol=1e-5, atol=1e-9)
    assert abs(fd_gamma) > 1e-5 and abs(fd_lam) > 1e-6


def test_short_run_moves_gamma_and_lambda_and_learns():
    learner = _learner(gamma=0.9, gae_lambda=0.9, episodes=16, lr=0.1, horizon=10,
                       meta_optimizer=keras.optimizers.Adam(0.05), seed=3)
    before = learner.evaluate_return(episodes=64, seed=7)
    history = learner.fit(epochs=1, steps_per_epoch=12, verbose=0)
    after = learner.evaluate_return(episodes=64, seed=7)
    assert abs(learner.gamma - 0.9) > 1e-3 and abs(learner.gae_lambda - 0.9) > 1e-3
    assert 0 < learner.gamma < 1 and 0 < learner.gae_lambda < 1
    assert np.isfinite(history.history["meta_objective"][0])
    assert after > before + 0.1 * abs(before), (before, after)


def test_only_the_requested_meta_parameters_move():
    learner = _learner(gamma=0.9, gae_lambda=0.9, meta_learn=("gamma",), episodes=4,
                       meta_optimizer=keras.optimizers.Adam(0.05))
    learner.fit(epochs=1, steps_per_epoch=2, verbose=0)
    assert learner.gae_lambda == pytest.approx(0.9, abs=1e-6) and learner.gamma != pytest.approx(0.9, abs=1e-4)
