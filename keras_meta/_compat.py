"""Every private Keras/TensorFlow symbol keras_meta touches, in one place.

Each accessor checks, at first use, that the symbol still exists with the shape we rely on
and otherwise raises a `RuntimeError` naming it and the installed versions, so an upgrade
that breaks one fails loudly (tests/test_compat.py calls each of them) instead of silently
changing results.
"""

import keras
import tensorflow as tf


def _missing(what):
    return RuntimeError(
        f"keras_meta relies on {what}, which this installation lacks (TensorFlow "
        f"{tf.__version__}, Keras {keras.__version__}). Expected TensorFlow 2.21 with Keras 3. "
        "Received: an incompatible version; install the versions pinned in pyproject.toml."
    )


def keras_tf_nn():
    """Keras's TensorFlow `nn` backend module, whose `_compute_moments` BatchNorm calls."""
    try:
        from keras.src.backend.tensorflow import nn
    except ImportError:
        raise _missing("keras.src.backend.tensorflow.nn") from None
    if not callable(getattr(nn, "_compute_moments", None)):
        raise _missing("keras.src.backend.tensorflow.nn._compute_moments")
    return nn


def pfor():
    """TensorFlow's `parallel_for.control_flow_ops` (`_pfor_impl`, `_is_under_xla_context`)."""
    try:
        from tensorflow.python.ops.parallel_for import control_flow_ops
    except ImportError:
        raise _missing("tensorflow.python.ops.parallel_for.control_flow_ops") from None
    for name in ("_pfor_impl", "_is_under_xla_context"):
        if not callable(getattr(control_flow_ops, name, None)):
            raise _missing(f"tensorflow.python.ops.parallel_for.control_flow_ops.{name}")
    return control_flow_ops


def flatten_layers(model, recursive=True):
    """The layers of `model` below it (Keras's private `Layer._flatten_layers`)."""
    method = getattr(model, "_flatten_layers", None)
    if method is None:
        raise _missing("keras.layers.Layer._flatten_layers")
    return list(method(include_self=False, recursive=recursive))


def backup_metadata_path(callback):
    """Where `keras.callbacks.BackupAndRestore` writes its training metadata (epoch, batch)."""
    path = getattr(callback, "_training_metadata_path", None)
    if not isinstance(path, str):
        raise _missing("keras.callbacks.BackupAndRestore._training_metadata_path")
    return path


def is_seed_state(variable):
    """Whether `variable` is a `keras.random.SeedGenerator`'s state (Dropout, GaussianNoise,
    random augmentation): an int64 `[seed, counter]` pair named `seed_generator_state`,
    whose counter `SeedGenerator.next` advances by one per draw."""
    return (variable.path.split("/")[-1] == "seed_generator_state"
            and tuple(variable.shape) == (2,) and "int" in str(variable.dtype))


def batch_norm_moments(layer, inputs, mask):
    """Batch mean and variance as `keras.layers.BatchNormalization` computes them in
    training (its private `_moments`, which also handles masks)."""
    moments = getattr(layer, "_moments", None)
    if moments is None:
        raise _missing("keras.layers.BatchNormalization._moments")
    return moments(inputs, mask)


def is_graph_model(model):
    """Whether `model` is Sequential or Functional (what `clone_model` can rebuild layer by
    layer); Keras's `Functional` class is private."""
    try:
        from keras.src.models.functional import Functional
    except ImportError:
        raise _missing("keras.src.models.functional.Functional") from None
    return isinstance(model, (keras.Sequential, Functional))



def gradient_kernels():
    """`{(module, name)}` of the generated ops that TensorFlow's registered gradients and
    losses call and the adaptive exports trace with built-in TFLite ops instead:
    `gen_array_ops.broadcast_gradient_args` (`math_grad.SmartBroadcastGradientArgs`),
    `gen_nn_ops.relu_grad` (`nn_grad._ReluGrad`), `gen_nn_ops.conv2d_backprop_filter`
    (`nn_grad._Conv2DGrad`) and `gen_nn_ops.(sparse_)softmax_cross_entropy_with_logits`
    (`nn_ops`, under `tf.nn.(sparse_)softmax_cross_entropy_with_logits`)."""
    try:
        from tensorflow.python.ops import gen_array_ops, gen_nn_ops, math_grad, nn_grad, nn_ops
    except ImportError:
        raise _missing("tensorflow.python.ops.gen_array_ops/gen_nn_ops") from None
    kernels = {(gen_array_ops, "broadcast_gradient_args", math_grad, "gen_array_ops"),
               (gen_nn_ops, "relu_grad", nn_grad, "gen_nn_ops"),
               (gen_nn_ops, "conv2d_backprop_filter", nn_grad, "gen_nn_ops"),
               (gen_nn_ops, "softmax_cross_entropy_with_logits", nn_ops, "gen_nn_ops"),
               (gen_nn_ops, "sparse_softmax_cross_entropy_with_logits", nn_ops, "gen_nn_ops")}
    for module, name, caller, alias in kernels:
        if not callable(getattr(module, name, None)) or getattr(caller, alias, None) is not module:
            raise _missing(f"{module.__name__}.{name}, called by {caller.__name__}")
    return {(module, name) for module, name, _, _ in kernels}


def encode_structure(nested):
    """TensorFlow's `nested_structure_coder.encode_structure` (a `StructuredValue` proto of
    a nest of specs), which TF-Agents' `tensor_spec.to_pbtxt_file` writes the policy specs
    with; TensorFlow exports it only under `tf.__internal__`."""
    encode = getattr(getattr(getattr(tf, "__internal__", None), "saved_model", None),
                     "encode_structure", None)
    if not callable(encode):
        raise _missing("tf.__internal__.saved_model.encode_structure")
    return encode(nested)


def optimization_barrier():
    """TensorFlow's `xla.optimization_barrier(*tensors)` (XLA's `opt-barrier`: its inputs
    are computed into buffers before any reader, never fused into one); TensorFlow exports
    it only from `tensorflow.compiler.tf2xla.python.xla`."""
    try:
        from tensorflow.compiler.tf2xla.python import xla
    except ImportError:
        raise _missing("tensorflow.compiler.tf2xla.python.xla") from None
    if not callable(getattr(xla, "optimization_barrier", None)):
        raise _missing("tensorflow.compiler.tf2xla.python.xla.optimization_barrier")
    return xla.optimization_barrier


def function_call_options():
    """TensorFlow's eager context and its `FunctionCallOptions` class: every eager call of
    a `tf.function` passes the calling thread's `context().function_call_options` (the
    `ConfigProto` grappler optimizes the function with) as the call's attributes; TensorFlow
    exports neither."""
    try:
        from tensorflow.python.eager import context
    except ImportError:
        raise _missing("tensorflow.python.eager.context") from None
    options_class = getattr(context, "FunctionCallOptions", None)
    if not isinstance(getattr(type(context.context()), "function_call_options", None),
                      property) or options_class is None:
        raise _missing("tensorflow.python.eager.context.Context.function_call_options")
    return context.context(), options_class
