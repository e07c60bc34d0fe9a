"""TFLite conversion of an adaptive SavedModel, and the built-in kernels it traces from.

`tf.lite.Interpreter` of the `tensorflow` package links no TensorFlow (Flex) kernels, so
the gradient ops of an inner loop that have no built-in TFLite kernel are traced from
built-in ones while `keras_meta.export` traces the adaptation (`_builtin_gradients`), and
`to_tflite` converts the SavedModel's signatures with built-in ops only.
"""

import contextlib
import functools
import tempfile

import tensorflow as tf

from keras_meta import _compat
from keras_meta._validation import check_bool

__all__ = ["to_tflite"]


def _broadcast_gradient_args(s0, s1, name=None):
    """`BroadcastGradientArgs` from TFLite built-in ops: the axes each operand was
    broadcast along (axes where both are 1 may be listed or not: summing over them changes
    nothing)."""
    del name
    rank = tf.maximum(tf.size(s0), tf.size(s1))
    padded = [tf.concat([tf.ones([rank - tf.size(s)], s.dtype), s], 0) for s in (s0, s1)]
    axes = tf.range(rank, dtype=s0.dtype)
    return tuple(tf.boolean_mask(axes, (mine == 1) & (other != 1))
                 for mine, other in (padded, padded[::-1]))


def _relu_grad(gradients, features, name=None):
    """`ReluGrad` from TFLite built-in ops (the same values)."""
    del name
    return tf.where(features > 0, gradients, tf.zeros_like(gradients))


def _static_filter_shape(filter_sizes):
    """The `[kh, kw, in, out]` that `filter_sizes` holds, if known when tracing.

    `_Conv2DGrad` passes the filter's `ShapeN` output, which constant folding does not
    reach: its static shape is read from the filter itself.
    """
    value = tf.get_static_value(filter_sizes)
    if value is None and getattr(filter_sizes, "op", None) is not None and (
            filter_sizes.op.type == "ShapeN"):
        value = filter_sizes.op.inputs[filter_sizes.value_index].shape.as_list()
    return None if value is None or None in list(value) else [int(v) for v in value]


