"""`tf.vectorized_map` over the tasks of a meta-batch, usable under XLA, and per-task copies.

Under XLA, TensorFlow's `pfor` (behind `tf.vectorized_map`) wraps the vectorized loop in a
nested `tf.function`. XLA then compiles every input of that call (the task batch and the
meta-weights) as a compile-time constant, so a meta-step that follows an outer update
compiles anew: seconds per step instead of milliseconds. Building the same vectorized loop
directly in the caller's graph keeps those inputs XLA parameters, and the step compiles once.
"""

import tensorflow as tf

from keras_meta import _compat


def map_tasks(fn, elems):
    """`tf.vectorized_map(fn, elems, fallback_to_while_loop=True)` that XLA compiles once.

    Args:
        fn: Maps one task (a tuple of tensors without the task axis) to a structure of
            tensors.
        elems: A tuple of tensors whose first axis indexes the tasks.

    Returns:
        The outputs of `fn`, stacked over the tasks.
    """
    pfor = _compat.pfor()
    if not pfor._is_under_xla_context():
        return tf.vectorized_map(fn, elems, fallback_to_while_loop=True)
    elems = tuple(tf.convert_to_tensor(e) for e in elems)
    num_tasks = elems[0].shape[0]
    if num_tasks is None:
        num_tasks = tf.shape(elems[0])[0]
    return pfor._pfor_impl(
        lambda i: fn(tuple(tf.gather(e, i) for e in elems)),
        num_tasks,
        fallback_to_while_loop=True,
        parallel_iterations=None,
    )


def stack_copies(structure, count):
    """`count` copies of every tensor of `structure`, stacked on a new first axis.

    The task-batched layout `[count, ...]` of weights shared by `count` tasks (or batch
    rows). Unchecked: callers check `count` where it comes from a user.

    Args:
        structure: A nest of tensors (e.g. a list of weights or a dict of named ones).
        count: The number of copies: a Python int or a scalar int32 tensor.

    Returns:
        `structure` with each tensor `w` replaced by its copies, `[count, *w.shape]`.
    """
    return tf.nest.map_structure(lambda w: tf.tile(w[None], [count] + [1] * len(w.shape)),
                                 structure)
