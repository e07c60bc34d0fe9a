"""NumPy twin of csrc/philox.h."""

import numpy as np

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
_LOW32 = np.uint64(0xFFFFFFFF)


def philox4x32(counters, seed):
    """Philox4x32-10 of uint32 counters shaped [..., 4] under a 64-bit seed."""
    c = [np.asarray(counters[..., i], dtype=np.uint64) for i in range(4)]
    seed = int(seed)
    k0 = np.uint32(seed & 0xFFFFFFFF)
    k1 = np.uint32((seed >> 32) & 0xFFFFFFFF)
    with np.errstate(over="ignore"):
        for _ in range(10):
            p0 = _M0 * c[0]
            p1 = _M1 * c[2]
            c = [
                (p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0),
                p1 & _LOW32,
                (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1),
                p0 & _LOW32,
            ]
            k0 = np.uint32(k0 + _W0)
            k1 = np.uint32(k1 + _W1)
    return np.stack(c, axis=-1).astype(np.uint32)


def stream_bits(seed, item, stream, k):
    """uint32 draw number `k` (broadcast) of (seed, item, stream)."""
    item, k = np.broadcast_arrays(np.asarray(item, np.uint32), np.asarray(k, np.uint32))
    counters = np.stack(
        [k // 4, item, np.full_like(k, stream), np.zeros_like(k)], axis=-1
    )
    blocks = philox4x32(counters, seed)
    return np.take_along_axis(blocks, (k % 4)[..., None].astype(np.intp), axis=-1)[..., 0]


def to_unit_float(bits):
    return (np.asarray(bits, np.uint32) >> np.uint32(8)).astype(np.float32) * np.float32(
        1.0 / 16777216.0
    )


def stream_uniform(seed, item, stream, k):
    return to_unit_float(stream_bits(seed, item, stream, k))


def philox_uniform(seed, item, stream, count):
    return stream_uniform(seed, item, stream, np.arange(count, dtype=np.uint32))


def derive_seed(seed, step):
    step = int(step)
    counter = np.array(
        [[step & 0xFFFFFFFF, (step >> 32) & 0xFFFFFFFF, 0xFFFFFFFF, 0x5EED]], np.uint32
    )
    block = philox4x32(counter, seed)[0]
    return (int(block[1]) << 32) | int(block[0])
