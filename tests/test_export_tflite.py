"""`keras_meta.export_tflite`: the built-in replacements of the TensorFlow kernels an
inner loop's gradients need, and the TFLite interpreter running an adaptive export as the
learner adapts in Python."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta import export_tflite


@pytest.mark.parametrize("shapes", [([5, 1], [5, 1]), ([5, 8], [8]), ([1, 3], [4, 1]),
                                    ([2, 1, 3], [3]), ([], [4, 2]), ([1], [1])])
def test_builtin_broadcast_gradient_args_reduce_as_tensorflow(shapes):
    # Axes where both operands are 1 may differ; summing over them changes nothing, so
    # compare the reduced gradients, as the broadcasting ops' gradients use them.
    s0, s1 = (tf.constant(s, tf.int32) for s in shapes)
    grad = tf.random.stateless_normal(tf.broadcast_dynamic_shape(s0, s1), seed=(1, 2))
    for ours, theirs, shape in zip(export_tflite._broadcast_gradient_args(s0, s1),
                                   tf.raw_ops.BroadcastGradientArgs(s0=s0, s1=s1),
                                   (s0, s1)):
        np.testing.assert_array_equal(
            tf.reshape(tf.reduce_sum(grad, ours, keepdims=True), shape),
            tf.reshape(tf.reduce_sum(grad, theirs, keepdims=True), shape))


def test_builtin_relu_grad_is_tensorflows():
    features = tf.constant([-1.0, 0.0, 2.0, -0.0, 3.0])
    grads = tf.constant([1.0, 2.0, 3.0, 4.0, -5.0])
    np.testing.assert_array_equal(export_tflite._relu_grad(grads, features),
                                  tf.raw_ops.ReluGrad(gradients=grads, features=features))


def _conv_body():
    # Both convolution gradients: the first layer's filter (stride 1, VALID), the second's
    # filter and input (stride 2, SAME: TRANSPOSE_CONV).
    return [keras.Input((7, 7, 2)), keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Conv2D(3, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten()]


def _tflite_case(name, conv):
    """A learner, its support label spec and `(support_x, support_y, x)`: the dense model
    regresses (MSE), the conv model classifies (sparse softmax cross-entropy), 3 ways."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    shape = (7, 7, 2) if conv else (2,)
    sx, x = rng.normal(size=(6, *shape)), rng.normal(size=(4, *shape))
    classes = (np.repeat(np.arange(3), 2).astype(np.int32), tf.TensorSpec([None], tf.int32))
    if name == "protonet":
        body = (_conv_body() if conv else
                [keras.Input(shape), keras.layers.Dense(8, activation="relu")])
        learner = km.ProtoNet(keras.Sequential([*body, keras.layers.Dense(4)]))
        learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return learner, classes[1], (sx, classes[0], x)
    body = (_conv_body() if conv else
            [keras.Input(shape), keras.layers.Dense(8, activation="relu")])
    model = keras.Sequential([*body, keras.layers.Dense(3 if conv else 1)])
    learner = {"maml": km.MAML, "meta_sgd": km.MetaSGD}[name](model, inner_lr=0.05)
    learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
                    if conv else "mse")
    # Learned rates far from their initial values (tests/test_export.py's `randomize`).
    rates = np.random.default_rng(1)
    for v in learner.extra_meta_variables():
        v.assign(rates.uniform(0.01, 0.2, v.shape).astype(v.dtype))
    if conv:
        return learner, classes[1], (sx, classes[0], x)
    return learner, tf.TensorSpec([None, 1], tf.float32), (sx, rng.normal(size=(6, 1)), x)


@pytest.mark.parametrize("name,conv", [
    # One conv case by default (each conversion takes ~10 s); the rest under -m slow.
    pytest.param(name, conv, id=f"{name}-{'conv' if conv else 'dense'}",
                 marks=() if (name, conv) == ("maml", True) else pytest.mark.slow)
    for name in ("maml", "meta_sgd", "protonet") for conv in (False, True)])
