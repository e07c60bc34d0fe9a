"""How a meta-step runs: the execution-mode choice and the compiled-function cache.

A meta-step maps a per-task function over the tasks of a meta-batch, either in a
`tf.while_loop` (one task's tape at a time: short first calls, flat memory) or with
`tf.vectorized_map` (all tasks at once: fastest for dense models), each with or without
XLA.
"""

import keras
import tensorflow as tf

from keras_meta import _compat
from keras_meta._validation import check_choice

CHOICES = (True, False, "auto")


def has_convolutions(model):
    return any("conv" in type(layer).__name__.lower() for layer in _compat.flatten_layers(model))


def has_recurrence(model):
    return any(isinstance(layer, keras.layers.RNN) for layer in _compat.flatten_layers(model))


def resolve(jit_request, vectorize_request, model):
    """The `(jit, vectorize)` pair that "auto" stands for on this machine and model.

    Measured in benchmarks/meta_step.py: on CPU, XLA over task-vectorized steps is the
    fastest for dense models, while convolutions are fastest in the plain task loop without
    XLA (vectorized convolutions are slower and far larger in memory, and XLA:CPU
    convolutions are an order of magnitude slower than oneDNN's). GPUs get XLA, vectorized
    over tasks for dense models as JAX would (not measured on a GPU here).
    """
    check_choice(jit_request, "jit_compile", CHOICES)
    check_choice(vectorize_request, "vectorize", CHOICES)
    recurrent = has_recurrence(model)
    if vectorize_request is True and recurrent:
        # pfor cannot vectorize the while loop of a Keras RNN layer over tasks ("`dtype`
        # variant is not compatible with int64").
        raise ValueError(
            "Expected vectorize=False or 'auto' for a model with recurrent layers (tf.vectorized_map "
            "cannot vectorize their loop over tasks; 'auto' runs them in the task loop). "
            "Received: vectorize=True")
    on_gpu = bool(tf.config.list_logical_devices("GPU"))
    convolutional = has_convolutions(model)
    jit = on_gpu or not convolutional if jit_request == "auto" else jit_request
    vectorize = not (convolutional or recurrent) if vectorize_request == "auto" else vectorize_request
    return bool(jit), bool(vectorize)


class FunctionCache:
    """`tf.function`s of a learner, one per key and execution mode, made once."""

    def __init__(self):
        self._functions = {}

    def clear(self):
        self._functions = {}

    def get(self, key, fn, jit, vectorize):
        """`fn` as a tf.function (XLA when `jit`), cached per key and mode."""
        cache_key = (key, jit, vectorize)
        if cache_key not in self._functions:
            self._functions[cache_key] = tf.function(fn, jit_compile=jit, reduce_retracing=True)
        return self._functions[cache_key]


def mean_over_tasks(stacked, old):
    """The task mean of a floating non-trainable; other dtypes keep their old value."""
    if stacked.dtype.is_floating:
        return tf.reduce_mean(stacked, axis=0)
    return old
