"""MetaLSTM (Ravi & Larochelle, 2017): the rule against a NumPy twin of the paper's
equations, its meta-gradients against float64 finite differences. The generic behaviour
(execution modes, `.keras`, adapt/evaluate) comes from the shared learner table."""

import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta.inner import meta_lstm, preprocess

from learner_table import mlp
from test_meta_gradients import directional_check, meta_gradient, random_batch


def numpy_preprocess(x, p=10.0):
    x = np.asarray(x, np.float64)
    big = np.abs(x) >= np.exp(-p)
    safe = np.where(big, np.abs(x), 1.0)
    return np.stack([np.where(big, np.log(safe) / p, -1.0),
                     np.where(big, np.sign(x), np.exp(p) * x)], -1)


def test_preprocessing_matches_the_papers_formula():
    x = np.array([3.0, -2e-3, 1e-6, -1e-6, 0.0, 4.5e-5, -4.6e-5])
    np.testing.assert_allclose(preprocess(tf.constant(x)).numpy(), numpy_preprocess(x),
                               rtol=1e-12, atol=1e-15)


def test_rule_matches_a_numpy_twin_of_the_equations():
    rng = np.random.default_rng(0)
    w_i, w_f = rng.normal(size=7), rng.normal(size=7)
    theta = [rng.normal(size=(3, 2)), rng.normal(size=4)]
    rule = meta_lstm(tf.constant(w_i), tf.constant(w_f), scale=0.7)
    state = rule.init([tf.constant(t) for t in theta])
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    gates = [(np.zeros_like(t), np.zeros_like(t)) for t in theta]
    for step in range(3):
        grads = [rng.normal(size=t.shape) for t in theta]
        loss = rng.uniform(0.1, 3.0)
        new, state = rule.update([tf.constant(g) for g in grads], state,
                                 [tf.constant(t) for t in theta], step, loss=tf.constant(loss))
        expected = []
        for k, (t, g) in enumerate(zip(theta, grads)):
            x = np.concatenate([numpy_preprocess(g), np.broadcast_to(numpy_preprocess(loss),
                                                                    t.shape + (2,)),
                                t[..., None]], -1)
            i = sigmoid(np.concatenate([x, gates[k][0][..., None]], -1) @ w_i[:-1] + w_i[-1])
            f = sigmoid(np.concatenate([x, gates[k][1][..., None]], -1) @ w_f[:-1] + w_f[-1])
            gates[k] = (i, f)
            expected.append(f * t - 0.7 * i * g)
        for a, b in zip(new, expected):
            # Eigen's float64 sigmoid differs from NumPy's formula in the 9th digit.
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-8)
        theta = expected


def randomized_gates(learner, seed):
    rng = np.random.default_rng(seed)
    learner.input_gate.assign(learner.input_gate.numpy() + 0.3 * rng.normal(size=7))
    learner.forget_gate.assign(learner.forget_gate.numpy() + 0.3 * rng.normal(size=7))
    return learner


def test_exact_meta_gradient_through_the_gates_matches_finite_differences():
    learner = randomized_gates(km.MetaLSTM(mlp(dtype="float64", hidden=6), inner_lr=0.1,
                                           inner_steps=2, first_order=False), seed=1)
    batch = random_batch(tasks=2, shots=6, queries=6, dim=1, seed=5)
    auto, numeric = directional_check(learner, batch, directions=2)
    np.testing.assert_allclose(auto, numeric, rtol=1e-6, atol=1e-8)


def test_first_order_default_keeps_exact_gate_and_initial_weight_paths():
    """The paper's trick: with the gradient and loss inputs held constant, the meta-gradient
    is the exact derivative of the query loss when the support gradients and losses are
    frozen at their values: checked by finite differences of that frozen objective."""
    batch = random_batch(tasks=1, shots=6, queries=6, dim=1, seed=6)
    learner = randomized_gates(km.MetaLSTM(mlp(dtype="float64", hidden=4), inner_lr=0.1,
                                           inner_steps=2), seed=2)
    grad = meta_gradient(learner, batch)
    exact = meta_gradient(randomized_gates(km.MetaLSTM(
        mlp(dtype="float64", hidden=4), inner_lr=0.1, inner_steps=2, first_order=False),
        seed=2), batch)
    assert np.abs(grad - exact).max() > 1e-6  # the approximation drops real terms
    assert np.abs(grad[-14:]).min() > 0  # every gate parameter is learned

    # The frozen objective: record the support gradients and losses the inner loop sees at
    # the current weights, then replay the cell updates with those inputs fixed.
    sx, sy, qx, qy = (tf.constant(v[0]) for v in batch)
    model = learner.model
    variables = learner.meta_variables()
    n = len(model.trainable_variables)
    recorded = []
    fast = [tf.constant(v.numpy()) for v in variables[:n]]
    rule = meta_lstm(*(tf.constant(v.numpy()) for v in variables[n:]))
    state = rule.init(fast)
    for step in range(2):
        with tf.GradientTape() as tape:
            tape.watch(fast)
            loss = tf.reduce_mean(tf.square(model.stateless_call(fast, [], sx)[0] - sy))
        grads = tape.gradient(loss, fast)
        recorded.append((grads, loss))
        fast, state = rule.update(grads, state, fast, step, loss=loss)

    def frozen(flat):
        values, offset = [], 0
        for v in variables:
            size = int(np.prod(v.shape))
            values.append(tf.constant(flat[offset:offset + size].reshape(v.shape)))
            offset += size
        weights, replay = values[:n], meta_lstm(*values[n:])
        state = replay.init(weights)
        for step, (grads, loss) in enumerate(recorded):
            weights, state = replay.update(grads, state, weights, step, loss=loss)
        return float(tf.reduce_mean(tf.square(model.stateless_call(weights, [], qx)[0] - qy)))

    theta = np.concatenate([np.ravel(v.numpy()) for v in variables])
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = rng.normal(size=theta.shape)
        numeric = (frozen(theta + 1e-6 * v) - frozen(theta - 1e-6 * v)) / 2e-6
        np.testing.assert_allclose(grad @ v, numeric, rtol=1e-6, atol=1e-9)


def test_untrained_rule_is_gradient_descent_with_a_slight_decay():
    learner = km.MetaLSTM(mlp(dtype="float64", hidden=4), inner_lr=0.05, inner_steps=1)
    theta = [tf.constant(v.numpy()) for v in learner.model.trainable_variables]
    grads = [tf.ones_like(t) for t in theta]
    rule = learner.update_rule(learner.meta_state(), learner.inner_lr)
    new, _ = rule.update(grads, rule.init(theta), theta, 0, loss=tf.constant(1.0, tf.float64))
    f = 1 / (1 + np.exp(-5.0))
    for a, t in zip(new, theta):
        np.testing.assert_allclose(a.numpy(), f * t.numpy() - 0.05, rtol=1e-12)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(inner_lr=1.0), ValueError, r"inner_lr=1.0"),
    (dict(inner_rule=km.inner.LearnedRule()), TypeError, r"no `inner_rule` for MetaLSTM"),
])
def test_constructor_refuses(kwargs, error, match):
    with pytest.raises(error, match=match):
        km.MetaLSTM(mlp(), **kwargs)
