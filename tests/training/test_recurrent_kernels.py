"""Second-order meta-gradients never trace Keras's cuDNN recurrent kernels (no second
derivative): the learner's meta-step runs LSTM/GRU layers with their generic kernel.

Checked on CPU by recording the calls of Keras's fused-kernel entry points
(`keras.src.backend.lstm`/`gru`, which the layers call to try cuDNN and which raise
NotImplementedError where it cannot run): a plain call of the layer reaches them, the
meta-step does not.
"""

import keras
import pytest
from keras.src import backend

import keras_meta as km


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
