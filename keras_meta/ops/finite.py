"""The non-finite update guard shared by every learner's outer update."""

import tensorflow as tf


def apply_if_finite(apply, loss, grads):
    """Runs `apply()` only when `loss` and every tensor of `grads` are finite.

    A diverging update shows up as a NaN/Inf loss in the logs while the weights and the
    optimizer state keep their last finite values, so `TerminateOnNaN` stops a run whose
    checkpoints stay usable. Works eagerly and inside a `tf.function` (as a `tf.cond`).

    Args:
        apply: A function of no arguments applying the update.
        loss: The update's loss (any shape).
        grads: The update's gradients (or the candidate weights of a TRPO step).

    Returns:
        A boolean scalar tensor: whether the update was applied.
    """
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in [loss, *grads]])
    if tf.executing_eagerly():
        if finite:
            apply()
        return finite

    def applied():
        apply()
        return tf.constant(True)

    return tf.cond(finite, applied, lambda: tf.constant(False))
