"""Forward passes of an unmodified Keras 3 model at given (fast) weights.

Meta-learners never assign inner-loop weights into variables: assignment cuts the
second-order graph. They call `model.stateless_call` with weight tensors instead.
"""

import contextlib
import threading

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import nn as _keras_tf_nn


def check_tensorflow_backend():
    """Raises if Keras runs on a backend other than TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "keras_meta needs the TensorFlow backend of Keras 3. Expected "
            "keras.backend.backend() == 'tensorflow'. Received: "
            f"backend={keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before "
            "importing keras."
        )


def _exact_moments(x, axes, keepdims):
    # tf.nn.moments computes mean((x - stop_gradient(mean))**2): right first derivatives,
    # wrong second derivatives. This form is exact at every order.
    mean = tf.reduce_mean(x, axes, keepdims=True)
    variance = tf.reduce_mean(tf.math.squared_difference(x, mean), axes, keepdims=True)
    if not keepdims:
        mean = tf.squeeze(mean, axes)
        variance = tf.squeeze(variance, axes)
    return mean, variance


_moments_lock = threading.RLock()


@contextlib.contextmanager
def exact_batch_statistics():
    """Makes Keras batch statistics differentiable to every order while tracing.

    Keras 3's TensorFlow backend normalises with `tf.nn.moments`, whose variance stops
    the gradient through the mean. Inside this context BatchNormalization (and any layer
    calling `keras.ops.moments`) builds the exact variance instead, so second-order
    meta-gradients through `BatchNormalization(training=True)` are correct. Graphs traced
    inside the context keep the exact form after it exits.
    """
    with _moments_lock:
        original = _keras_tf_nn._compute_moments
        _keras_tf_nn._compute_moments = _exact_moments
        try:
            yield
        finally:
            _keras_tf_nn._compute_moments = original


def forward(model, trainable_values, non_trainable_values, x, training=True):
    """Output of `model` on `x` at the given weights, and its updated non-trainables.

    Args:
        model: A built Keras 3 model.
        trainable_values: Tensors in the order of `model.trainable_variables`.
        non_trainable_values: Tensors in the order of `model.non_trainable_variables`.
        x: Model input.
        training: Whether layers such as BatchNormalization and Dropout run in training
            mode.

    Returns:
        `(outputs, non_trainable_values)` as `model.stateless_call` returns them.
    """
    return model.stateless_call(
        list(trainable_values), list(non_trainable_values), x, training=training
    )


def variable_values(variables):
    """Tensors holding the current values of `variables`, differentiable to them."""
    return [tf.convert_to_tensor(v) for v in variables]
