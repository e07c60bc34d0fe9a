"""Pure inner-loop update rules: functions over lists of tensors, no hidden state.

An update rule maps `(step, params, grads)` to new params; `step` is the Python index of
the inner step, so per-step learning rates (MAML++) are plain lookups.
"""

import tensorflow as tf


def cast_scalar(value, dtype):
    # tf.cast(0.1, tf.float64) rounds through float32 first; build Python numbers directly.
    if isinstance(value, (int, float)):
        return tf.constant(value, dtype)
    return tf.cast(value, dtype)


def sgd(learning_rate):
    """Plain gradient descent: `theta' = theta - alpha * grad` (MAML, FOMAML, ANIL).

    Args:
        learning_rate: A scalar `alpha` (float or scalar tensor).

    Returns:
        An update rule `(step, params, grads) -> params`.

    Example:

    >>> rule = sgd(0.01)
    >>> rule(0, [tf.ones(2)], [tf.ones(2)])[0].numpy()
    array([0.99, 0.99], dtype=float32)
    """

    def update(step, params, grads):
        del step
        return [p - cast_scalar(learning_rate, p.dtype) * g for p, g in zip(params, grads)]

    return update


def per_parameter_sgd(learning_rates):
    """Gradient descent with an elementwise step size per weight: `theta' = theta - alpha ⊙ grad`.

    This is Meta-SGD's rule (Li et al., 2017): `alpha` has the shape of `theta` and is
    itself meta-learned.

    Args:
        learning_rates: Tensors or variables shaped like the params, one per param.

    Returns:
        An update rule `(step, params, grads) -> params`.
    """

    def update(step, params, grads):
        del step
        return [p - cast_scalar(a, p.dtype) * g for p, g, a in zip(params, grads, learning_rates)]

    return update


def per_step_sgd(learning_rates):
    """Gradient descent with one step size per inner step: `theta_{k+1} = theta_k - alpha_k * grad`.

    Args:
        learning_rates: A sequence of scalars, one per inner step.

    Returns:
        An update rule `(step, params, grads) -> params`.
    """

    def update(step, params, grads):
        return sgd(learning_rates[step])(step, params, grads)

    return update


def gradients(loss_fn, params, first_order=False):
    """Loss and gradients of `loss_fn` at `params`, differentiable for the outer loop.

    Args:
        loss_fn: A function of the list of params returning a scalar loss.
        params: List of tensors.
        first_order: If True the returned gradients are constants for outer tapes, which
            drops the second-order terms (FOMAML).

    Returns:
        `(loss, grads)`.
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(params)
        loss = loss_fn(params)
    grads = tape.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    if first_order:
        grads = [tf.stop_gradient(g) for g in grads]
    return loss, grads


def adapt(loss_fn, params, steps, update, first_order=False):
    """Runs `steps` inner updates from `params` and returns the fast weights.

    Args:
        loss_fn: Support-set loss as a function of the list of params.
        params: Initial weights (tensors; the outer tape differentiates through them).
        steps: Number of inner steps (a Python int).
        update: An update rule `(step, params, grads) -> params`.
        first_order: Drop second-order terms (see `gradients`).

    Returns:
        The list of adapted weights.
    """
    fast = list(params)
    for step in range(steps):
        _, grads = gradients(loss_fn, fast, first_order)
        fast = update(step, fast, grads)
    return fast
