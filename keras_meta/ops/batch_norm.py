"""Exact batch statistics for second-order meta-gradients through BatchNormalization."""

import contextlib
import threading
import warnings

import keras
import tensorflow as tf

from keras_meta import _compat
from keras_meta._warnings import KerasMetaWarning


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


@keras.saving.register_keras_serializable(package="keras_meta")
class BatchStatisticsNormalization(keras.layers.BatchNormalization):
    """`BatchNormalization` that normalises with the statistics of the batch it is given,
    in inference as in training, and leaves its moving statistics alone.

    This is how keras_meta's learners run BatchNorm in the inner loop and on query sets
    (transductive batch statistics, as in the MAML paper), so an adapted model built with
    it predicts as the learner evaluated it. Predict a task's query set in one batch
    (`model.predict(x, batch_size=len(x))`): the statistics are those of the batch.
    A frozen layer (`trainable=False`) keeps using its moving statistics, as Keras's does.
    """

    def call(self, inputs, training=None, mask=None):
        if not self.trainable:
            return super().call(inputs, training=training, mask=mask)
        x = keras.ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance = _compat.batch_norm_moments(self, x, mask)
        outputs = keras.ops.batch_normalization(
            x, mean, variance, axis=self.axis,
            offset=keras.ops.cast(self.beta, x.dtype) if self.center else None,
            scale=keras.ops.cast(self.gamma, x.dtype) if self.scale else None,
            epsilon=self.epsilon)
        return keras.ops.cast(outputs, self.compute_dtype)


def with_batch_statistics(model):
    """A clone of `model` (same weights) whose BatchNormalization layers are
    `BatchStatisticsNormalization` (Sequential and Functional models; a subclassed model is
    cloned as is, with a warning if it has BatchNorm layers)."""

    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return BatchStatisticsNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    if _compat.is_graph_model(model):
        copy = keras.models.clone_model(model, clone_function=clone)
    else:
        # A subclassed model is rebuilt from its config; its layers cannot be swapped.
        copy = keras.models.clone_model(model)
        if any(type(layer) is keras.layers.BatchNormalization
               for layer in _compat.flatten_layers(copy)):
            warnings.warn(
                f"The adapted copy of subclassed model {model.name!r} normalises with its "
                "BatchNorm moving statistics in inference, not with the batch statistics the "
                "learner adapts and evaluates with; call it with training=True to match.",
                KerasMetaWarning, stacklevel=3)
    copy.set_weights(model.get_weights())
    return copy

