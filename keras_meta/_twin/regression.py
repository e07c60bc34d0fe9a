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


def linear(meta_batch_size, num_points, seed, slope=(-3.0, 3.0), intercept=(-3.0, 3.0),
           x_range=(-5.0, 5.0)):
    params = _params(meta_batch_size, seed, [slope, intercept])
    x = _inputs(meta_batch_size, num_points, seed, x_range)
    p = params.astype(np.float64)
    y = (p[:, :1] * x.astype(np.float64) + p[:, 1:]).astype(np.float32)
    return params, x[..., None], y[..., None]


def polynomial(meta_batch_size, num_points, seed, degree=3, coefficients=(-1.0, 1.0),
               x_range=(-2.0, 2.0)):
    params = _params(meta_batch_size, seed, [coefficients] * (degree + 1))
    x = _inputs(meta_batch_size, num_points, seed, x_range).astype(np.float64)
    p = params.astype(np.float64)
    acc = np.broadcast_to(p[:, degree:degree + 1], x.shape)
    for i in range(degree - 1, -1, -1):
        acc = acc * x + p[:, i:i + 1]
    return params, x.astype(np.float32)[..., None], acc.astype(np.float32)[..., None]


def step_function(meta_batch_size, num_points, seed, location=(-2.5, 2.5), levels=(-1.0, 1.0),
                  x_range=(-5.0, 5.0)):
    params = _params(meta_batch_size, seed, [location, levels, levels])
    x = _inputs(meta_batch_size, num_points, seed, x_range)
    y = np.where(x < params[:, :1], params[:, 1:2], params[:, 2:3])
    return params, x[..., None], y[..., None]
