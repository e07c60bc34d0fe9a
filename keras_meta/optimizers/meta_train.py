"""Meta-training a learned optimizer: unrolled optimisation with truncated backpropagation."""

import keras
import tensorflow as tf

from keras_meta import inner
from keras_meta._validation import check_bool, check_positive_int, check_seed
from keras_meta.ops.finite import apply_if_finite
from keras_meta.optimizers.problems import Problems, Stacked
from keras_meta.tasks import step_seed


def unrolled_loss(update_rule, problems, params, data, steps, state=None, second_order=False):
    """Runs `steps` updates of `update_rule` on one problem; the mean loss along the way.

    The loss is Andrychowicz et al.'s `(1/T) sum_{t=1..T} f(theta_t)` (all weights
    `w_t = 1`), differentiable with respect to whatever `update_rule` closes over (the
    rule's weights).

    Args:
        update_rule: An `UpdateRule` (e.g. `LearnedRule.update_rule(weights)`).
        problems: The problem's family (its `loss`).
        params: The starting weights (list of tensors).
        data: The problem's data.
        steps: The number of updates `T`.
        state: The rule's state (its `init` when None).
        second_order: Differentiate through the gradients the rule reads. False drops
            those terms, as the paper does (its assumption that the optimizee's gradients do
            not depend on the optimizer's weights).

    Returns:
        `(loss, adapted)`: the mean loss and `inner.Adapted(params, state, None)` after the
        last update.

    Raises:
        ValueError, TypeError: If `steps` is not a positive integer.
    """
    steps = check_positive_int(steps, "steps")
    losses = []

    def record(k, weights):
        if k > 0:
            losses.append(problems.loss(weights, data))

    adapted = inner.adapt(lambda p, k: problems.loss(p, data), params, update_rule, steps,
                          first_order=not second_order, state=state, on_step=record)
    return tf.add_n(losses) / steps, adapted


def meta_train(rule, problems, iterations=100, meta_batch_size=4, horizon=100, unroll=20,
               optimizer=None, second_order=False, seed=0, jit_compile=False):
    """Meta-trains `rule`'s weights on a family of problems (Andrychowicz et al., 2016).

    Each iteration draws `meta_batch_size` problems and optimises each for `horizon` steps
    with the rule, in `horizon / unroll` truncations: after every `unroll` steps the outer
    optimizer takes one step on the gradient of the truncation's `unrolled_loss` (mean over
    the problems) with respect to the rule's weights, and the next truncation continues
    from where the weights and the rule's state got to, without backpropagating into the
    previous truncation (truncated backpropagation through time). A truncation with a
    non-finite loss or gradient updates nothing and ends its iteration early.

    Problem `b` of iteration `i` is `problems.sample(step_seed(seed, i * meta_batch_size
    + b))`: the same seed gives the same run.

    Args:
        rule: A `keras_meta.inner.LearnedRule`; its trainable weights are updated in place.
        problems: A `keras_meta.optimizers.Problems` family.
        iterations: Iterations (problem draws).
        meta_batch_size: Problems per iteration.
        horizon: Steps each problem is optimised for (a multiple of `unroll`).
        unroll: Steps per truncation.
        optimizer: The outer optimizer (default `keras.optimizers.Adam(1e-3)`).
        second_order: See `unrolled_loss` (False: the paper's approximation).
        seed: The run's seed.
        jit_compile: Compile each truncation with XLA.

    Returns:
        `rule`, trained.

    Raises:
        TypeError, ValueError: On a bad argument, before any training.
    """
    if not isinstance(rule, inner.LearnedRule):
        raise TypeError("Expected `rule` to be a keras_meta.inner.LearnedRule. Received: rule of "
                        f"type {type(rule).__name__}")
    if not isinstance(problems, Problems):
        raise TypeError("Expected `problems` to be a keras_meta.optimizers.Problems family. "
                        f"Received: problems of type {type(problems).__name__}")
    iterations = check_positive_int(iterations, "iterations")
    meta_batch_size = check_positive_int(meta_batch_size, "meta_batch_size")
    horizon = check_positive_int(horizon, "horizon")
    unroll = check_positive_int(unroll, "unroll")
    if horizon % unroll:
        raise ValueError("Expected `horizon` to be a multiple of `unroll`. Received: "
                         f"horizon={horizon}, unroll={unroll}")
    second_order = check_bool(second_order, "second_order")
    seed = check_seed(seed)
    jit_compile = check_bool(jit_compile, "jit_compile")
    if not rule.trainable_variables:
        raise ValueError("Expected a trainable `rule`. Received: rule with trainable=False")
    optimizer = keras.optimizers.Adam(1e-3) if optimizer is None else optimizer
    variables = list(rule.trainable_variables)
    optimizer.build(variables)

    stacked = Stacked(problems, meta_batch_size)

    def truncation(params, state, data):
        with tf.GradientTape() as tape:
            update = rule.update_rule([tf.convert_to_tensor(w) for w in rule.network])
            # The stacked loss sums the problems' losses: the mean is the meta-loss.
            loss, adapted = unrolled_loss(update, stacked, params, data, unroll, state,
                                          second_order)
            loss = loss / meta_batch_size
        grads = tape.gradient(loss, variables)
        applied = apply_if_finite(lambda: optimizer.apply(grads, variables), loss, grads)
        return applied, tf.nest.map_structure(tf.stop_gradient, (adapted.params, adapted.state))

    truncation = tf.function(truncation, jit_compile=jit_compile)
    initial = rule.update_rule().init
    for iteration in range(iterations):
        params, data = stacked.sample_many(
            [step_seed(seed, iteration * meta_batch_size + b) for b in range(meta_batch_size)])
        params = [tf.constant(p) for p in params]
        data = tuple(tf.constant(d) for d in data)
        state = initial(params)
        for _ in range(horizon // unroll):
            applied, (params, state) = truncation(params, state, data)
            if not bool(applied):
                break
    return rule
