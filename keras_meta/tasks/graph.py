"""TensorFlow-op twins of the C++ regression samplers, for sampling inside the graph.

`graph_sampler(tasks)` returns, for a built-in regression family (`Sinusoid`, `Linear`,
`Polynomial`, `StepFunction`), a function `sample(meta_batch_size, seed) -> TaskBatch`
of tensors that equals `tasks.sample(meta_batch_size, seed)` bit for bit, where `seed`
is a `(low, high)` uint32 pair (`keras_meta.ops.philox`). The trainer uses it to draw a
meta-step's tasks inside the compiled step, so under XLA a call of `steps_per_execution`
meta-steps is one program. Any other family (a subclass included: it may override
`sample`) gets `None` and keeps the NumPy/C++ path.

Bit-exactness rests on doing what csrc/regression.cc does, rounding where it rounds:
float32 `low + (high - low) * unit` (`_lerp`), targets evaluated in float64 and rounded
once to float32. Two float64 steps may differ from the C++ code in their last float64
bit under XLA (its `sin`, and a polynomial's Horner steps, which it may fuse into
multiply-adds); the rounding to float32 hides such a difference unless the float64 value
lies within one float64 ulp of a float32 rounding boundary (odds about 2**-29 a value).
The tests compare the bits on CPU, with and without XLA; `benchmarks/gpu_check.py`
compares them on a GPU.
"""

import numpy as np
import tensorflow as tf

from keras_meta.ops import philox
from keras_meta.tasks.base import TaskBatch
from keras_meta.tasks.regression import Linear, Polynomial, Sinusoid, StepFunction

_PARAM_STREAM, _INPUT_STREAM = 0, 1


def _lerp(value_range, bits):
    """float32 `low + (high - low) * unit` of csrc/regression.cc, rounded as it rounds.

    XLA fuses a multiply into the add that follows (one rounding instead of two, through
    float64 casts too), so the product is formed where no fusion can change it: the
    integer product of the draw's 24-bit numerator and the width's 24-bit significand,
    rounded once to float32 (the rounding of a float32 multiply), times a power of two
    (exact, so a fused add rounds as the plain one).
    """
    low, high = np.float32(value_range[0]), np.float32(value_range[1])
    fraction, exponent = np.frexp(high - low)
    significand = int(np.float64(fraction) * 2**24)  # width = significand * 2**(exponent - 24)
    product = tf.cast(tf.cast(philox.unit_numerator(bits), tf.int64) * significand, tf.float32)
    return tf.constant(low) + product * tf.constant(np.float32(2.0 ** (int(exponent) - 48)))


def _exact(value_range):
    """Whether `_lerp` reproduces the range's float32 arithmetic: a finite width whose
    power-of-two scale is a normal float32."""
    with np.errstate(over="ignore"):
        width = np.float32(value_range[1]) - np.float32(value_range[0])
    return bool(np.isfinite(width)) and (width == 0 or np.frexp(width)[1] - 48 >= -126)


def _params(seed, tasks, ranges):
    """Per-task parameters `[tasks, len(ranges)]`: draw k of the parameter stream in
    range k."""
    bits = philox.stream_bits(seed, tasks, _PARAM_STREAM, len(ranges))
    return tf.stack([_lerp(r, bits[:, k]) for k, r in enumerate(ranges)], axis=-1)


def _f64(value):
    return tf.cast(value, tf.float64)


def _sinusoid(family, p, x):
    return _f64(p[:, :1]) * tf.sin(_f64(x) - _f64(p[:, 1:2]))


def _linear(family, p, x):
    return _f64(p[:, :1]) * _f64(x) + _f64(p[:, 1:2])


def _polynomial(family, p, x):
    x, p = _f64(x), _f64(p)
    acc = tf.broadcast_to(p[:, family.degree:family.degree + 1], tf.shape(x))
    for i in range(family.degree - 1, -1, -1):
        acc = acc * x + p[:, i:i + 1]
    return acc


def _step(family, p, x):
    return tf.where(x < p[:, :1], p[:, 1:2], p[:, 2:3])


# family type: (its parameter ranges in draw order, y as a function of (family, params, x)).
_TWINS = {
    Sinusoid: (lambda f: [f.amplitude, f.phase], _sinusoid),
    Linear: (lambda f: [f.slope, f.intercept], _linear),
    Polynomial: (lambda f: [f.coefficients] * (f.degree + 1), _polynomial),
    StepFunction: (lambda f: [f.location, f.levels, f.levels], _step),
}


def graph_sampler(tasks):
    """The in-graph twin of `tasks.sample`, or None where the family has none.

    Args:
        tasks: A `TaskDistribution`.

    Returns:
        `sample(meta_batch_size, seed) -> TaskBatch` of float32 tensors (`meta_batch_size`
        a Python int, `seed` a `(low, high)` uint32 pair), or None.

    Example:

    >>> sample = graph_sampler(km.tasks.Sinusoid(shots=5, queries=5))
    >>> batch = sample(25, keras_meta.ops.philox.split_seed(7))  # == .sample(25, 7)
    """
    twin = _TWINS.get(type(tasks))
    if twin is None:
        return None
    ranges, value = twin
    if not all(_exact(r) for r in [*ranges(tasks), tasks.x_range]):
        return None

    def sample(meta_batch_size, seed):
        seed = philox.add_seed(seed, tasks._offset)  # the split's seed stream
        params = _params(seed, meta_batch_size, ranges(tasks))
        points = tasks.shots + tasks.queries
        x = _lerp(tasks.x_range,
                  philox.stream_bits(seed, meta_batch_size, _INPUT_STREAM, points))
        y = tf.cast(value(tasks, params, x), tf.float32)[..., None]
        x = x[..., None]
        s = tasks.shots
        return TaskBatch(x[:, :s], y[:, :s], x[:, s:], y[:, s:])

    return sample
