"""Forward passes of an unmodified Keras 3 model at given (fast) weights.

Meta-learners never assign inner-loop weights into variables: assignment cuts the
second-order graph. They call `model.stateless_call` with weight tensors instead.
"""

import inspect

import keras
import tensorflow as tf


def check_tensorflow_backend():
    """Raises if Keras runs on a backend other than TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "keras_meta needs the TensorFlow backend of Keras 3. Expected "
            "keras.backend.backend() == 'tensorflow'. Received: "
            f"backend={keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before "
            "importing keras."
        )


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
    # stateless_call hands `training` to `call` as is; a model whose `call` takes no
    # `training` argument (as Keras's own `__call__` allows) gets none.
    kwargs = {"training": training} if accepts_training(model) else {}
    return model.stateless_call(list(trainable_values), list(non_trainable_values), x, **kwargs)


def accepts_training(model):
    """Whether `model.call` takes a `training` argument."""
    parameters = inspect.signature(model.call).parameters.values()
    return any(p.name == "training" or p.kind is p.VAR_KEYWORD for p in parameters)


def variable_values(variables):
    """Tensors holding the current values of `variables`, differentiable to them."""
    return [tf.convert_to_tensor(v) for v in variables]
