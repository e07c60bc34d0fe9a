"""The inner loop: the one place where fast weights take gradient steps.

Supervised learners (MAML, ANIL, Meta-SGD, MAML++, Reptile) and MAML-RL all adapt through
`adapt`; they differ only in the loss they give it and the `UpdateRule` they choose.
"""

from typing import Any, NamedTuple

import tensorflow as tf


class Adapted(NamedTuple):
    """What `adapt` returns: the fast weights, the rule's state and the loss's carry."""

    params: list
    state: Any
    carry: Any


def gradients(loss_fn, params, first_order=False):
    """Loss and gradients of `loss_fn` at `params`, differentiable for the outer loop.

    Args:
        loss_fn: A function of the list of params returning a scalar loss, or
            `(loss, aux)`; `aux` is returned untouched.
        params: List of tensors.
        first_order: If True the returned gradients are constants for outer tapes, which
            drops the second-order terms (FOMAML). A scalar boolean tensor switches in the
            graph (MAML++'s derivative-order annealing): the gradients keep their values and
            their own derivatives are scaled by 0 or 1.

    Returns:
        `(loss_or_(loss, aux), grads)`.
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(params)
        value = loss_fn(params)
    loss = value[0] if isinstance(value, tuple) else value
    grads = tape.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return value, held(grads, first_order)


def held(tensors, first_order):
    """`tensors` as constants for outer tapes when `first_order` (see `gradients`)."""
    if isinstance(first_order, bool):
        return [tf.stop_gradient(t) for t in tensors] if first_order else list(tensors)
    # A blend rather than tf.cond: one graph for both orders, differentiable inside
    # vectorized maps and XLA; the first-order phase still traces the second-order terms.
    keep = [tf.cast(tf.logical_not(first_order), t.dtype) for t in tensors]
    return [k * t + (1 - k) * tf.stop_gradient(t) for k, t in zip(keep, tensors)]


def _after_upstream(tensors, upstream):
    """`tensors` plus a zero computed from `upstream`: available only once it is.

    As `tf.recompute_grad` does: a control dependency would not do, XLA ignores those, and
    the zero is a `where` on one element, which grappler cannot fold away.
    """
    first = next((u for u in upstream if u is not None and u.dtype.is_floating), None)
    if first is None:
        return list(tensors)
    element = tf.cast(tf.reduce_max(tf.reshape(first, [-1])[:1]), tf.bool)
    zero = tf.where(tf.equal(element, element), 0.0, float("nan"))
    return [t + tf.cast(zero, t.dtype) if t.dtype.is_floating else t for t in tensors]


def _recomputed(take, inputs):
    """`take(*inputs)` whose activations the outer gradient recomputes instead of keeping.

    `tf.recompute_grad` differentiates only with respect to its arguments; an inner step
    also reads tensors it closes over (learned rates, ANIL's fixed body, MAML++'s
    BatchNormalization weights). Tracing the step once finds them (the concrete function's
    captured inputs), so they become arguments and get their gradients too.

    In a graph the recomputation reads its inputs through `_after_upstream`: without a data
    dependency on the incoming gradient TensorFlow's executor runs it as soon as the step's
    inputs exist, during the forward pass, and grappler may merge it with the forward
    step, so every step's activations would be kept until the outer gradient after all.
    """
    captured = [t for t in tf.function(take).get_concrete_function(*inputs).captured_inputs
                if t.dtype.is_floating]
    count = len(inputs)

    @tf.custom_gradient
    def run(*args):
        outputs = take(*args[:count])

        def grad(*upstream, variables=None):
            # Identities made here: inside a while loop (map_fn) this runs in the loop's
            # gradient graph, where `args` arrive as captures that a tape watching the
            # forward tensors would not connect (as `tf.recompute_grad` does).
            local = [tf.identity(a) for a in args[:count]] + list(args[count:])
            floating = [a for a in local if a.dtype.is_floating]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(floating)
                again = take(*_after_upstream(local[:count], upstream))
            pairs = [(o, tf.zeros_like(o) if u is None else u)
                     for o, u in zip(again, upstream) if o.dtype.is_floating]
            grads = iter(tape.gradient([o for o, _ in pairs], floating + list(variables or ()),
                                       output_gradients=[u for _, u in pairs],
                                       unconnected_gradients=tf.UnconnectedGradients.ZERO))
            arg_grads = [next(grads) if a.dtype.is_floating else None for a in args]
            # custom_gradient passes `variables` only when the step read some.
            return arg_grads if variables is None else (arg_grads, list(grads))

        return outputs, grad

    return list(run(*inputs, *captured))


def adapt(loss_fn, params, rule, steps, *, first_order=False, state=None, carry=None,
          start=0, on_step=None, limit=None, recompute=False, exact_steps=None):
    """Runs `steps` inner updates of `rule` from `params`.

    Step `k` (counted from `start`) computes `g_k = grad L(theta_k)` with the loss of that
    step, then `theta_{k+1}, s_{k+1} = rule.update(g_k, s_k, theta_k, k)`; a rule with
    `takes_loss` also gets that step's loss, `rule.update(..., loss=L_k)` (held constant
    like the gradients under `first_order`).

    Args:
        loss_fn: The inner loss. Called as `loss_fn(params, step)`, or, when `carry` is
            given, `loss_fn(params, step, carry) -> (loss, new_carry)` (a non-differentiated
            value threaded through the steps, such as the layers' random-seed state).
        params: Starting weights (tensors; an outer tape differentiates through them).
        rule: An `UpdateRule`.
        steps: Number of inner steps (a Python int; the loop is unrolled in the graph).
        first_order: Hold the inner gradients constant for the outer tape (see `gradients`).
        state: The rule's state; `rule.init(params)` when None (continue a run with the
            state a previous call returned).
        carry: Optional value threaded through the loss (see `loss_fn`).
        start: Index of the first step (for per-step rules when continuing a run).
        on_step: Optional `on_step(k, params)` called at every `k` in `start..start+steps`,
            including the starting weights (adaptation curves).
        limit: Optional scalar integer tensor: only the first `limit` of the `steps`
            unrolled steps are taken (each later one leaves everything as it is), so one
            graph adapts with any step count up to `steps` (exported signatures).
        recompute: Keep only each step's inputs for the outer gradient and recompute the
            step's activations when it is differentiated (exact; memory of one step's
            activations instead of all steps', for one more forward pass per step).
            Limits: under `tf.vectorized_map` with the tape outside it the vectorized
            gradient does not recompute (exact, plain's memory): take the tape inside the
            vectorized function, as `MetaTrainer`'s vectorized execution does when
            recomputing; inside a while loop
            (`tf.map_fn`) with the tape outside it, tensors the loss closes over get no
            gradient through the recomputation (the parameters and rule state do), so
            pass what must be differentiated as parameters there, or put the tape
            inside the loop body, as `MetaTrainer`'s task loop does.
        exact_steps: Optional int: only the last `exact_steps` steps are differentiated
            to second order; the earlier ones are first order (their Jacobian taken as
            the identity, Shaban et al. 2019's truncated back-propagation). None: all.

    Returns:
        `Adapted(params, state, carry)`.
    """
    fast = list(params)
    state = rule.init(fast) if state is None else state
    if on_step is not None:
        on_step(start, fast)
    for step in range(start, start + steps):
        order = first_order
        if exact_steps is not None and step < start + steps - exact_steps:
            order = True

        def take(*flat, step=step, order=order):
            fast, state, *carry = tf.nest.pack_sequence_as(structure, list(flat))
            if not carry:
                loss, grads = gradients(lambda p: loss_fn(p, step), fast, order)
            else:
                (loss, carry[0]), grads = gradients(lambda p: loss_fn(p, step, carry[0]), fast,
                                                    order)
            if rule.takes_loss:
                fast, state = rule.update(grads, state, fast, step,
                                          loss=held([loss], order)[0])
            else:
                fast, state = rule.update(grads, state, fast, step)
            return tf.nest.flatten((list(fast), state, *carry))

        # No None in the flat values: they pass through tf.cond and tf.custom_gradient.
        structure = (fast, state) if carry is None else (fast, state, carry)
        flat = tf.nest.flatten(structure)

        def step_fn(flat=flat, take=take, order=order):
            if recompute and order is not True:
                # A first-order step keeps nothing for the outer gradient to recompute.
                return _recomputed(take, flat)
            return take(*flat)

        if limit is None:
            new = step_fn()
        else:
            new = tf.cond(step - start < limit, step_fn, lambda flat=flat: flat)
        fast, state, *rest = tf.nest.pack_sequence_as(structure, list(new))
        carry = rest[0] if rest else None
        if on_step is not None:
            on_step(step + 1, fast)
    return Adapted(fast, state, carry)
