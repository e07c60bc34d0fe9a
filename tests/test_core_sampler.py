"""Argument checks of the raw `keras_meta._core.EpisodeSampler` binding: errors, never crashes."""

import re

import numpy as np
import pytest

from keras_meta import _core

IMAGES = np.zeros((20, 4, 4, 1), np.uint8)
LABELS = np.repeat(np.arange(5), 4).astype(np.int64)
SPLIT = np.arange(5, dtype=np.int64)


def build(images=IMAGES, labels=LABELS, split=SPLIT, ways=2, shots=1, queries=1, **kwargs):
    return _core.EpisodeSampler(images, labels, split, ways, shots, queries, **kwargs)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(images=IMAGES.astype(np.int16)), TypeError, r"`images` to have dtype uint8.*images.dtype=int16"),
    (dict(images=IMAGES.tolist()), TypeError, "`images` to be a NumPy array"),
    (dict(images=IMAGES[..., 0]), ValueError, r"`images` to have rank 4.*images.shape=\(20, 4, 4\)"),
    (dict(images=np.zeros((20, 4, 8, 1), np.uint8)[:, :, ::2]), ValueError, "`images` to be C-contiguous"),
    (dict(images=np.zeros((20, 0, 4, 1), np.uint8)), ValueError, "non-empty images"),
    (dict(labels=LABELS.astype(np.int32)), TypeError, "labels.dtype=int32"),
    (dict(labels=LABELS[:-1]), ValueError, r"labels.shape=\(19,\)"),
    (dict(labels=LABELS[::-1]), ValueError, "`labels` to be C-contiguous"),
    (dict(labels=LABELS - 1), ValueError, r"labels\[0\]=-1"),
    (dict(split=SPLIT.astype(np.uint64)), TypeError, "split.dtype=uint64"),
    (dict(split=SPLIT[:0]), ValueError, r"non-empty 1-D.*split.shape=\(0,\)"),
    (dict(split=SPLIT.reshape(5, 1)), ValueError, r"split.shape=\(5, 1\)"),
    (dict(split=np.array([1, 7], np.int64)), ValueError, r"split\[1\]=7, a class with no examples"),
    (dict(split=np.array([-3], np.int64)), ValueError, r"split\[0\]=-3"),
    (dict(split=np.array([1, 1], np.int64)), ValueError, "repeats class 1"),
    (dict(ways=6), ValueError, r"\(5\). Received: ways=6"),
    (dict(ways=21, rotations=True), ValueError, r"\(20 with rotations\). Received: ways=21"),
    (dict(shots=3, queries=2), ValueError, "class 0 has 4. Received: shots=3, queries=2"),
    (dict(shots=-1), ValueError, "shots=-1"),
    (dict(images=np.zeros((20, 4, 3, 1), np.uint8), rotations=True), ValueError, "square images"),
    (dict(num_threads=-1), ValueError, "num_threads=-1"),
    (dict(num_threads=1000), ValueError, "num_threads=1000"),
])
def test_constructor_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        build(**kwargs)


def test_sample_rejects():
    sampler = build()
    with pytest.raises(ValueError, match="meta_batch_size=0"):
        sampler.sample(0, 1)
    with pytest.raises(ValueError, match="meta_batch_size=2147483648"):
        sampler.episode_indices(2**31, 1)
    with pytest.raises(TypeError, match="num_threads='2'"):
        sampler.sample(2, 1, num_threads="2")
    with pytest.raises(ValueError, match="num_threads=-2"):
        sampler.sample(2, 1, num_threads=-2)
    with pytest.raises(ValueError, match=r"Expected `seed` to be an integer in \[0, 2\*\*64\). Received: seed=-1"):
        sampler.sample(2, -1)  # seeds are uint64


def test_properties():
    sampler = build(ways=3, shots=2, queries=1, rotations=True, num_threads=3)
    assert (sampler.ways, sampler.shots, sampler.queries) == (3, 2, 1)
    assert sampler.rotations and sampler.num_threads == 3 and sampler.num_classes == 20
    assert tuple(sampler.image_shape) == (4, 4, 1)
    assert sampler.split is SPLIT
    assert build(num_threads=0).num_threads >= 1


def test_classes_too_small_for_an_episode_name_the_class():
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2, 1)
    labels, split = np.array([4, 9, 2], np.int64), np.array([9, 2, 4], np.int64)
    with pytest.raises(ValueError, match="class 9 has 1"):
        _core.EpisodeSampler(images, labels, split, 3, 1, 1)


def test_stub_declares_the_sampler_and_regression_bindings():
    import ast
    import pathlib

    import keras_meta

    stub = ast.parse((pathlib.Path(keras_meta.__file__).parent / "_core.pyi").read_text())
    top = {n.name: n for n in stub.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    for name in ("sinusoid", "linear", "polynomial", "step_function", "EpisodeSampler"):
        assert name in top and hasattr(_core, name), name
    members = {n.name for n in top["EpisodeSampler"].body if isinstance(n, ast.FunctionDef)}
    public = {m for m in dir(_core.EpisodeSampler) if not m.startswith("_")}
    assert public == members - {"__init__"}
    for name in ("sinusoid", "linear", "polynomial", "step_function"):
        signature = getattr(_core, name).__doc__.split(") ->")[0]
        bound = re.findall(r"[(,]\s*(\w+):", signature)
        assert [a.arg for a in top[name].args.args] == bound, name
