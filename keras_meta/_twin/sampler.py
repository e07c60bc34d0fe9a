"""NumPy twin of csrc/sampler.cc: the same episodes, bit for bit, from the same arguments.

Vectorised over the episodes of a batch; the only Python loops run over the steps of the
Fisher-Yates draws (ways, shots + queries, and the support/query sizes), each step
handling every episode at once. See csrc/sampler.cc for the stream layout.
"""

import numpy as np

from keras_meta._twin.random import stream_bits

_CLASS_STREAM, _EXAMPLE_STREAM, _SUPPORT_STREAM, _QUERY_STREAM = 0, 1, 2, 3


def _below(bits, n):
    """Uniform integer in [0, n) from uint32 `bits`: (bits * n) >> 32, as in C++."""
    return (bits.astype(np.uint64) * np.asarray(n, np.uint64)) >> np.uint64(32)


def _partial_shuffle(perm, n, bits):
    """First `bits.shape[-1]` steps of a forward Fisher-Yates shuffle of perm[..., :n], in place.

    Args:
        perm: Integer array [..., width]; each row holds at least `n` live entries.
        n: Live entries per row, broadcastable to perm.shape[:-1].
        bits: uint32 draws [..., steps], one per step.
    """
    n = np.asarray(n, np.int64)
    for t in range(bits.shape[-1]):
        r = (t + _below(bits[..., t], n - t).astype(np.int64))[..., None]
        at_t = perm[..., t].copy()
        perm[..., t] = np.take_along_axis(perm, r, axis=-1)[..., 0]
        np.put_along_axis(perm, r, at_t[..., None], axis=-1)


def _shuffled_order(seed, episodes, size, stream):
    """The support or query order of each episode: a full forward Fisher-Yates of range(size)."""
    order = np.broadcast_to(np.arange(size, dtype=np.int64), (episodes.shape[0], size)).copy()
    steps = np.arange(max(size - 1, 0), dtype=np.uint32)
    _partial_shuffle(order, size, stream_bits(seed, episodes, stream, steps[None, :]))
    return order


class EpisodeSampler:
    """Twin of `keras_meta._core.EpisodeSampler` (same constructor, no threads).

    Assumes arguments the C++ constructor accepts; it does not repeat the validation.
    """

    def __init__(self, images, labels, split, ways, shots, queries, rotations=False):
        self.images = images
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
        self.rotations = bool(rotations)
        labels = np.asarray(labels, np.int64)
        split = np.asarray(split, np.int64)
        self._members = np.argsort(labels, kind="stable")
        unique, starts, counts = np.unique(
            labels[self._members], return_index=True, return_counts=True
        )
        position = np.searchsorted(unique, split)
        self._class_start = starts[position]
        self._class_count = counts[position]
        self._rotation_count = 4 if self.rotations else 1
        self.num_classes = len(split) * self._rotation_count

    def episode_indices(self, meta_batch_size, seed):
        """Same as the C++ method: (support_index, support_rotation, support_y, query_index,
        query_rotation, query_y)."""
        b, n, k, q = meta_batch_size, self.ways, self.shots, self.queries
        per_class = k + q
        episodes = np.arange(b, dtype=np.uint32)[:, None]

        pool = np.broadcast_to(np.arange(self.num_classes, dtype=np.int64), (b, self.num_classes)).copy()
        class_bits = stream_bits(seed, episodes, _CLASS_STREAM, np.arange(n, dtype=np.uint32)[None, :])
        _partial_shuffle(pool, self.num_classes, class_bits)
        chosen = pool[:, :n]
        cls, rotation = chosen // self._rotation_count, chosen % self._rotation_count

        count = self._class_count[cls]  # [b, n]
        perm = np.broadcast_to(np.arange(count.max(), dtype=np.int64), (b, n, count.max())).copy()
        draw = (np.arange(n, dtype=np.uint32)[:, None] * per_class
                + np.arange(per_class, dtype=np.uint32)[None, :])
        _partial_shuffle(perm, count, stream_bits(seed, episodes[..., None], _EXAMPLE_STREAM, draw[None]))
        example = self._members[self._class_start[cls][..., None] + perm[..., :per_class]]  # [b, n, k+q]

        label = np.broadcast_to(np.arange(n, dtype=np.int32)[None, :, None], (b, n, per_class))
        rotation = np.broadcast_to(rotation.astype(np.int32)[..., None], (b, n, per_class))

        def part(lo, hi, stream):
            order = _shuffled_order(seed, episodes, n * (hi - lo), stream)
            return tuple(np.take_along_axis(a[:, :, lo:hi].reshape(b, -1), order, axis=1)
                         for a in (example, rotation, label))

        return part(0, k, _SUPPORT_STREAM) + part(k, per_class, _QUERY_STREAM)

    def gather(self, index, rotation):
        """float32 images[index] / 255, each turned rotation[...] quarter turns like np.rot90."""
        x = self.images[index]
        for turns in (1, 2, 3):
            mask = rotation == turns
            if mask.any():
                x[mask] = np.rot90(x[mask], turns, axes=(1, 2))
        return x.astype(np.float32) / np.float32(255)

    def sample(self, meta_batch_size, seed):
        """Same as the C++ method: (support_x, support_y, query_x, query_y)."""
        s_index, s_rot, s_y, q_index, q_rot, q_y = self.episode_indices(meta_batch_size, seed)
        return self.gather(s_index, s_rot), s_y, self.gather(q_index, q_rot), q_y
