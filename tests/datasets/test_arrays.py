import numpy as np
import pytest

from keras_meta.datasets import ImageDataset, from_arrays


def _data(n=12, classes=4, size=5, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, channels), dtype=np.uint8)
    labels = np.arange(n) % classes
    return images, labels


def test_uint8_nhwc_is_kept_and_labels_become_int64():
    images, labels = _data()
    ds = from_arrays(images, labels.astype(np.int32))
    assert isinstance(ds, ImageDataset)
    assert ds.images is images or np.shares_memory(ds.images, images)
    assert ds.images.dtype == np.uint8 and ds.images.flags.c_contiguous
    assert ds.labels.dtype == np.int64 and ds.labels.flags.c_contiguous
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.num_classes == 4 and len(ds) == 12 and ds.image_shape == (5, 5, 1)
    assert ds.class_names == ("0", "1", "2", "3")
    assert ds.alphabets is None


def test_default_split_is_first_two_thirds_of_classes():
    images, labels = _data(n=30, classes=6)
    ds = from_arrays(images, labels)
    np.testing.assert_array_equal(ds.background_classes, [0, 1, 2, 3])
    np.testing.assert_array_equal(ds.evaluation_classes, [4, 5])
    np.testing.assert_array_equal(ds.split("train"), ds.background_classes)
    np.testing.assert_array_equal(ds.split("test"), ds.evaluation_classes)
    np.testing.assert_array_equal(ds.split("all"), np.arange(6))
    assert ds.split("background").dtype == np.int64


def test_split_returns_a_copy_and_rejects_unknown_names():
    ds = from_arrays(*_data())
    ids = ds.split("background")
    ids[:] = 99
    assert ds.background_classes.max() < ds.num_classes
    with pytest.raises(ValueError, match="name='val'"):
        ds.split("val")


def test_grayscale_rank3_gains_a_channel_axis():
    images, labels = _data()
    ds = from_arrays(images[..., 0], labels)
    assert ds.images.shape == (12, 5, 5, 1)
    np.testing.assert_array_equal(ds.images, images)


