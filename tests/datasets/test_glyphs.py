import fcntl
import hashlib
import os

import numpy as np
import pytest

from keras_meta.datasets import _glyphs, _io, glyphs

SMALL = dict(fonts=("markers", "mathupp"), drawings=4, verbose=0)


def _digest(ds):
    digest = hashlib.sha256()
    for array in (ds.images, ds.labels, ds.background_classes, ds.evaluation_classes):
        digest.update(array.tobytes())
    digest.update("\n".join(ds.class_names + ds.alphabets).encode())
    return digest.hexdigest()


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="session")
def full_cache(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Share one full build between xdist workers (`make test` runs -n 2):
        # the first worker builds under the lock, the others load its cache.
        root = root.parent
    directory = root / "glyphs_full"
    directory.mkdir(exist_ok=True)
    with open(root / "glyphs_full.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        glyphs(cache_dir=directory, verbose=0)
    return directory


@pytest.fixture(scope="session")
def full(full_cache):
    return glyphs(cache_dir=full_cache, verbose=0)


def test_full_dataset_shape_and_class_count(full):
    assert full.num_classes >= 1500
    assert full.images.shape == (20 * full.num_classes, 28, 28, 1)
    assert full.images.dtype == np.uint8 and full.images.flags.c_contiguous
    assert full.labels.dtype == np.int64 and full.labels.flags.c_contiguous
    assert np.all(np.bincount(full.labels) == 20)
    assert len(set(full.class_names)) == full.num_classes
    # Bright strokes on a black background.
    assert np.median(full.images) == 0 and full.images.max() == 255


def test_full_dataset_splits_by_font(full):
    background, evaluation = full.background_classes, full.evaluation_classes
    assert np.intersect1d(background, evaluation).size == 0
    np.testing.assert_array_equal(np.union1d(background, evaluation), np.arange(full.num_classes))
    assert 0.25 < evaluation.size / full.num_classes < 0.4
    background_fonts = {full.alphabets[i] for i in background}
    evaluation_fonts = {full.alphabets[i] for i in evaluation}
    assert not background_fonts & evaluation_fonts
    assert len(background_fonts) >= 10 and len(evaluation_fonts) >= 5


def test_full_dataset_reloads_identically_from_cache(full, full_cache, monkeypatch):
    assert len(_files(full_cache)) == 1
    monkeypatch.setattr(_glyphs, "_build", lambda *a: pytest.fail("rebuilt a valid cache"))
    again = glyphs(cache_dir=full_cache, verbose=0)
    assert _digest(again) == _digest(full)


def test_drawings_have_a_same_class_nearest_neighbour(full):
    rng = np.random.default_rng(0)
    classes = np.sort(rng.choice(full.num_classes, size=150, replace=False))
    mask = np.isin(full.labels, classes)
    x = full.images[mask].reshape(mask.sum(), -1).astype(np.float64)
    y = full.labels[mask]
    squared = np.einsum("ij,ij->i", x, x)
    distances = squared[:, None] + squared[None, :] - 2.0 * x @ x.T
    np.fill_diagonal(distances, np.inf)
    accuracy = np.mean(y[distances.argmin(axis=1)] == y)
    assert accuracy > 0.8, accuracy


def test_no_two_class_prototypes_are_near_identical(full):
    order = np.argsort(full.labels, kind="stable")
    x = full.images[order].reshape(full.num_classes, 20, -1).astype(np.float64)
    prototypes = x.mean(axis=1)
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    similarity = prototypes @ prototypes.T
    np.fill_diagonal(similarity, -1.0)
    assert similarity.max() < 0.99, similarity.max()


def test_subset_builds_are_byte_identical(tmp_path):
    first = glyphs(cache_dir=tmp_path / "a", seed=3, **SMALL)
    second = glyphs(cache_dir=tmp_path / "b", seed=3, **SMALL)
    assert _digest(first) == _digest(second)
    assert first.num_classes > 50
    assert first.background_classes.size and first.evaluation_classes.size
    other_seed = glyphs(cache_dir=tmp_path / "c", seed=4, **SMALL)
    assert other_seed.class_names == first.class_names
    assert not np.array_equal(other_seed.images, first.images)


def test_a_class_is_drawn_the_same_in_a_subset_and_the_full_set(full, tmp_path):
    subset = glyphs(cache_dir=tmp_path, fonts=("markers",), verbose=0)
    index = {name: i for i, name in enumerate(full.class_names)}
    shared = [name for name in subset.class_names if name in index]
    assert len(shared) >= 10
    for name in shared[:10]:
        mine = subset.images[subset.labels == subset.class_names.index(name)]
        theirs = full.images[full.labels == index[name]]
        np.testing.assert_array_equal(mine, theirs)


def test_parameters_reach_the_arrays(tmp_path):
    ds = glyphs(cache_dir=tmp_path, image_size=16, rotations=(0,), **SMALL)
    assert ds.image_shape == (16, 16, 1)
    assert np.all(np.bincount(ds.labels) == 4)
    assert not any("/rot" in name for name in ds.class_names)


def test_interrupted_write_leaves_nothing_and_next_call_builds(tmp_path, monkeypatch):
    real_write = _io.write_npz

    def write_half_then_fail(file, arrays):
        file.write(b"PK\x03\x04 partial zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(_io, "write_npz", write_half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        glyphs(cache_dir=tmp_path, **SMALL)
    assert _files(tmp_path) == []

    monkeypatch.setattr(_io, "write_npz", real_write)
    ds = glyphs(cache_dir=tmp_path, **SMALL)
    assert len(_files(tmp_path)) == 1 and _files(tmp_path)[0].endswith(".npz")
    fresh = _glyphs._build(4, 28, 0, 0, ("markers", "mathupp"), (0, 90, 180, 270))
    assert _digest(ds) == _digest(fresh)


def test_truncated_cache_is_rebuilt(tmp_path):
    expected = _digest(glyphs(cache_dir=tmp_path, **SMALL))
    (path,) = tmp_path.iterdir()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match="Rebuilding.*unreadable"):
        ds = glyphs(cache_dir=tmp_path, **SMALL)
    assert _digest(ds) == expected
    assert _digest(glyphs(cache_dir=tmp_path, **SMALL)) == expected  # repaired file


def test_tampered_cache_fails_its_checksum_and_is_rebuilt(tmp_path):
    expected = _digest(glyphs(cache_dir=tmp_path, **SMALL))
    (path,) = tmp_path.iterdir()
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["images"] = arrays["images"].copy()
    arrays["images"][0, 0, 0, 0] ^= 1
    _io.atomic_save_npz(str(path), arrays)
    with pytest.warns(UserWarning, match="checksum"):
        ds = glyphs(cache_dir=tmp_path, **SMALL)
    assert _digest(ds) == expected


def test_default_cache_dir_follows_keras_meta_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_META_HOME", str(tmp_path))
    glyphs(**SMALL)
    (path,) = (tmp_path / "datasets").iterdir()
    assert path.name.startswith(f"glyphs-v{_glyphs.FORMAT_VERSION}-") and path.suffix == ".npz"


def test_progress_bar_respects_verbose(tmp_path, capsys):
    glyphs(cache_dir=tmp_path / "quiet", **SMALL)
    assert capsys.readouterr().err == ""
    glyphs(cache_dir=tmp_path / "loud", **{**SMALL, "verbose": 1})
    err = capsys.readouterr().err
    assert "Building glyphs dataset" in err and err.rstrip().endswith("s")
    glyphs(cache_dir=tmp_path / "loud", **{**SMALL, "verbose": 1})
    assert capsys.readouterr().err == ""  # loaded from cache


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(drawings=0), ValueError, "drawings"),
        (dict(drawings=2.0), TypeError, "drawings"),
        (dict(image_size=4), ValueError, "image_size"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(verbose=True), TypeError, "verbose"),
        (dict(fonts=("nope",)), ValueError, "fonts="),
        (dict(fonts="markers"), TypeError, "fonts="),
        (dict(fonts=()), ValueError, "fonts="),
        (dict(rotations=(90,)), ValueError, "rotations="),
        (dict(rotations=(0, 45)), ValueError, "rotations="),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        glyphs(cache_dir=tmp_path, **kwargs)
    assert not os.listdir(tmp_path)
