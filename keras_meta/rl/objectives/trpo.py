"""TRPO's natural-gradient step (Schulman et al., 2015), independent of the policy and learner.

The learner supplies the surrogate's gradient, a Fisher-vector product and a function
evaluating `(surrogate, mean KL)` at candidate weights; this module solves `F s = g` by
conjugate gradient, scales `s` to the KL trust region and backtracks along it. Every
function is made of TensorFlow ops and loops (`tf.while_loop`), so a whole TRPO step runs
eagerly or compiles into one graph, where the Fisher-vector product is traced once and
reused by every conjugate-gradient iteration.
"""

import numpy as np
import tensorflow as tf


def flatten(tensors):
    """Concatenates `tensors` into one 1-D tensor."""
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten(vector, like):
    """Splits a 1-D `vector` into tensors shaped like the tensors of `like`."""
    out, i = [], 0
    for t in like:
        n = int(np.prod(t.shape))
        out.append(tf.reshape(vector[i:i + n], t.shape))
        i += n
    return out


def conjugate_gradient(matvec, b, iters=10, tol=1e-10):
    """Solves `A x = b` for symmetric positive (semi-)definite `A` given `x -> A x`.

    Args:
        matvec: Function of a vector returning `A @ vector`.
        b: Right-hand side (1-D tensor).
        iters: Iterations.
        tol: Stop once the squared residual drops below it.

    Returns:
        The approximate solution `x`.
    """
    def body(i, x, r, p, rr):
        ap = matvec(p)
        alpha = rr / (tf.tensordot(p, ap, 1) + 1e-12)
        x, r = x + alpha * p, r - alpha * ap
        rr_new = tf.tensordot(r, r, 1)
        return i + 1, x, r, r + (rr_new / rr) * p, rr_new

    # The first iteration always runs (rr = 0 gives x = 0 there), as in the reference code.
    first = body(tf.constant(0), tf.zeros_like(b), b, b, tf.tensordot(b, b, 1))
    return tf.while_loop(lambda i, x, r, p, rr: (i < iters) & (rr >= tol), body, first)[1]


def kl_hessian_vector_product(kl_fn, at, vector):
    """`H v`, `H` the Hessian of the scalar `kl_fn(at)` in `at` (distribution parameters).

    With `kl_fn(p) = KL(pi_old || pi_p)` and `at = old`, `H` is the Fisher metric, so
    `J^T H (J v)` is the Gauss-Newton Fisher-vector product TRPO needs (exact at
    `new = old`, where the KL's gradient vanishes).
    """
    at = tf.identity(at)
    with tf.GradientTape() as outer_tape:
        outer_tape.watch(at)
        with tf.GradientTape() as inner_tape:
            inner_tape.watch(at)
            kl = kl_fn(at)
        directional = tf.reduce_sum(inner_tape.gradient(kl, at) * vector)
    return outer_tape.gradient(directional, at)


def trust_region_step(theta, surrogate0, grads, fvp, terms, max_kl, cg_iters=10, cg_damping=1e-5,
                      ls_backtrack=0.8, ls_max_steps=15):
    """One TRPO step: the largest backtracked natural-gradient step inside the KL region.

    `s = (F + damping I)^{-1} g` by conjugate gradient, full step
    `beta s` with `beta = sqrt(2 max_kl / s^T (F + damping I) s)`, then candidates
    `theta - backtrack^i beta s` for `i = 0, 1, ...` until the surrogate (minimised)
    decreases and the mean KL is at most `max_kl`.

    Args:
        theta: Current weights (list of tensors).
        surrogate0: The surrogate loss at `theta`.
        grads: Its gradient (list like `theta`).
        fvp: Function of a list like `theta` returning `F v` (list like `theta`).
        terms: Function of candidate weights returning `(surrogate, mean KL)`.
        max_kl, cg_iters, cg_damping, ls_backtrack, ls_max_steps: TRPO settings.

    Returns:
        `(candidate, accepted, surrogate, kl, line_search_steps)`: the accepted weights
        and True, or `theta`, False, `surrogate0`, 0 and 0 when no candidate was accepted.
    """
    g = flatten(grads)

    def damped_fvp(v):
        return flatten(fvp(unflatten(v, theta))) + cg_damping * v

    direction = conjugate_gradient(damped_fvp, g, cg_iters)
    shs = tf.tensordot(direction, damped_fvp(direction), 1)
    full_step = tf.sqrt(2.0 * max_kl / tf.maximum(shs, 1e-12)) * direction
    theta_flat = flatten(theta)
    zero = tf.zeros([], surrogate0.dtype)

    def search(i, accepted, candidate, surrogate, kl):
        shrink = tf.pow(tf.cast(ls_backtrack, full_step.dtype), tf.cast(i, full_step.dtype))
        candidate = theta_flat - shrink * full_step
        surrogate, kl = terms(unflatten(candidate, theta))
        return i + 1, (kl <= max_kl) & (surrogate < surrogate0), candidate, surrogate, kl

    steps, accepted, candidate, surrogate, kl = tf.while_loop(
        lambda i, accepted, *_: (i < ls_max_steps) & tf.logical_not(accepted), search,
        (tf.constant(0), tf.constant(False), theta_flat, surrogate0, zero))
    candidate = tf.where(accepted, candidate, theta_flat)
    return (unflatten(candidate, theta), accepted, tf.where(accepted, surrogate, surrogate0),
            tf.where(accepted, kl, zero), tf.where(accepted, steps, 0))
