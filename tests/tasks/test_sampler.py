"""Few-shot episode sampler: C++ against its NumPy twin, episode structure, errors, tf.data."""

import concurrent.futures
import gc

import numpy as np
import pytest

from keras_meta import _core
from keras_meta._twin.sampler import EpisodeSampler as TwinSampler
from keras_meta.tasks import FewShotClassification, TaskBatch, step_seed

NUM_CLASSES = 12
SPLIT = np.array([0, 2, 3, 5, 6, 8, 9, 11], np.int64)  # classes 1, 4, 7, 10 are held out


def make_dataset(side=6, channels=2, seed=0):
    """Random distinct images; class sizes 5..9 and labels in shuffled order."""
    rng = np.random.default_rng(seed)
    counts = 5 + np.arange(NUM_CLASSES) % 5
    labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), counts)).astype(np.int64)
    images = rng.integers(0, 256, (labels.size, side, side, channels), dtype=np.uint8)
    return images, labels


@pytest.fixture(scope="module")
def data():
    return make_dataset()


def native(data, ways=4, shots=2, queries=3, rotations=False, num_threads=2, split=SPLIT):
    images, labels = data
    return _core.EpisodeSampler(images, labels, split, ways, shots, queries, rotations=rotations,
                                num_threads=num_threads)


CONFIGS = [(4, 2, 3, False), (1, 1, 1, False), (8, 1, 4, False), (5, 3, 2, True), (32, 1, 1, True)]


