"""Inner-loop update rules in optax's shape: pure `init`/`update` over lists of tensors.

A rule is an `UpdateRule(init, update)`:

- `init(params) -> state`: the rule's state for the starting weights (`()` when it has none);
- `update(grads, state, params, step) -> (new_params, new_state)`: one inner step.

Both are pure TensorFlow functions of their arguments, so an outer `tf.GradientTape`
differentiates through them to every order (second-order MAML through momentum or Adam).
`step` is the Python index of the inner step: per-step learning rates (MAML++) are plain
lookups, and Adam's bias correction is a constant.
"""

from typing import Callable, NamedTuple

import tensorflow as tf


class UpdateRule(NamedTuple):
    """An inner-loop update rule: `init(params) -> state`, `update(grads, state, params, step)`.

    `update` returns `(new_params, new_state)`. See the module docstring. A rule with
    `takes_loss=True` is also given the step's loss: `update(..., loss=L)` (Ravi &
    Larochelle's meta-learner LSTM reads it).
    """

    init: Callable
    update: Callable
    takes_loss: bool = False


def cast_scalar(value, dtype):
    """`value` as a tensor of `dtype`, rounding a Python number once.

    `tf.cast(0.1, tf.float64)` rounds through float32 first; a Python number is built
    directly in the target dtype instead.
    """
    if isinstance(value, (int, float)):
        return tf.constant(value, dtype)
    return tf.cast(value, dtype)


def _stateless(step_size):
    """A rule `p - step_size(i, step, p) * g` without state."""

    def init(params):
        del params
        return ()

    def update(grads, state, params, step):
        new = [p - step_size(i, step, p) * g for i, (p, g) in enumerate(zip(params, grads))]
        return new, state

    return UpdateRule(init, update)


def sgd(learning_rate):
    """Plain gradient descent: `theta' = theta - alpha * grad` (MAML, FOMAML, ANIL).

    Args:
        learning_rate: A scalar `alpha` (float or scalar tensor).

    Returns:
        An `UpdateRule` without state.

    Example:

    >>> rule = sgd(0.01)
    >>> rule.update([tf.ones(2)], rule.init([tf.ones(2)]), [tf.ones(2)], 0)[0][0].numpy()
    array([0.99, 0.99], dtype=float32)
    """
    return _stateless(lambda i, step, p: cast_scalar(learning_rate, p.dtype))


def per_parameter_sgd(learning_rates):
    """Gradient descent with an elementwise step size per weight: `theta' = theta - alpha ⊙ grad`.

    This is Meta-SGD's rule (Li et al., 2017): `alpha` has the shape of `theta` and is
    itself meta-learned.

    Args:
        learning_rates: Tensors or variables shaped like the params, one per param.

    Returns:
        An `UpdateRule` without state.
    """
    return _stateless(lambda i, step, p: cast_scalar(learning_rates[i], p.dtype))


def per_step_sgd(learning_rates):
    """Gradient descent with one step size per inner step: `theta_{k+1} = theta_k - alpha_k * grad`.

    Args:
        learning_rates: A sequence of scalars, one per inner step.

    Returns:
        An `UpdateRule` without state.
    """
    return _stateless(lambda i, step, p: cast_scalar(learning_rates[step], p.dtype))


def per_layer_per_step_sgd(learning_rates):
    """One learned step size per weight tensor and inner step (MAML++'s LSLR).

    `theta_{j,k+1} = theta_{j,k} - alpha_{k,j} * grad_j`, Antoniou et al. (2019), "How to
    train your MAML", section 4 ("learning per-layer per-step learning rates").

    Args:
        learning_rates: `learning_rates[k][j]`, a scalar for inner step `k` and weight `j`
            (a `[steps, num_weights]` tensor or nested sequences).

    Returns:
        An `UpdateRule` without state.
    """
    return _stateless(lambda i, step, p: cast_scalar(learning_rates[step][i], p.dtype))


def momentum(learning_rate, beta=0.9, nesterov=False):
    """SGD with (heavy-ball or Nesterov) momentum, differentiable to every order.

    `v_{k+1} = beta * v_k + g_k`, `theta_{k+1} = theta_k - alpha * v_{k+1}`; with
    `nesterov=True`, `theta_{k+1} = theta_k - alpha * (g_k + beta * v_{k+1})`. `v_0 = 0`.

    Args:
        learning_rate: Step size `alpha`.
        beta: Momentum coefficient in [0, 1).
        nesterov: Use Nesterov's look-ahead form.

    Returns:
        An `UpdateRule` whose state is the list of velocities.
    """

    def init(params):
        return [tf.zeros_like(p) for p in params]

    def update(grads, velocities, params, step):
        del step
        new_params, new_velocities = [], []
        for p, g, v in zip(params, grads, velocities):
            b = cast_scalar(beta, p.dtype)
            v = b * v + g
            direction = g + b * v if nesterov else v
            new_params.append(p - cast_scalar(learning_rate, p.dtype) * direction)
            new_velocities.append(v)
        return new_params, new_velocities

    return UpdateRule(init, update)


def adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8, epsilon_root=1e-12):
    """Adam (Kingma & Ba, 2015) as a differentiable inner rule.

    `m_{k+1} = b1 m_k + (1 - b1) g`, `v_{k+1} = b2 v_k + (1 - b2) g^2`,
    `theta_{k+1} = theta_k - alpha * m_hat / (sqrt(v_hat + eps_root) + eps)` with the bias
    corrections `m_hat = m_{k+1} / (1 - b1^(k+1))`, `v_hat = v_{k+1} / (1 - b2^(k+1))`.
    `epsilon_root` (optax's `eps_root`) keeps the derivative of the square root finite
    where a gradient is exactly zero (a dead ReLU): without it a second-order
    meta-gradient through Adam is NaN there.

    Args:
        learning_rate: Step size `alpha`.
        beta_1: First-moment decay `b1`.
        beta_2: Second-moment decay `b2`.
        epsilon: Added to the denominator.
        epsilon_root: Added under the square root.

    Returns:
        An `UpdateRule` whose state is `(first_moments, second_moments)`.
    """

    def init(params):
        return [tf.zeros_like(p) for p in params], [tf.zeros_like(p) for p in params]

    def update(grads, state, params, step):
        first, second = state
        new_params, new_first, new_second = [], [], []
        for p, g, m, v in zip(params, grads, first, second):
            b1, b2 = cast_scalar(beta_1, p.dtype), cast_scalar(beta_2, p.dtype)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * tf.square(g)
            m_hat = m / cast_scalar(1.0 - beta_1 ** (step + 1), p.dtype)
            v_hat = v / cast_scalar(1.0 - beta_2 ** (step + 1), p.dtype)
            denominator = tf.sqrt(v_hat + cast_scalar(epsilon_root, p.dtype)) + cast_scalar(
                epsilon, p.dtype)
            new_params.append(p - cast_scalar(learning_rate, p.dtype) * m_hat / denominator)
            new_first.append(m)
            new_second.append(v)
        return new_params, (new_first, new_second)

    return UpdateRule(init, update)
