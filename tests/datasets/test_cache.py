"""Dataset caches lose no data: unwritable homes warn, killed builds leave no debris."""

import errno
import os
import time
import warnings

import numpy as np
import pytest

from keras_meta.datasets import CacheWarning, ImageDataset, _glyphs, _io, glyphs

SMALL = dict(fonts=("markers",), drawings=2, verbose=0)
HOUR = 3600.0


def _tiny():
    return ImageDataset(
        images=np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8, 1),
        labels=np.array([0, 0, 1, 1], dtype=np.int64),
        class_names=("markers/1", "markers/2"),
        background_classes=np.array([0], dtype=np.int64),
        evaluation_classes=np.array([1], dtype=np.int64),
        alphabets=("markers", "markers"),
    )


@pytest.fixture
def builds(monkeypatch):
    """Replaces the ~30 s glyph build by `_tiny()`; records each build."""
    calls = []

    def build(*args):
        calls.append(args)
        return _tiny()

    monkeypatch.setattr(_glyphs, "_build", build)
    return calls


def _same(a, b):
    return (
        np.array_equal(a.images, b.images)
        and np.array_equal(a.labels, b.labels)
        and a.class_names == b.class_names
        and a.alphabets == b.alphabets
    )


def _unwritable_home(tmp_path, kind):
    # Tests run as root, where chmod 0o555 stops nothing: a regular file in the
    # path makes mkdir fail (NotADirectoryError / FileExistsError) even for root.
    regular = tmp_path / "file"
    regular.write_bytes(b"")
    if kind == "under_a_file":
        return regular / "home"
    if kind == "empty_file":
        return regular
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "datasets").write_bytes(b"")  # "datasets" is a file
    return tmp_path / "home"


@pytest.mark.parametrize("kind", ["under_a_file", "empty_file", "datasets_is_a_file"])
def test_unwritable_home_returns_the_data_with_a_warning(tmp_path, monkeypatch, builds, kind):
    home = _unwritable_home(tmp_path, kind)
    monkeypatch.setenv("KERAS_META_HOME", str(home))
    with pytest.warns(CacheWarning, match="Could not write the dataset cache") as record:
        ds = glyphs(**SMALL)
    assert len(builds) == 1 and _same(ds, _tiny())
    assert [w.filename for w in record] == [__file__]  # points at the caller
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["file"] + (["home"] if kind == "datasets_is_a_file" else [])
    )

    # Once the home is usable the same call writes the cache once and reloads it.
    monkeypatch.setenv("KERAS_META_HOME", str(tmp_path / "good"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = glyphs(**SMALL)
        again = glyphs(**SMALL)
    assert len(builds) == 2  # once for the bad home, once to fill the cache
    assert _same(first, again)
    (cached,) = (tmp_path / "good" / "datasets").iterdir()
    assert cached.suffix == ".npz"


def test_a_failed_cache_write_keeps_the_data_and_no_temporary(tmp_path, monkeypatch):
    def disk_full(file, arrays):
        file.write(b"PK\x03\x04 partial zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io, "write_npz", disk_full)
    with pytest.warns(CacheWarning, match="No space left"):
        ds = glyphs(cache_dir=tmp_path, **SMALL)  # the real (small) build
    assert ds.num_classes > 10 and ds.images.shape[1:] == (28, 28, 1)
    assert list(tmp_path.iterdir()) == []


def _temporary(directory, name, age):
    # mkstemp's naming: ".<name>.<random>.tmp"; the age makes the random part unique here.
    path = directory / f".{name}.{int(age)}x.tmp"
    path.write_bytes(b"PK\x03\x04 killed mid-write")
    mtime = time.time() - age
    os.utime(path, (mtime, mtime))
    return path


def _cache_name(tmp_path):
    (path,) = (tmp_path / "probe").iterdir()
    return path.name


@pytest.mark.parametrize("hit", [False, True], ids=["build", "load"])
def test_stale_temporaries_are_swept_and_fresh_ones_kept(tmp_path, builds, hit):
    glyphs(cache_dir=tmp_path / "probe", **SMALL)
    name = _cache_name(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    if hit:
        glyphs(cache_dir=cache, **SMALL)
    stale = _temporary(cache, name, 2 * HOUR)
    stale_other_config = _temporary(cache, "glyphs-v1-0123456789abcdef.npz", 2 * HOUR)
    concurrent = _temporary(cache, name, 60.0)  # another process writing right now
    unrelated = _temporary(cache, "notes.txt", 2 * HOUR)  # not ours: never touched
    count = len(builds)

    ds = glyphs(cache_dir=cache, **SMALL)

    assert not stale.exists() and not stale_other_config.exists()
    assert concurrent.exists() and unrelated.exists()
    assert len(builds) == count + (0 if hit else 1)  # a hit still loads, never rebuilds
    assert _same(ds, _tiny())
    assert (cache / name).is_file()


def test_image_dataset_save_sweeps_its_own_stale_temporaries(tmp_path):
    stale = _temporary(tmp_path, "mine.npz", 2 * HOUR)
    fresh = _temporary(tmp_path, "mine.npz", 1.0)
    other = _temporary(tmp_path, "yours.npz", 2 * HOUR)
    _tiny().save(tmp_path / "mine.npz")
    assert not stale.exists() and fresh.exists() and other.exists()