def _conv2d_backprop_filter(input, filter_sizes, out_backprop, strides, padding,
                            use_cudnn_on_gpu=True, explicit_paddings=(), data_format="NHWC",
                            dilations=(1, 1, 1, 1), name=None, original=None):
    """`Conv2DBackpropFilter` from TFLite built-in ops, for NHWC inputs of known height and
    width, `"SAME"`/`"VALID"` padding, any strides and no dilation (other cases go to
    `original`, TensorFlow's op):

    `dW[i, j, c, o] = sum_{n, h, w} x_pad[n, h * s_h + i, w * s_w + j, c] * dy[n, h, w, o]`,
    one strided slice of the padded input per filter tap, stacked on the channel axis
    (`[n, h, w, kh * kw * in]`), times `dy` in one matrix product: the same sums as
    TensorFlow's kernel, in another order (float rounding only).
    """
    shape = _static_filter_shape(filter_sizes)
    spatial = input.shape[1:3].as_list() + out_backprop.shape[1:3].as_list()
    if (data_format not in ("NHWC", b"NHWC") or padding not in ("SAME", "VALID", b"SAME", b"VALID")
            or list(dilations) != [1, 1, 1, 1] or shape is None or None in spatial):
        return original(input, filter_sizes, out_backprop, strides, padding,
                        use_cudnn_on_gpu=use_cudnn_on_gpu, explicit_paddings=explicit_paddings,
                        data_format=data_format, dilations=dilations, name=name)
    kh, kw, channels, filters = shape
    height, width, out_h, out_w = spatial
    stride_h, stride_w = strides[1], strides[2]
    if padding in ("SAME", b"SAME"):
        # TensorFlow's SAME padding: the odd pixel goes after.
        pad_h = max((out_h - 1) * stride_h + kh - height, 0)
        pad_w = max((out_w - 1) * stride_w + kw - width, 0)
        input = tf.pad(input, [[0, 0], [pad_h // 2, pad_h - pad_h // 2],
                               [pad_w // 2, pad_w - pad_w // 2], [0, 0]])
    taps = [input[:, i:i + (out_h - 1) * stride_h + 1:stride_h,
                  j:j + (out_w - 1) * stride_w + 1:stride_w, :]
            for i in range(kh) for j in range(kw)]
    patches = tf.reshape(tf.concat(taps, -1), [-1, kh * kw * channels])
    grad = tf.matmul(patches, tf.reshape(out_backprop, [-1, filters]), transpose_a=True)
    return tf.reshape(grad, shape)


def _softmax_cross_entropy_with_logits(features, labels, name=None):
    """`SoftmaxCrossEntropyWithLogits` from TFLite built-in ops: `(loss, backprop)`,
    `-sum(labels * log_softmax(features))` and `softmax(features) - labels`."""
    del name
    log_p = tf.nn.log_softmax(features)
    return -tf.reduce_sum(labels * log_p, -1), tf.exp(log_p) - labels


def _sparse_softmax_cross_entropy_with_logits(features, labels, name=None):
    """`SparseSoftmaxCrossEntropyWithLogits` from TFLite built-in ops, over one-hot labels
    (a label outside `[0, classes)` is an all-zero row: a zero loss, where TensorFlow's
    CPU kernel raises)."""
    return _softmax_cross_entropy_with_logits(
        features, tf.one_hot(labels, tf.shape(features)[-1], dtype=features.dtype), name)


# The TensorFlow ops only a TFLite export traces from built-in ones.
_TFLITE_TRACED = ("Conv2DBackpropFilter", "SoftmaxCrossEntropyWithLogits")

# By the name of the TensorFlow op function they replace: whether the replacement has the
# same values (else only rounding differs, and only the TFLite export uses it), and a
# factory of the replacement from the original.
_BUILTIN_KERNELS = {
    "broadcast_gradient_args": (True, lambda original: _broadcast_gradient_args),
    "relu_grad": (True, lambda original: _relu_grad),
    "conv2d_backprop_filter": (
        False, lambda original: functools.partial(_conv2d_backprop_filter, original=original)),
    "softmax_cross_entropy_with_logits": (
        False, lambda original: _softmax_cross_entropy_with_logits),
    "sparse_softmax_cross_entropy_with_logits": (
        False, lambda original: _sparse_softmax_cross_entropy_with_logits),
}


@contextlib.contextmanager
def _builtin_gradients(exact_only=True):
    """Gradients and losses traced without TensorFlow ops that TFLite has no built-in
    kernel for.

    `tf.lite.Interpreter` of the `tensorflow` package links no TensorFlow (Flex) kernels.
    Ops of the inner loop and its gradients that have none: `BroadcastGradientArgs` (where
    both operands of a broadcasting op have a free shots axis, TensorFlow asks it for the
    reduction axes at run time), `ReluGrad`, a convolution's filter gradient
    `Conv2DBackpropFilter` and the (sparse) softmax cross-entropy losses. While the export
    traces, the registered gradients and `tf.nn` losses build them from built-in ops
    instead: with the same values for the first two, and, only when `exact_only` is False
    (the TFLite export), the same sums in another order for the others.

    Args:
        exact_only: Replace only the ops whose replacements have the same values.
    """
    kernels = [(module, name) for module, name in _compat.gradient_kernels()
               if _BUILTIN_KERNELS[name][0] or not exact_only]
    originals = {(module, name): getattr(module, name) for module, name in kernels}
    try:
        for (module, name), original in originals.items():
            setattr(module, name, _BUILTIN_KERNELS[name][1](original))
        yield
    finally:
        for (module, name), original in originals.items():
            setattr(module, name, original)


def to_tflite(saved_model_dir, path, select_tf_ops=False):
    """Converts an adaptive SavedModel's signatures to one TFLite model file.

    Built-in TFLite ops only by default: `tf.lite.Interpreter` of the `tensorflow`
    package (2.21) links no TensorFlow (Flex) kernels. The exported inner loop converts to
    built-in ops for dense and convolutional models (`Conv2D` with `"same"`/`"valid"`
    padding, any strides, no dilation; ReLU, tanh, BatchNormalization, Flatten, Dense)
    with an MSE or (sparse) softmax cross-entropy loss: `keras_meta.export.export_adaptive`
    traces the gradient ops without a built-in kernel from built-in ones
    (`BroadcastGradientArgs`, `ReluGrad`, and, with `format="tflite"`, a convolution's
    filter gradient as strided slices and one matrix product and the softmax
    cross-entropies from `log_softmax`; a convolution's input gradient is TFLite's
    `TRANSPOSE_CONV`). A SavedModel written with `format="saved_model"` keeps TensorFlow's
    filter-gradient and cross-entropy kernels (the ops of in-Python adaptation), so
    converting it here is refused for such a model.
    An op that has no built-in kernel (e.g. max pooling's gradient `MaxPoolGrad`, a dilated
    convolution's filter gradient) is refused, naming it, unless `select_tf_ops=True` (for
    a runtime that links the Flex delegate). Run a signature with
    `tf.lite.Interpreter(model_path=path).get_signature_runner("adapt_and_serve")`.
    The run-time checks on `steps` are dropped by the converter: a `steps` above
    `max_steps` takes `max_steps` steps.

    Args:
        saved_model_dir: An adaptive SavedModel (`keras_meta.export.export_adaptive`).
        path: The `.tflite` file to write.
        select_tf_ops: Allow TensorFlow ops without a built-in kernel (`SELECT_TF_OPS`).

    Returns:
        The path written.

    Raises:
        ValueError: If the converter refuses the model (the message names the op).
        TypeError: If `select_tf_ops` is not a bool.
    """
    check_bool(select_tf_ops, "select_tf_ops")
    signatures = ("adapt", "serve", "serve_meta", "adapt_and_serve")
    with tempfile.TemporaryDirectory() as wrapped:
        # The converter takes a root object with a `serve` attribute for a Keras
        # `model.export` artifact and converts only that endpoint: re-saved under a root
        # without it, every signature is converted.
        loaded = tf.saved_model.load(str(saved_model_dir))
        root = tf.Module()
        root.adaptive = loaded
        tf.saved_model.save(root, wrapped, signatures={k: loaded.signatures[k]
                                                        for k in signatures})
        converter = tf.lite.TFLiteConverter.from_saved_model(wrapped,
                                                             signature_keys=list(signatures))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
            [tf.lite.OpsSet.SELECT_TF_OPS] if select_tf_ops else [])
        converter.experimental_enable_resource_variables = True
        try:
            flat = converter.convert()
        except Exception as error:  # The converter raises its own ConverterError.
            hint = ("" if select_tf_ops or not any(op in str(error) for op in _TFLITE_TRACED)
                    else " (a SavedModel export keeps TensorFlow's kernel for it: export with "
                    "`export_adaptive(..., format='tflite')` to trace it from built-in ops)")
            raise ValueError(
                "Expected an adaptive SavedModel whose ops TFLite supports (built-in ops"
                f"{'' if select_tf_ops else ' only; select_tf_ops=False'}){hint}. Received: "
                f"saved_model_dir={str(saved_model_dir)!r}, which fails with: {error}"
            ) from error
    with open(path, "wb") as f:
        f.write(flat)
    return path