@pytest.mark.parametrize("ways,shots,queries,rotations", CONFIGS)
@pytest.mark.parametrize("seed", [0, 2**64 - 1])
def test_native_matches_twin(data, ways, shots, queries, rotations, seed):
    sampler = native(data, ways, shots, queries, rotations)
    twin = TwinSampler(*data, SPLIT, ways, shots, queries, rotations)
    for got, want in zip(sampler.sample(6, seed), twin.sample(6, seed)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    for got, want in zip(sampler.episode_indices(6, seed), twin.episode_indices(6, seed)):
        np.testing.assert_array_equal(got, want)


def test_output_layout(data):
    support_x, support_y, query_x, query_y = native(data).sample(3, 7)
    assert support_x.shape == (3, 8, 6, 6, 2) and support_x.dtype == np.float32
    assert query_x.shape == (3, 12, 6, 6, 2) and query_x.dtype == np.float32
    assert support_y.shape == (3, 8) and support_y.dtype == np.int32
    assert query_y.shape == (3, 12) and query_y.dtype == np.int32
    for array in (support_x, support_y, query_x, query_y):
        assert array.flags.c_contiguous and array.flags.writeable
        assert array.ctypes.data % 64 == 0  # lets TensorFlow wrap it without a copy


def test_same_seed_same_batch_and_different_seed_different(data):
    sampler = native(data)
    first, again, other = sampler.sample(4, 123), sampler.sample(4, 123), sampler.sample(4, 124)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(sampler.episode_indices(4, 123)[0], sampler.episode_indices(4, 124)[0])


def test_identical_across_thread_counts(data):
    reference = native(data, rotations=True, num_threads=1).sample(9, 5)
    for threads in (2, 4):
        by_constructor = native(data, rotations=True, num_threads=threads).sample(9, 5)
        by_call = native(data, rotations=True, num_threads=1).sample(9, 5, num_threads=threads)
        for want, got_a, got_b in zip(reference, by_constructor, by_call):
            np.testing.assert_array_equal(got_a, want)
            np.testing.assert_array_equal(got_b, want)


@pytest.mark.parametrize("rotations", [False, True])
def test_episode_structure(data, rotations):
    _, labels = data
    ways, shots, queries = 5, 2, 3
    sampler = native(data, ways, shots, queries, rotations)
    s_idx, s_rot, s_y, q_idx, q_rot, q_y = sampler.episode_indices(40, 3)
    for e in range(40):
        # Every label 0..N-1 once per shot/query; each label names one (class, rotation).
        np.testing.assert_array_equal(np.bincount(s_y[e], minlength=ways), [shots] * ways)
        np.testing.assert_array_equal(np.bincount(q_y[e], minlength=ways), [queries] * ways)
        classes = {}
        for index, rot, y in zip(np.r_[s_idx[e], q_idx[e]], np.r_[s_rot[e], q_rot[e]],
                                 np.r_[s_y[e], q_y[e]]):
            classes.setdefault(int(y), set()).add((int(labels[index]), int(rot)))
        assert all(len(v) == 1 for v in classes.values())
        pairs = [next(iter(v)) for v in classes.values()]
        assert len(set(pairs)) == ways
        assert {c for c, _ in pairs} <= set(SPLIT.tolist())
        assert all(0 <= r < (4 if rotations else 1) for _, r in pairs)
        # K + Q distinct samples per class, none shared between support and query.
        support = set(zip(s_idx[e].tolist(), s_rot[e].tolist()))
        query = set(zip(q_idx[e].tolist(), q_rot[e].tolist()))
        assert len(support) == ways * shots and len(query) == ways * queries
        assert not support & query


def test_covers_split_only_and_shuffles(data):
    _, labels = data
    s_idx, s_rot, s_y, q_idx, _, q_y = native(data, ways=3, shots=1, queries=4, rotations=True
                                              ).episode_indices(200, 11)
    drawn = set(labels[s_idx].ravel().tolist())
    assert drawn == set(SPLIT.tolist())
    assert set(np.unique(s_rot).tolist()) == {0, 1, 2, 3}
    # Unshuffled sets would list labels in ascending blocks in every episode.
    assert np.mean([np.all(np.diff(y) >= 0) for y in s_y]) < 0.5
    assert np.mean([np.all(np.diff(y) >= 0) for y in q_y]) < 0.01


@pytest.mark.parametrize("rotations", [False, True])
def test_sample_gathers_normalised_rotated_images(data, rotations):
    images, _ = data
    sampler = native(data, ways=5, shots=2, queries=2, rotations=rotations)
    support_x, support_y, query_x, query_y = sampler.sample(4, 99)
    s_idx, s_rot, s_y, q_idx, q_rot, q_y = sampler.episode_indices(4, 99)
    np.testing.assert_array_equal(support_y, s_y)
    np.testing.assert_array_equal(query_y, q_y)
    for x, index, rot in ((support_x, s_idx, s_rot), (query_x, q_idx, q_rot)):
        for e in range(4):
            for i in range(index.shape[1]):
                want = np.rot90(images[index[e, i]], rot[e, i]).astype(np.float32) / np.float32(255)
                np.testing.assert_array_equal(x[e, i], want)
    assert support_x.min() >= 0.0 and support_x.max() <= 1.0


def test_rotation_is_counter_clockwise_like_rot90():
    image = np.arange(9, dtype=np.uint8).reshape(1, 3, 3, 1)
    sampler = _core.EpisodeSampler(np.repeat(image, 2, axis=0), np.zeros(2, np.int64),
                                   np.zeros(1, np.int64), 4, 1, 1, rotations=True)
    support_x, support_y, _, _ = sampler.sample(1, 0)
    _, rot, y, _, _, _ = sampler.episode_indices(1, 0)
    assert sorted(rot[0].tolist()) == [0, 1, 2, 3]
    for i in range(4):
        want = np.rot90(image[0, :, :, 0], rot[0, i]) / 255
        np.testing.assert_array_equal(support_x[0, i, :, :, 0], want.astype(np.float32))


def test_arrays_are_shared_and_kept_alive():
    images, labels = make_dataset()
    split = SPLIT.copy()
    sampler = _core.EpisodeSampler(images, labels, split, 3, 1, 1)
    assert sampler.images is images and sampler.labels is labels
    expected = sampler.sample(2, 1)
    del images, labels, split
    gc.collect()
    for a, b in zip(sampler.sample(2, 1), expected):
        np.testing.assert_array_equal(a, b)


def test_concurrent_python_threads_match_serial(data):
    sampler = native(data, ways=5, shots=1, queries=3, rotations=True, num_threads=2)
    seeds = list(range(16))
    serial = [sampler.sample(8, s) for s in seeds]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda s: sampler.sample(8, s), seeds))
    for want, got in zip(serial, parallel):
        for a, b in zip(want, got):
            np.testing.assert_array_equal(a, b)


# --- FewShotClassification -------------------------------------------------------------


def test_few_shot_classification_sample(data):
    images, labels = data
    tasks = FewShotClassification(images, labels.astype(np.int32), ways=3, shots=2, queries=1,
                                  split=SPLIT, classes=NUM_CLASSES, rotations=True, num_threads=2)
    batch = tasks.sample(5, 17)
    assert isinstance(batch, TaskBatch)
    twin = TwinSampler(images, labels, SPLIT, 3, 2, 1, rotations=True)
    for got, want in zip(batch, twin.sample(5, 17)):
        np.testing.assert_array_equal(got, want)
    assert tasks.num_classes == 4 * len(SPLIT) and tasks.image_shape == (6, 6, 2)
    assert tasks.images is images
    assert tasks.metrics == ("accuracy",)
    assert tasks.get_config()["ways"] == 3


def test_grayscale_rank3_images_get_a_channel_axis():
    images, labels = make_dataset(channels=1)
    tasks = FewShotClassification(images[..., 0], labels, ways=2, shots=1, queries=1)
    batch = tasks.sample(2, 0)
    assert batch.support_x.shape == (2, 2, 6, 6, 1)
    assert np.shares_memory(tasks.images, images)