def test_float_images_in_unit_range_are_scaled_and_rounded():
    images = np.array([0.0, 0.5, 1.0, 1 / 255, 0.999], dtype=np.float32).reshape(5, 1, 1, 1)
    ds = from_arrays(images, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(ds.images.ravel(), [0, 128, 255, 1, 255])
    assert ds.images.dtype == np.uint8


def test_wider_integer_images_in_byte_range_are_accepted():
    images, labels = _data()
    ds = from_arrays(images.astype(np.int64), labels)
    np.testing.assert_array_equal(ds.images, images)


def test_non_contiguous_images_are_made_contiguous():
    images, labels = _data(size=8)
    view = images[:, ::2, ::2]
    ds = from_arrays(view, labels)
    assert ds.images.flags.c_contiguous
    np.testing.assert_array_equal(ds.images, view)


def test_sparse_label_values_are_remapped_with_splits_in_original_values():
    images, _ = _data(n=6)
    labels = np.array([7, 3, 11, 3, 7, 11])
    ds = from_arrays(images, labels, evaluation_classes=[11])
    np.testing.assert_array_equal(ds.labels, [1, 0, 2, 0, 1, 2])
    assert ds.class_names == ("3", "7", "11")
    np.testing.assert_array_equal(ds.evaluation_classes, [2])
    np.testing.assert_array_equal(ds.background_classes, [0, 1])


def test_explicit_class_names_and_alphabet_split():
    images, labels = _data(n=8, classes=4)
    ds = from_arrays(
        images,
        labels,
        class_names=["a1", "a2", "b1", "c1"],
        alphabets=["A", "A", "B", "C"],
    )
    assert ds.class_names == ("a1", "a2", "b1", "c1")
    # Alphabets in sorted order; the prefix A+B (3 of 4 classes) is closest to 2/3.
    np.testing.assert_array_equal(ds.background_classes, [0, 1, 2])
    np.testing.assert_array_equal(ds.evaluation_classes, [3])
    assert ds.alphabet_of(2) == "B"


def test_npz_round_trip(tmp_path):
    images, labels = _data(n=9, classes=3)
    ds = from_arrays(images, labels, class_names=["x", "y", "z"], background_classes=[0, 2])
    path = ds.save(tmp_path / "data.npz")
    loaded = from_arrays(path)
    np.testing.assert_array_equal(loaded.images, ds.images)
    np.testing.assert_array_equal(loaded.labels, ds.labels)
    assert loaded.class_names == ("x", "y", "z")
    np.testing.assert_array_equal(loaded.background_classes, [0, 2])
    np.testing.assert_array_equal(loaded.evaluation_classes, [1])
    assert [p.name for p in tmp_path.iterdir()] == ["data.npz"]


def test_plain_npz_with_only_images_and_labels(tmp_path):
    images, labels = _data()
    np.savez(tmp_path / "plain.npz", images=images, labels=labels)
    ds = from_arrays(str(tmp_path / "plain.npz"))
    assert ds.num_classes == 4


@pytest.mark.parametrize(
    "images, labels, error, pattern",
    [
        (np.zeros((4, 5, 5, 1), dtype=np.complex64), [0, 1, 0, 1], TypeError, "images.dtype"),
        (np.array([["a"]] * 4), [0, 1, 0, 1], TypeError, "images.dtype"),
        (np.zeros((4, 5, 5, 1), dtype=bool), [0, 1, 0, 1], TypeError, "images.dtype"),
        (np.zeros((4, 25), dtype=np.uint8), [0, 1, 0, 1], ValueError, "images.shape"),
        (np.zeros((4, 5, 5, 1, 1), dtype=np.uint8), [0, 1, 0, 1], ValueError, "images.shape"),
        (np.zeros((4, 1, 28, 28), dtype=np.uint8), [0, 1, 0, 1], ValueError, "channels-first"),
        (np.zeros((0, 5, 5, 1), dtype=np.uint8), np.zeros(0, int), ValueError, "non-empty"),
        (np.full((4, 5, 5, 1), 255.0), [0, 1, 0, 1], ValueError, r"\[0, 1\]"),
        (np.full((4, 5, 5, 1), np.nan), [0, 1, 0, 1], ValueError, "finite"),
        (np.full((4, 5, 5, 1), 300, dtype=np.int32), [0, 1, 0, 1], ValueError, r"\[0, 255\]"),
        (np.zeros((4, 5, 5, 1), dtype=np.uint8), [0.0, 1.0, 0.0, 1.0], TypeError, "labels.dtype"),
        (np.zeros((4, 5, 5, 1), dtype=np.uint8), [[0], [1], [0], [1]], ValueError, "labels.shape"),
        (np.zeros((4, 5, 5, 1), dtype=np.uint8), [0, 1, 0], ValueError, r"per image \(4\)"),
        (np.zeros((4, 5, 5, 1), dtype=np.uint8), [0, -1, 0, 1], ValueError, "non-negative"),
    ],
)
def test_bad_inputs_raise_errors_naming_the_argument(images, labels, error, pattern):
    with pytest.raises(error, match=pattern):
        from_arrays(images, labels)


def test_missing_labels_is_an_error():
    with pytest.raises(ValueError, match="labels=None"):
        from_arrays(np.zeros((2, 3, 3), np.uint8))


def test_class_names_must_cover_labels_and_be_used():
    images, labels = _data(n=4, classes=2)
    with pytest.raises(ValueError, match="labels"):
        from_arrays(images, labels, class_names=["only"])
    with pytest.raises(ValueError, match=r"class ids \[2\]"):
        from_arrays(images, labels, class_names=["a", "b", "unused"])
    with pytest.raises(TypeError, match="class_names"):
        from_arrays(images, labels, class_names="ab")


def test_bad_splits_are_rejected():
    images, labels = _data(n=6, classes=3)
    with pytest.raises(ValueError, match="disjoint"):
        from_arrays(images, labels, background_classes=[0, 1], evaluation_classes=[1, 2])
    with pytest.raises(ValueError, match=r"evaluation_classes.*unknown ids \[5\]"):
        from_arrays(images, labels, evaluation_classes=[5])
    with pytest.raises(TypeError, match="background_classes"):
        from_arrays(images, labels, background_classes=[0.5])
    with pytest.raises(ValueError, match="alphabets"):
        from_arrays(images, labels, alphabets=["A"])


def test_npz_path_errors(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(FileNotFoundError, match="images=.*missing.npz"):
        from_arrays(missing)
    np.savez(tmp_path / "no_labels.npz", images=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="`images` and `labels`"):
        from_arrays(tmp_path / "no_labels.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="readable .npz"):
        from_arrays(tmp_path / "garbage.npz")
    with pytest.raises(ValueError, match="labels"):
        from_arrays(tmp_path / "no_labels.npz", [0, 1])


def test_constructor_enforces_the_sampler_layout():
    images, labels = _data()
    good = dict(
        images=images,
        labels=labels.astype(np.int64),
        class_names=("a", "b", "c", "d"),
        background_classes=np.array([0, 1], np.int64),
        evaluation_classes=np.array([2, 3], np.int64),
    )
    ImageDataset(**good)
    with pytest.raises(ValueError, match="images"):
        ImageDataset(**{**good, "images": images.astype(np.float32)})
    with pytest.raises(ValueError, match="C-contiguous"):
        ImageDataset(**{**good, "images": np.asfortranarray(images)})
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(**{**good, "labels": labels.astype(np.int32)})
    with pytest.raises(ValueError, match="every class id"):
        ImageDataset(**{**good, "class_names": ("a", "b", "c", "d", "e")})
    with pytest.raises(ValueError, match="disjoint"):
        ImageDataset(**{**good, "evaluation_classes": np.array([1, 2], np.int64)})
    with pytest.raises(ValueError, match="sorted"):
        ImageDataset(**{**good, "background_classes": np.array([1, 0], np.int64)})
    with pytest.raises(AttributeError):
        ImageDataset(**good).images = images


@pytest.mark.parametrize(
    "dtype, values, expected",
    [
        (np.uint8, [0, 85, 255], [0, 85, 255]),
        (np.int64, [0, 85, 255], [0, 85, 255]),
        (np.uint16, [0, 85, 255], [0, 85, 255]),
        (np.int8, [0, 85, 127], [0, 85, 127]),
        (np.float16, [0.0, 1 / 3, 1.0], [0, 85, 255]),
        (np.float64, [0.0, 1 / 3, 1.0], [0, 85, 255]),
    ],
)
def test_every_numeric_dtype_scales_by_one_rule(dtype, values, expected):
    # Integers are 8-bit levels whatever their width, floats are [0, 1].
    images = np.array(values, dtype=dtype).reshape(3, 1, 1)
    np.testing.assert_array_equal(from_arrays(images, [0, 1, 2]).images.ravel(), expected)


@pytest.mark.parametrize(
    "images, error, pattern",
    [
        (np.full((2, 3, 3), 65535, np.uint16), ValueError,
         r"integer `images` to be in \[0, 255\] \(divide 16-bit data by 257.*images.dtype=uint16 with values in \[65535, 65535\]"),
        (np.full((2, 3, 3), 255.0), ValueError,
         r"float `images` to be in \[0, 1\].*images.dtype=float64 with values in \[255, 255\]"),
        (np.full((2, 3, 3), -1e-3, np.float32), ValueError, r"\[0, 1\].*values in \[-0.001, -0.001\]"),
        (np.full((2, 3, 3), np.inf, np.float16), ValueError, r"float `images` to be finite.*float16"),
        (np.ones((2, 3, 3), bool), TypeError, r"True could mean ink or paper.*images.dtype=bool"),
    ],
    ids=["uint16-16-bit", "float64-0-255", "float-negative", "float16-inf", "bool"],
)
def test_dtypes_without_an_unambiguous_scale_are_refused(images, error, pattern, tmp_path):
    with pytest.raises(error, match=pattern):
        from_arrays(images, [0, 1])
    np.savez(tmp_path / "data.npz", images=images, labels=np.arange(2))
    with pytest.raises(error, match=pattern):
        from_arrays(tmp_path / "data.npz")
