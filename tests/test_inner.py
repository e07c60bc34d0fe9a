"""keras_meta.inner: the update rules and `adapt` against the formulas they document."""

import numpy as np
import tensorflow as tf

from keras_meta import inner


def _quadratic(targets):
    # L(p) = sum_i 0.5 * ||p_i - t_i||^2, so grad_i = p_i - t_i.
    return lambda params, step: tf.add_n([0.5 * tf.reduce_sum((p - t) ** 2)
                                          for p, t in zip(params, targets)])


def _step(rule, params, grads, step=0):
    return rule.update(grads, rule.init(params), params, step)[0]


def test_rules_apply_their_formulas():
    params = [tf.constant([1.0, 2.0]), tf.constant([[3.0]])]
    grads = [tf.constant([0.5, -1.0]), tf.constant([[2.0]])]
    sgd = _step(inner.sgd(0.1), params, grads)
    np.testing.assert_allclose(sgd[0], [0.95, 2.1])
    np.testing.assert_allclose(sgd[1], [[2.8]])
    rates = [tf.constant([0.1, 0.2]), tf.constant([[0.5]])]
    per_parameter = _step(inner.per_parameter_sgd(rates), params, grads)
    np.testing.assert_allclose(per_parameter[0], [0.95, 2.2])
    np.testing.assert_allclose(per_parameter[1], [[2.0]])
    per_step = inner.per_step_sgd([0.1, 0.5])
    np.testing.assert_allclose(_step(per_step, params, grads, 0)[0], sgd[0])
    np.testing.assert_allclose(_step(per_step, params, grads, 1)[0], [0.75, 2.5])


def test_adapt_runs_the_rule_for_each_step():
    targets = [tf.constant([1.0, -1.0]), tf.constant([[2.0]])]
    start = [tf.zeros([2]), tf.zeros([1, 1])]
    fast = inner.adapt(_quadratic(targets), start, inner.per_step_sgd([0.5, 0.25]), steps=2).params
    # p_{k+1} = p_k - a_k (p_k - t): the gap to t shrinks by (1 - 0.5)(1 - 0.25).
    for f, t in zip(fast, targets):
        np.testing.assert_allclose(f, t.numpy() * (1 - 0.5 * 0.75), rtol=1e-6)


def test_first_order_gradients_are_constants_for_an_outer_tape():
    targets = [tf.constant([1.0, -1.0])]
    theta = tf.constant([0.5, 0.5])
    for first_order, expected in ((False, 0.5), (True, 1.0)):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            fast = inner.adapt(_quadratic(targets), [theta], inner.sgd(0.5), steps=1,
                               first_order=first_order).params
            total = tf.reduce_sum(fast[0])
        # fast = theta - 0.5 (theta - t): d fast / d theta is 0.5 exactly, 1.0 with the
        # inner gradient held constant.
        np.testing.assert_allclose(tape.gradient(total, theta), [expected, expected])


def _fd_check(rule, steps=3, seed=0):
    """Second-order exactness: d/d theta of a query loss after `steps` inner updates of
    `rule` on a non-quadratic support loss, against float64 central differences."""
    rng = np.random.default_rng(seed)
    x_s, x_q = tf.constant(rng.normal(size=(6, 3))), tf.constant(rng.normal(size=(5, 3)))
    y_s, y_q = tf.constant(rng.normal(size=(6,))), tf.constant(rng.normal(size=(5,)))

    def support(params, step):
        w, b = params
        return tf.reduce_mean((tf.tanh(tf.linalg.matvec(x_s, w)) + b - y_s) ** 2)

    def query(theta):
        fast = inner.adapt(support, theta, rule, steps).params
        w, b = fast
        return tf.reduce_mean((tf.tanh(tf.linalg.matvec(x_q, w)) + b - y_q) ** 2)

    theta = [tf.constant(rng.normal(size=(3,))), tf.constant(0.3, tf.float64)]
    with tf.GradientTape() as tape:
        tape.watch(theta)
        loss = query(theta)
    grads = tape.gradient(loss, theta)
    direction = [tf.constant(rng.normal(size=t.shape)) for t in theta]
    eps = 1e-6
    plus = query([t + eps * d for t, d in zip(theta, direction)])
    minus = query([t - eps * d for t, d in zip(theta, direction)])
    analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction))
    np.testing.assert_allclose(analytic, float(plus - minus) / (2 * eps), rtol=1e-6)
    # The check would pass for a rule with no dependence on theta's curvature too; make sure
    # the inner loop moved the weights (so the test differentiates through real updates).
    fast = inner.adapt(support, theta, rule, steps).params
    assert float(tf.reduce_max(tf.abs(fast[0] - theta[0]))) > 1e-3


def test_stateful_rules_are_second_order_exact():
    for rule in (inner.momentum(0.1, beta=0.9), inner.momentum(0.1, beta=0.5, nesterov=True),
                 inner.adam(0.05), inner.per_layer_per_step_sgd([[0.1, 0.2], [0.3, 0.05],
                                                                  [0.2, 0.1]])):
        _fd_check(rule)


def test_momentum_and_adam_follow_their_formulas():
    params, grads = [tf.constant([1.0, -2.0])], [tf.constant([0.5, 0.0])]
    rule = inner.momentum(0.1, beta=0.9)
    p1, v1 = rule.update(grads, rule.init(params), params, 0)
    p2, _ = rule.update(grads, v1, p1, 1)
    # v1 = g, v2 = 0.9 g + g = 1.9 g; p2 = p0 - 0.1 (g + 1.9 g).
    np.testing.assert_allclose(p2[0], [1.0 - 0.1 * 2.9 * 0.5, -2.0], rtol=1e-6)
    rule = inner.adam(0.1)
    p1, state = rule.update(grads, rule.init(params), params, 0)
    # After one bias-corrected step Adam moves by ~alpha * sign(g); a zero gradient stays put
    # and (epsilon_root) keeps its second derivative finite.
    np.testing.assert_allclose(p1[0], [1.0 - 0.1, -2.0], rtol=1e-5)
    with tf.GradientTape() as tape:
        tape.watch(params)
        g = [params[0] * tf.constant([1.0, 0.0])]
        new, _ = rule.update(g, rule.init(params), params, 0)
        total = tf.reduce_sum(new[0])
    assert np.all(np.isfinite(tape.gradient(total, params)[0].numpy()))
