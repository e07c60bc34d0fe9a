"""MAML through Keras LSTM/GRU layers: exact second-order meta-gradients, and never the
cuDNN recurrent kernels (no second derivative): the learner's meta-step runs LSTM/GRU
layers with their generic kernel.

Checked on CPU by recording the calls of Keras's fused-kernel entry points
(`keras.src.backend.lstm`/`gru`, which the layers call to try cuDNN and which raise
NotImplementedError where it cannot run): a plain call of the layer reaches them, the
meta-step does not.
"""

import keras
import numpy as np
import pytest
from keras.src import backend

import keras_meta as km

from test_meta_gradients import directional_check, meta_gradient


@pytest.mark.parametrize("layer", ["LSTM", "GRU"])
def test_the_meta_step_uses_the_generic_recurrent_kernel(layer, monkeypatch):
    calls = []
    original = getattr(backend, layer.lower())

    def spy(*args, **kwargs):
        calls.append(layer)
        return original(*args, **kwargs)

    monkeypatch.setattr(backend, layer.lower(), spy)
    keras.utils.set_random_seed(0)
    recurrent = getattr(keras.layers, layer)(3)
    model = keras.Sequential([keras.Input((4, 1)), recurrent, keras.layers.Dense(1)])
    model(keras.ops.zeros((1, 4, 1)))
    assert calls, "a plain call tries the fused kernel: the check can fail"
    calls.clear()
    learner = km.MAML(model, inner_lr=0.1, inner_steps=1, first_order=False)
    learner.compile(jit_compile=False, loss="mse")
    rng = keras.random.SeedGenerator(1)
    x = keras.random.normal((2, 6, 4, 1), seed=rng)
    y = keras.random.normal((2, 6, 1), seed=rng)
    learner.fit(km.tasks.TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:]), meta_batch_size=2,
                epochs=1, verbose=0)
    assert calls == []
    assert recurrent.use_cudnn == "auto"  # the layer's own setting is back


@pytest.mark.parametrize("layer", ["LSTM", pytest.param("GRU", marks=pytest.mark.slow)])
def test_second_order_meta_gradient_through_recurrent_layers_is_exact(layer):
    """float64 central finite differences of the query objective along random directions
    (the shared check of tests/algorithms/test_meta_gradients.py); every mode a recurrent
    model runs in (its loop cannot be vectorized) gives the same meta-gradient."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3, 1), dtype="float64"),
                              getattr(keras.layers, layer)(2, dtype="float64"),
                              keras.layers.Dense(1, dtype="float64")])
    maml = km.MAML(model, inner_lr=0.3, inner_steps=2, first_order=False)
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2, 8, 3, 1)), rng.normal(size=(2, 8, 1))
    batch = km.tasks.TaskBatch(x[:, :4], y[:, :4], x[:, 4:], y[:, 4:])
    auto, numeric = directional_check(maml, batch, directions=3)
    np.testing.assert_allclose(auto, numeric, rtol=1e-6, atol=1e-9)
    reference = meta_gradient(maml, batch, "function")
    first_order = meta_gradient(km.FOMAML(model, inner_lr=0.3, inner_steps=2), batch)
    assert np.abs(reference - first_order).max() > 1e-4  # second order matters here
    for mode in ("eager", "xla"):
        np.testing.assert_allclose(meta_gradient(maml, batch, mode), reference, rtol=1e-9,
                                   atol=1e-12)