def test_default_split_is_every_class(data):
    tasks = FewShotClassification(*data, ways=2, shots=1, queries=1)
    np.testing.assert_array_equal(tasks.split, np.arange(NUM_CLASSES))


def test_loss_is_sparse_crossentropy_from_logits(data):
    import keras

    loss = FewShotClassification(*data, ways=2, shots=1, queries=1).loss
    assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
    logits = np.array([[2.0, -1.0]], np.float32)
    want = -np.log(np.exp(2.0) / (np.exp(2.0) + np.exp(-1.0)))
    np.testing.assert_allclose(float(loss(np.array([0]), logits)), want, rtol=1e-5)


def test_as_dataset_elements_follow_step_seeds(data):
    import tensorflow as tf

    tasks = FewShotClassification(*data, ways=3, shots=1, queries=2, split=SPLIT)
    dataset = tasks.as_dataset(meta_batch_size=4, seed=21)
    assert isinstance(dataset.element_spec, TaskBatch)
    assert dataset.element_spec.support_x.shape == (4, 3, 6, 6, 2)
    assert dataset.element_spec.query_y == tf.TensorSpec((4, 6), tf.int32)
    for step, batch in enumerate(dataset.take(3)):
        want = tasks.sample(4, step_seed(21, step))
        for got, expected in zip(batch, want):
            np.testing.assert_array_equal(got.numpy(), expected)


def _bad(**overrides):
    images, labels = make_dataset()
    kwargs = dict(images=images, labels=labels, ways=3, shots=1, queries=2, split=SPLIT,
                  classes=NUM_CLASSES)
    kwargs.update(overrides)
    return kwargs


BAD_ARGUMENTS = [
    (dict(images=np.zeros((60, 6, 6, 2), np.float32)), TypeError, "images.dtype=float32"),
    (dict(images=[[0]]), TypeError, "Expected `images` to be a NumPy"),
    (dict(images=np.zeros((60, 36), np.uint8)), ValueError, r"images.shape=\(60, 36\)"),
    (dict(images=np.zeros((81, 6, 6, 2, 1), np.uint8)), ValueError, "images.shape"),
    (dict(images=np.zeros((81, 6, 12, 2), np.uint8)[:, :, ::2]), ValueError,
     "`images` to be C-contiguous"),
    (dict(labels=np.zeros(81, np.float32)), TypeError, "labels.dtype=float32"),
    (dict(labels=np.zeros(80, np.int64)), ValueError, r"labels.shape=\(80,\)"),
    (dict(labels=np.full(81, -1)), ValueError, "`labels` to be non-negative"),
    (dict(classes=11), ValueError, r"`labels` to lie in \[0, classes\)"),
    (dict(classes=0), ValueError, "classes=0"),
    (dict(split=np.array([0, 2, 2])), ValueError, "split repeats class 2"),
    (dict(split=np.array([0, 2, 40]), classes=None), ValueError, "split.*=40"),
    (dict(split=np.array([0, 2, 12])), ValueError, r"`split` to hold class ids in \[0, 12\)"),
    (dict(split=np.array([0.0, 2.0])), TypeError, "split.dtype=float64"),
    (dict(split=[]), ValueError, "non-empty"),
    (dict(ways=9), ValueError, r"`ways`.*\(8\). Received: ways=9"),
    (dict(ways=0), ValueError, "ways=0"),
    (dict(ways=2.0), TypeError, "ways=2.0"),
    (dict(shots=2, queries=4), ValueError, "class 0 has 5. Received: shots=2, queries=4"),
    (dict(queries=0), ValueError, "queries=0"),
    (dict(rotations=1), TypeError, "rotations=1"),
    (dict(images=np.zeros((81, 6, 5, 2), np.uint8), rotations=True), ValueError,
     r"square images.*images.shape=\(81, 6, 5, 2\)"),
    (dict(num_threads=0), ValueError, "num_threads=0"),
]


@pytest.mark.parametrize("overrides,error,match", BAD_ARGUMENTS)
def test_bad_arguments_raise_naming_the_argument(overrides, error, match):
    with pytest.raises(error, match=match):
        FewShotClassification(**_bad(**overrides))


@pytest.mark.parametrize("args,error,match", [
    ((0, 1), ValueError, "meta_batch_size=0"),
    ((2, -1), ValueError, "seed=-1"),
    ((2, 2**64), ValueError, "seed="),
    ((2, "1"), TypeError, "seed="),
])
def test_bad_sample_arguments(data, args, error, match):
    tasks = FewShotClassification(*data, ways=2, shots=1, queries=1)
    with pytest.raises(error, match=match):
        tasks.sample(*args)