def test_tflite_interpreter_adapts_as_the_learner(tmp_path, name, conv):
    learner, spec, data = _tflite_case(name, conv)
    sx, sy, x = (np.asarray(a, np.float32 if a.dtype.kind == "f" else a.dtype) for a in data)
    path = tmp_path / "model.tflite"
    steps = {} if name == "protonet" else {"steps": 1, "max_steps": 2}
    learner.export_adaptive(path, support_y_spec=spec, format="tflite", **steps)
    interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("adapt_and_serve")
    adapt, serve = (interpreter.get_signature_runner(k) for k in ("adapt", "serve"))
    for count in (0, 1, 2) if steps else (None,):
        extra = {} if count is None else {"steps": np.array(count, np.int32)}
        expected = learner.adapt(sx, sy, steps=count)(x).numpy()
        served = serve(x=x, **adapt(support_x=sx, support_y=sy, **extra))["predictions"]
        for predictions in (runner(support_x=sx, support_y=sy, x=x, **extra)["predictions"],
                            served):
            np.testing.assert_allclose(predictions[:, :expected.shape[1]], expected,
                                       rtol=1e-5, atol=1e-5)
    if steps:
        # The comparison would pass for an `adapt` that did nothing.
        assert np.abs(learner.adapt(sx, sy, steps=2)(x).numpy()
                      - learner.adapt(sx, sy, steps=0)(x).numpy()).max() > 1e-3
    np.testing.assert_allclose(
        interpreter.get_signature_runner("serve_meta")(x=x)["predictions"],
        learner.model(x, training=False).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_tflite_refuses_an_inner_loop_op_without_a_builtin_kernel(tmp_path):
    # Max pooling's gradient has no built-in kernel and no replacement: refused, named.
    keras.utils.set_random_seed(0)
    learner = km.MAML(keras.Sequential([
        keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, activation="relu"),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(1)]))
    learner.compile(loss="mse")
    path = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match="MaxPoolGrad"):
        learner.export_adaptive(path, support_y_spec=tf.TensorSpec([None, 1], tf.float32),
                                format="tflite")
    assert not path.exists()


@pytest.mark.slow
def test_tflite_conversion_of_a_saved_model_export_names_the_op(tmp_path):
    # A SavedModel export keeps TensorFlow's filter-gradient kernel (the very ops of
    # in-Python adaptation); converting it is refused with a pointer to format="tflite".
    keras.utils.set_random_seed(0)
    learner = km.MAML(keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Conv2D(2, 3),
                                        keras.layers.Flatten(), keras.layers.Dense(1)]))
    learner.compile(loss="mse")
    learner.export_adaptive(tmp_path / "adaptive",
                            support_y_spec=tf.TensorSpec([None, 1], tf.float32))
    with pytest.raises(ValueError, match="format='tflite'") as refused:
        export_tflite.to_tflite(tmp_path / "adaptive", tmp_path / "model.tflite")
    assert "Conv2DBackpropFilter" in str(refused.value)
    assert not (tmp_path / "model.tflite").exists()


def _filter_gradients(conv, exact_only):
    """The filter gradient of `sum(conv(x, w) * dy)`, traced under `_builtin_gradients`."""
    @tf.function
    def gradient(x, w, dy):
        # The registered gradients run at `tape.gradient`: inside the context.
        with export_tflite._builtin_gradients(exact_only=exact_only):
            with tf.GradientTape() as tape:
                tape.watch(w)
                y = conv(x, w)
            return tape.gradient(y, w, output_gradients=dy)
    return gradient


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (1, 2), (3, 2)])
def test_builtin_conv2d_filter_gradient_is_tensorflows(strides, padding):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, 8, 7, 2)))
    w = tf.constant(rng.normal(size=(3, 2, 2, 4)))

    def conv(x, w):
        return tf.nn.conv2d(x, w, strides=[1, *strides, 1], padding=padding)

    dy = tf.constant(rng.normal(size=conv(x, w).shape))
    ours, theirs = (_filter_gradients(conv, exact_only) for exact_only in (False, True))
    np.testing.assert_allclose(ours(x, w, dy), theirs(x, w, dy), rtol=1e-12, atol=1e-12)
    # The replacement ran: no TensorFlow filter-gradient op is left in its graph.
    ops = {op.type for op in ours.get_concrete_function(x, w, dy).graph.get_operations()}
    assert "Conv2DBackpropFilter" not in ops and "MatMul" in ops


def test_builtin_conv2d_filter_gradient_falls_back_to_tensorflow():
    # Explicit padding has no replacement: TensorFlow's op stays (no built-in TFLite kernel).
    def conv(x, w):
        return tf.nn.conv2d(x, w, strides=1, padding=[[0, 0], [1, 0], [0, 2], [0, 0]])

    rng = np.random.default_rng(1)
    x, w = tf.constant(rng.normal(size=(2, 8, 8, 2))), tf.constant(rng.normal(size=(3, 3, 2, 3)))
    dy = tf.constant(rng.normal(size=conv(x, w).shape))
    ours = _filter_gradients(conv, exact_only=False)
    np.testing.assert_array_equal(ours(x, w, dy), _filter_gradients(conv, True)(x, w, dy))
    ops = {op.type for op in ours.get_concrete_function(x, w, dy).graph.get_operations()}
    assert "Conv2DBackpropFilter" in ops


def test_builtin_softmax_cross_entropies_are_tensorflows():
    rng = np.random.default_rng(2)
    logits = tf.constant(rng.normal(size=(5, 4)) * 3)
    labels = tf.constant([0, 3, 1, 1, 2])
    dense = tf.one_hot(labels, 4, dtype=tf.float64) * 0.7 + 0.075
    for ours, theirs, target in (
            (export_tflite._sparse_softmax_cross_entropy_with_logits,
             tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits, labels),
            (export_tflite._softmax_cross_entropy_with_logits,
             tf.raw_ops.SoftmaxCrossEntropyWithLogits, dense)):
        for a, b in zip(ours(logits, target), theirs(features=logits, labels=target)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
