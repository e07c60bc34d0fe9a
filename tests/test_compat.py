"""Every private Keras/TF symbol keras_meta relies on still exists with the shape it uses.

A TensorFlow or Keras upgrade that removes or changes one fails here by name, instead of
silently changing meta-gradients (`_compute_moments`), XLA compilation (`_pfor_impl`) or
resume (`_training_metadata_path`).
"""

import inspect

import keras
import pytest
import tensorflow as tf

from keras_meta import _compat


def test_keras_batch_norm_moments_hook():
    nn = _compat.keras_tf_nn()
    assert list(inspect.signature(nn._compute_moments).parameters)[:3] == ["x", "axes", "keepdims"]
    # BatchNormalization reaches the hook through keras.ops.moments.
    x = tf.constant([[1.0, 2.0], [3.0, 6.0]])
    mean, variance = nn._compute_moments(x, [0], False)
    assert mean.numpy().tolist() == [2.0, 4.0] and variance.numpy().tolist() == [1.0, 4.0]


def test_pfor_internals():
    pfor = _compat.pfor()

    @tf.function(jit_compile=True)
    def doubled():
        assert pfor._is_under_xla_context()
        return pfor._pfor_impl(lambda i: tf.cast(i, tf.float32) * 2.0, 3,
                               fallback_to_while_loop=True, parallel_iterations=None)

    assert doubled().numpy().tolist() == [0.0, 2.0, 4.0]
    assert pfor._is_under_xla_context() is False


def test_gradient_kernels():
    # The registered gradients reach these ops through module attributes (export_tflite.py
    # swaps them while tracing adaptive exports).
    kernels = dict((name, module) for module, name in _compat.gradient_kernels())
    r0, r1 = kernels["broadcast_gradient_args"].broadcast_gradient_args(
        tf.constant([5, 1]), tf.constant([1]))
    assert r0.numpy().tolist() == [1] and r1.numpy().tolist() == [0, 1]
    grad = kernels["relu_grad"].relu_grad(tf.constant([2.0, 3.0]), tf.constant([-1.0, 1.0]))
    assert grad.numpy().tolist() == [0.0, 3.0]


def test_flatten_layers():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    names = [type(layer).__name__ for layer in _compat.flatten_layers(model)]
    assert names == ["InputLayer", "Dense", "Dense"]


def test_backup_metadata_path(tmp_path):
    callback = keras.callbacks.BackupAndRestore(str(tmp_path))
    assert _compat.backup_metadata_path(callback).startswith(str(tmp_path))


def test_a_missing_symbol_fails_loudly(monkeypatch):
    from keras.src.backend.tensorflow import nn

    monkeypatch.delattr(nn, "_compute_moments")
    with pytest.raises(RuntimeError, match=r"_compute_moments.*Expected TensorFlow 2.21"):
        _compat.keras_tf_nn()


def test_encode_structure():
    # rl/policy_export.py writes TF-Agents' policy_specs.pbtxt with it.
    spec = {"weights_0": tf.TensorSpec([3], tf.float32, name="weights_0")}
    proto = _compat.encode_structure(spec)
    assert tf.__internal__.saved_model.decode_proto(proto) == spec


def test_optimization_barrier():
    # GraphSampler.sample_step keeps its draw out of XLA's fusions with it.
    barrier = _compat.optimization_barrier()
    doubled = tf.function(lambda x: barrier(x * 2.0, x)[0], jit_compile=True)
    assert doubled(tf.constant([1.0, 3.0])).numpy().tolist() == [2.0, 6.0]


def test_function_call_options():
    # execution.without_addn_scheduling swaps the calling thread's options around a call.
    context, options_class = _compat.function_call_options()
    options = context.function_call_options
    config = tf.compat.v1.ConfigProto.FromString(options.config_proto_serialized)
    copy = options_class(options.executor_type, config)
    assert copy.config_proto_serialized == config.SerializeToString(deterministic=True)
    assert "config_proto" in copy.as_attrs()
