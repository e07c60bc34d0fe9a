"""Philox4x32-10 in TensorFlow ops, bit for bit the generator of csrc/philox.h.

The C++ core and its NumPy twin (`keras_meta._twin.random`) draw every task from a
Philox counter stream keyed by a 64-bit seed; these ops draw the same stream inside a
graph, so a task family with a TF twin is sampled inside the compiled training program
(no host round trip) and still yields the tasks the C++ sampler would. Only uint32/uint64
integer arithmetic is used (the 32x32 -> 64-bit products by a uint64 multiply), which XLA
compiles on every backend.

A 64-bit seed travels as a `(low, high)` pair of uint32 tensors, because the step seeds
are derived in the graph from the training step counter.
"""

import numpy as np
import tensorflow as tf

_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_LOW32 = 0xFFFFFFFF


def _u32(value):
    return tf.constant(value, tf.uint32)


def _mul_hi_lo(multiplier, value):
    """The high and low uint32 halves of the 64-bit product `multiplier * value`."""
    product = tf.cast(value, tf.uint64) * tf.constant(multiplier, tf.uint64)
    high = tf.cast(tf.bitwise.right_shift(product, tf.constant(32, tf.uint64)), tf.uint32)
    low = tf.cast(tf.bitwise.bitwise_and(product, tf.constant(_LOW32, tf.uint64)), tf.uint32)
    return high, low


def split_seed(seed):
    """A Python 64-bit seed as the `(low, high)` pair of uint32 constants."""
    seed = int(seed) % 2**64
    return _u32(seed & _LOW32), _u32(seed >> 32)


def add_seed(seed, offset):
    """`(seed + offset) mod 2**64` for a `(low, high)` seed and a Python int offset."""
    low, high = seed
    offset = int(offset) % 2**64
    new_low = low + _u32(offset & _LOW32)
    carry = tf.cast(new_low < low, tf.uint32)
    return new_low, high + _u32(offset >> 32) + carry


def philox4x32(counter, seed):
    """Philox4x32-10 of the counter words `(c0, c1, c2, c3)` (uint32 tensors that
    broadcast together) under the `(low, high)` seed; returns the 4 output words."""
    c0, c1, c2, c3 = counter
    k0, k1 = seed
    for _ in range(10):
        high0, low0 = _mul_hi_lo(_M0, c0)
        high1, low1 = _mul_hi_lo(_M1, c2)
        c0, c1, c2, c3 = (tf.bitwise.bitwise_xor(tf.bitwise.bitwise_xor(high1, c1), k0), low1,
                          tf.bitwise.bitwise_xor(tf.bitwise.bitwise_xor(high0, c3), k1), low0)
        k0, k1 = k0 + _u32(_W0), k1 + _u32(_W1)
    return c0, c1, c2, c3


def unit_numerator(bits):
    """The top 24 bits: the uniform draw is `unit_numerator(bits) / 2**24`."""
    return tf.bitwise.right_shift(bits, _u32(8))


def to_unit_float(bits):
    """Uniform float32 in [0, 1) from the top 24 bits (exact in float32, as in C++)."""
    return tf.cast(unit_numerator(bits), tf.float32) * tf.constant(np.float32(1.0 / 16777216.0))


def stream_bits(seed, items, stream, count):
    """Draws `0 .. count - 1` of stream `stream` for each item: uint32 `[items, count]`.

    Draw k of an item is lane k % 4 of the block with counter (k / 4, item, stream, 0),
    as `stream_bits` in csrc/philox.h.

    Args:
        seed: `(low, high)` uint32 seed.
        items: Number of items (tasks), a Python int.
        stream: The stream number, a Python int.
        count: Draws per item, a Python int.
    """
    blocks = -(-count // 4)
    # int32 ranges cast: TensorFlow has no uint32 Range kernel outside XLA.
    item = tf.cast(tf.range(items), tf.uint32)[:, None]
    block = tf.cast(tf.range(blocks), tf.uint32)[None, :]
    zeros = tf.zeros_like(item + block)
    lanes = philox4x32((block + zeros, item + zeros, zeros + _u32(stream), zeros), seed)
    return tf.reshape(tf.stack(lanes, axis=-1), [items, 4 * blocks])[:, :count]


def stream_uniform(seed, items, stream, count):
    """`to_unit_float` of `stream_bits`: float32 `[items, count]` in [0, 1)."""
    return to_unit_float(stream_bits(seed, items, stream, count))


def derive_seed(seed, step):
    """`derive_seed(seed, step)` of csrc/philox.h (the seed of training step `step`).

    Args:
        seed: The run seed, a Python int.
        step: The step, an int64 scalar tensor (the learner's step counter).

    Returns:
        The step seed as a `(low, high)` pair of uint32 scalars.
    """
    step = tf.bitcast(tf.cast(step, tf.int64), tf.uint64)
    low = tf.cast(tf.bitwise.bitwise_and(step, tf.constant(_LOW32, tf.uint64)), tf.uint32)
    high = tf.cast(tf.bitwise.right_shift(step, tf.constant(32, tf.uint64)), tf.uint32)
    block = philox4x32((low, high, _u32(0xFFFFFFFF), _u32(0x5EED)), split_seed(seed))
    return block[0], block[1]
