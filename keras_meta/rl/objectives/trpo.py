"""TRPO's natural-gradient step (Schulman et al., 2015), independent of the policy and learner.

The learner supplies the surrogate's gradient, a Fisher-vector product and a function
evaluating `(surrogate, mean KL)` at candidate weights; this module solves `F s = g` by
conjugate gradient, scales `s` to the KL trust region and backtracks along it.
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
    x = tf.zeros_like(b)
    r = tf.identity(b)
    p = tf.identity(b)
    rr = tf.tensordot(r, r, 1)
    for _ in range(iters):
        ap = matvec(p)
        alpha = rr / (tf.tensordot(p, ap, 1) + 1e-12)
        x += alpha * p
        r -= alpha * ap
        rr_new = tf.tensordot(r, r, 1)
        if float(rr_new) < tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


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
        `(candidate, surrogate, kl, line_search_steps)`: the accepted weights (None when
        no candidate was accepted, then `surrogate = surrogate0`, `kl = 0` and
        `line_search_steps = 0`).
    """
    g = flatten(grads)

    def damped_fvp(v):
        return flatten(fvp(unflatten(v, theta))) + cg_damping * v

    direction = conjugate_gradient(damped_fvp, g, cg_iters)
    shs = tf.tensordot(direction, damped_fvp(direction), 1)
    full_step = tf.sqrt(2.0 * max_kl / tf.maximum(shs, 1e-12)) * direction
    theta_flat = flatten(theta)
    for i in range(ls_max_steps):
        candidate = unflatten(theta_flat - (ls_backtrack**i) * full_step, theta)
        surrogate, kl = terms(candidate)
        if float(kl) <= max_kl and float(surrogate) < float(surrogate0):
            return candidate, surrogate, kl, i + 1
    return None, surrogate0, tf.constant(0.0), 0
