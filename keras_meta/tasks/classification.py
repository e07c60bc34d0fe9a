"""Few-shot image classification episodes gathered by the C++ episode sampler."""

import numpy as np

from keras_meta import _core
from keras_meta.tasks.base import (
    TaskBatch,
    TaskDistribution,
    check_positive_int,
    check_seed,
    step_seed,
)


def _check_images(images):
    if not isinstance(images, np.ndarray):
        raise TypeError(
            "Expected `images` to be a NumPy uint8 array [examples, height, width(, channels)]. "
            f"Received: images of type {type(images).__name__}"
        )
    if images.dtype != np.uint8:
        # A silent conversion would copy the whole dataset on every construction.
        raise TypeError(
            "Expected `images` to have dtype uint8 (pixel values 0..255). "
            f"Received: images.dtype={images.dtype}"
        )
    if images.ndim == 3:
        images = images[..., None]  # a view: grayscale images get a channel axis
    if images.ndim != 4:
        raise ValueError(
            "Expected `images` to have rank 3 [examples, height, width] or rank 4 "
            f"[examples, height, width, channels]. Received: images.shape={images.shape}"
        )
    return images


def _check_class_count(classes):
    if classes is None:
        return None
    return check_positive_int(classes, "classes")


def _integer_array(value, name):
    array = np.asarray(value)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.integer) or (array.size == 0 and array.dtype == np.float64)
    ):
        raise TypeError(
            f"Expected `{name}` to hold integer class ids. Received: {name}.dtype={array.dtype}"
        )
    return array.astype(np.int64, copy=False)


