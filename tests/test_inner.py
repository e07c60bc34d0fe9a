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
