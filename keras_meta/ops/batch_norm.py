"""Exact batch statistics for second-order meta-gradients through BatchNormalization."""

import contextlib
import threading

import tensorflow as tf

from keras_meta import _compat


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
    nn = _compat.keras_tf_nn()
    with _moments_lock:
        original = nn._compute_moments
        nn._compute_moments = _exact_moments
        try:
            yield
        finally:
            nn._compute_moments = original