def _check_labels(labels, num_examples, classes):
    labels = _integer_array(labels, "labels")
    if labels.shape != (num_examples,):
        raise ValueError(
            f"Expected `labels` to have shape ({num_examples},), one label per image. "
            f"Received: labels.shape={labels.shape}"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(
            "Expected `labels` to be non-negative class ids. "
            f"Received: labels with minimum {labels.min()}"
        )
    if classes is not None and labels.size and labels.max() >= classes:
        raise ValueError(
            f"Expected `labels` to lie in [0, classes) = [0, {classes}). "
            f"Received: labels with maximum {labels.max()}"
        )
    return np.ascontiguousarray(labels)


def _check_split(split, labels, classes):
    if split is None:
        return np.unique(labels)
    split = _integer_array(split, "split")
    if split.ndim != 1 or split.size == 0:
        raise ValueError(
            "Expected `split` to be a non-empty 1-D sequence of class ids. "
            f"Received: split with shape {split.shape}"
        )
    upper = classes if classes is not None else np.inf
    outside = split[(split < 0) | (split >= upper)]
    if outside.size:
        bound = f"[0, {classes})" if classes is not None else "[0, inf)"
        raise ValueError(
            f"Expected `split` to hold class ids in {bound}. Received: split containing "
            f"{outside[:5].tolist()}"
        )
    return np.ascontiguousarray(split)


class FewShotClassification(TaskDistribution):
    """N-way, K-shot few-shot classification episodes from a labeled image array.

    Each task of a batch is an episode: `ways` classes drawn without replacement from
    `split`, relabelled 0..ways-1 in the order they were drawn, with `shots` support and
    `queries` query examples per class (all distinct), each set shuffled. Images come out
    as float32 in [0, 1] (x / 255); labels as int32. Sampling runs in C++ over a thread
    pool with the GIL released, reading `images` in place (no copy is made, so do not
    modify the arrays while sampling), and is a pure function of `(meta_batch_size,
    seed)` whatever `num_threads` is.

    Args:
        images: uint8 array `[examples, height, width, channels]`, or
            `[examples, height, width]` for grayscale (a channel axis is added).
            Must be C-contiguous.
        labels: Integer array `[examples]` of class ids in `[0, classes)`.
        ways: Classes per episode (N).
        shots: Support examples per class (K).
        queries: Query examples per class (Q).
        split: Class ids episodes draw from, e.g. a dataset's background or evaluation
            classes (`km.datasets.ImageDataset.split`); None uses every label present.
        classes: The number of classes, to check that labels and split ids lie in
            `[0, classes)`; None skips the upper bound.
        rotations: Omniglot augmentation: each quarter turn (0, 90, 180, 270 degrees
            counter-clockwise, as `np.rot90`) of each split class is a distinct class,
            so episodes draw from `4 * len(split)` classes. Needs square images.
        num_threads: Sampler threads per batch; None picks min(cores, 8).

    Raises:
        TypeError: If `images` is not a uint8 NumPy array, labels or split are not
            integers, or a count is not an integer.
        ValueError: On a wrong rank or shape, negative or out-of-range labels or split
            ids, repeated split ids, split classes without examples, `ways` above the
            number of split classes, `shots + queries` above the examples of some split
            class, non-square images with `rotations=True`, or non-contiguous arrays.

    Example:

    >>> images = np.random.randint(0, 256, (2000, 28, 28), dtype=np.uint8)
    >>> labels = np.repeat(np.arange(100), 20)
    >>> tasks = km.tasks.FewShotClassification(images, labels, ways=5, shots=1,
    ...                                        queries=15, split=np.arange(80))
    >>> batch = tasks.sample(meta_batch_size=32, seed=0)
    >>> batch.support_x.shape, batch.query_y.shape
    ((32, 5, 28, 28, 1), (32, 75))
    """

    metrics = ("accuracy",)

    def __init__(self, images, labels, ways=5, shots=1, queries=15, split=None, classes=None,
                 rotations=False, num_threads=None):
        images = _check_images(images)
        classes = _check_class_count(classes)
        labels = _check_labels(labels, images.shape[0], classes)
        split = _check_split(split, labels, classes)
        if not isinstance(rotations, (bool, np.bool_)):
            raise TypeError(f"Expected `rotations` to be a bool. Received: rotations={rotations!r}")
        if num_threads is not None:
            check_positive_int(num_threads, "num_threads")
        self._sampler = _core.EpisodeSampler(
            images,
            labels,
            split,
            check_positive_int(ways, "ways"),
            check_positive_int(shots, "shots"),
            check_positive_int(queries, "queries"),
            rotations=bool(rotations),
            num_threads=0 if num_threads is None else int(num_threads),
        )
        self.classes = classes
        self._num_threads = num_threads
        self._loss = None

    @property
    def loss(self):
        """Sparse categorical cross-entropy on logits (models end without a softmax)."""
        if self._loss is None:
            import keras  # deferred: keeps `import keras_meta.tasks` light

            self._loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return self._loss

    ways = property(lambda self: self._sampler.ways, doc="Classes per episode (N).")
    shots = property(lambda self: self._sampler.shots, doc="Support examples per class (K).")
    queries = property(lambda self: self._sampler.queries, doc="Query examples per class (Q).")
    rotations = property(lambda self: self._sampler.rotations, doc="Whether rotations augment.")
    split = property(lambda self: self._sampler.split, doc="Class ids episodes draw from.")
    images = property(lambda self: self._sampler.images, doc="The shared image array.")
    labels = property(lambda self: self._sampler.labels, doc="The int64 labels.")
    num_classes = property(lambda self: self._sampler.num_classes,
                           doc="Classes an episode draws from: len(split), x4 with rotations.")
    image_shape = property(lambda self: tuple(self._sampler.image_shape),
                           doc="(height, width, channels) of one image.")

    def sample(self, meta_batch_size, seed):
        """Returns a `TaskBatch` of `meta_batch_size` episodes; pure in its arguments.

        Args:
            meta_batch_size: Episodes in the batch (B).
            seed: Integer in [0, 2**64).

        Returns:
            `TaskBatch(support_x [B, N*K, H, W, C] float32, support_y [B, N*K] int32,
            query_x [B, N*Q, H, W, C] float32, query_y [B, N*Q] int32)`.

        Raises:
            TypeError, ValueError: If an argument is not a valid integer.
        """
        meta_batch_size = check_positive_int(meta_batch_size, "meta_batch_size")
        return TaskBatch(*self._sampler.sample(meta_batch_size, check_seed(seed)))

    def episode_indices(self, meta_batch_size, seed):
        """What `sample(meta_batch_size, seed)` gathers, without the images.

        Returns:
            `(support_index, support_rotation, support_y, query_index, query_rotation,
            query_y)`: example indices into `images` (int64), quarter turns (int32) and
            episode labels (int32), each `[B, N*K]` or `[B, N*Q]`.
        """
        meta_batch_size = check_positive_int(meta_batch_size, "meta_batch_size")
        return self._sampler.episode_indices(meta_batch_size, check_seed(seed))

    def as_dataset(self, meta_batch_size, seed=0):
        """An infinite, prefetching `tf.data.Dataset` of `TaskBatch` elements.

        Element `i` equals `sample(meta_batch_size, km.tasks.step_seed(seed, i))`, so a
        run resumed at step `i` sees the same batches (`dataset.skip(i)`). Batches are
        produced by a parallel, order-preserving map, so sampling overlaps the consumer.

        Args:
            meta_batch_size: Episodes per element (B).
            seed: Run seed, an integer in [0, 2**64).

        Returns:
            A `tf.data.Dataset` with static shapes `[B, N*K, H, W, C]`, `[B, N*K]`,
            `[B, N*Q, H, W, C]` and `[B, N*Q]`.

        Example:

        >>> for batch in tasks.as_dataset(meta_batch_size=32, seed=0).take(2):
        ...     print(batch.support_x.shape)
        (32, 5, 28, 28, 1)
        (32, 5, 28, 28, 1)
        """
        import tensorflow as tf

        meta_batch_size = check_positive_int(meta_batch_size, "meta_batch_size")
        seed = check_seed(seed)
        h, w, c = self.image_shape
        n_support, n_query = self.ways * self.shots, self.ways * self.queries
        shapes = ([meta_batch_size, n_support, h, w, c], [meta_batch_size, n_support],
                  [meta_batch_size, n_query, h, w, c], [meta_batch_size, n_query])
        sampler = self._sampler

        def produce(step):
            return sampler.sample(meta_batch_size, step_seed(seed, int(step)))

        def element(step):
            tensors = tf.numpy_function(produce, [step], [tf.float32, tf.int32, tf.float32, tf.int32],
                                        stateful=False)
            for tensor, shape in zip(tensors, shapes):
                tensor.set_shape(shape)
            return TaskBatch(*tensors)

        dataset = tf.data.Dataset.counter(dtype=tf.int64)
        dataset = dataset.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def get_config(self):
        return {"ways": self.ways, "shots": self.shots, "queries": self.queries,
                "classes": self.classes, "rotations": self.rotations,
                "num_threads": self._num_threads}
