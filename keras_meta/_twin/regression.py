"""NumPy twin of csrc/regression.cc."""

import numpy as np

from keras_meta._twin.random import stream_uniform

_PARAM_STREAM, _INPUT_STREAM = 0, 1


def _lerp(low, high, unit):
    low, high = np.float32(low), np.float32(high)
    return low + (high - low) * unit


def _inputs(meta_batch_size, num_points, seed, x_range):
    tasks = np.arange(meta_batch_size, dtype=np.uint32)[:, None]
    points = np.arange(num_points, dtype=np.uint32)[None, :]
    return _lerp(*x_range, stream_uniform(seed, tasks, _INPUT_STREAM, points))


def _params(meta_batch_size, seed, ranges):
    tasks = np.arange(meta_batch_size, dtype=np.uint32)
    return np.stack(
        [_lerp(*r, stream_uniform(seed, tasks, _PARAM_STREAM, k)) for k, r in enumerate(ranges)],
        axis=-1,
    )


def sinusoid(meta_batch_size, num_points, seed, amplitude=(0.1, 5.0), phase=(0.0, np.pi),
             x_range=(-5.0, 5.0)):
    params = _params(meta_batch_size, seed, [amplitude, phase])
    x = _inputs(meta_batch_size, num_points, seed, x_range)
    amp = params[:, :1].astype(np.float64)
    y = (amp * np.sin(x.astype(np.float64) - params[:, 1:].astype(np.float64))).astype(np.float32)
    return params, x[..., None], y[..., None]
