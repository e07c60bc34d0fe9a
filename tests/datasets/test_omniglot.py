import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from keras_meta.datasets import omniglot

# Shapes drawn in black ink on white 105x105 paper, like Omniglot's files.
_SHAPES = {
    "bar": lambda d: d.rectangle((45, 5, 60, 100), fill=0),  # vertical bar, centre column
    "top": lambda d: d.rectangle((5, 5, 100, 30), fill=0),  # band across the top
    "left": lambda d: d.rectangle((5, 5, 30, 100), fill=0),  # band down the left side
}

# split folder -> alphabet -> character -> (shape, number of drawings)
_TREE = {
    "images_background": {
        "Alpha": {"character01": ("bar", 3), "character02": ("top", 2)},
        "Beta": {"character01": ("left", 2), "character02": ("bar", 2), "character03": ("top", 3)},
    },
    "images_evaluation": {
        "Gamma": {"character01": ("left", 4), "character02": ("top", 2)},
    },
}


def _write_png(path, shape, mode="1"):
    image = Image.new("L", (105, 105), 255)
    _SHAPES[shape](ImageDraw.Draw(image))
    image.convert(mode).save(path)


def _write_tree(root, tree=_TREE):
    for section, alphabets in tree.items():
        for alphabet, characters in alphabets.items():
            for character, (shape, count) in characters.items():
                folder = root / section / alphabet / character
                folder.mkdir(parents=True)
                for k in range(count):
                    _write_png(folder / f"{k:04d}_{k + 1:02d}.png", shape)
    return root


@pytest.fixture
def tree(tmp_path):
    return _write_tree(tmp_path / "omniglot")


def test_standard_layout_classes_splits_and_shapes(tree):
    ds = omniglot(tree)
    assert ds.num_classes == 7
    assert len(ds) == 3 + 2 + 2 + 2 + 3 + 4 + 2
    assert ds.images.shape == (18, 28, 28, 1)
    assert ds.images.dtype == np.uint8 and ds.images.flags.c_contiguous
    assert ds.labels.dtype == np.int64
    assert ds.class_names == (
        "Alpha/character01", "Alpha/character02",
        "Beta/character01", "Beta/character02", "Beta/character03",
        "Gamma/character01", "Gamma/character02",
    )  # fmt: skip
    assert ds.alphabets == ("Alpha", "Alpha", "Beta", "Beta", "Beta", "Gamma", "Gamma")
    np.testing.assert_array_equal(ds.background_classes, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(ds.evaluation_classes, [5, 6])
    np.testing.assert_array_equal(np.bincount(ds.labels), [3, 2, 2, 2, 3, 4, 2])


def test_pixels_are_resized_and_inverted(tree):
    ds = omniglot(tree, image_size=20)
    assert ds.image_shape == (20, 20, 1)
    shapes = [_TREE[s][a][c][0] for s in _TREE for a in _TREE[s] for c in _TREE[s][a]]
    for class_id, shape in enumerate(shapes):
        image = ds.images[ds.labels == class_id][0, :, :, 0].astype(int)
        bar, top, left = image[3:17, 9:11].mean(), image[1:5, 3:17].mean(), image[3:17, 1:5].mean()
        corner = image[17:, 17:].mean()  # blank in every shape
        assert corner < 10, shape
        bright = {"bar": bar, "top": top, "left": left}[shape]
        assert bright > 240, (shape, bright)
        others = [v for k, v in {"bar": bar, "top": top, "left": left}.items() if k != shape]
        # Bands overlap the bar only at their ends, so at most a sliver is lit.
        assert min(others) < 80, (shape, others)


def test_invert_false_keeps_dark_ink(tree):
    ds = omniglot(tree, invert=False)
    first = ds.images[0, :, :, 0]
    assert first[2:26, 13:15].mean() < 15 and first[24:, 24:].mean() > 245


def test_grayscale_and_transparent_pngs(tmp_path):
    folder = tmp_path / "A" / "c1"
    folder.mkdir(parents=True)
    _write_png(folder / "gray.png", "bar", mode="L")
    rgba = Image.new("RGBA", (105, 105), (0, 0, 0, 0))  # transparent = paper
    ImageDraw.Draw(rgba).rectangle((45, 5, 60, 100), fill=(0, 0, 0, 255))
    rgba.save(folder / "rgba.png")
    ds = omniglot(tmp_path)
    for image in ds.images[..., 0]:
        assert image[2:26, 13:15].mean() > 240 and image[:, :4].mean() < 10


def test_single_folder_of_alphabets_is_split_by_alphabet(tree):
    # Alpha (2 classes) then Beta (3): one alphabet must stay for evaluation, so
    # background is Alpha alone although Alpha+Beta would be nearer 2/3 of 5.
    ds = omniglot(tree / "images_background")
    assert ds.num_classes == 5
    np.testing.assert_array_equal(ds.background_classes, [0, 1])
    np.testing.assert_array_equal(ds.evaluation_classes, [2, 3, 4])
    assert set(ds.alphabets[i] for i in ds.evaluation_classes) == {"Beta"}


def test_only_one_standard_folder_leaves_the_other_split_empty(tree, tmp_path):
    os.rename(tree / "images_evaluation", tmp_path / "moved")
    ds = omniglot(tree)
    assert ds.num_classes == 5 and ds.evaluation_classes.size == 0


def test_hidden_and_non_png_files_are_ignored(tree):
    (tree / "images_background" / "Alpha" / ".DS_Store").write_text("x")
    (tree / "images_background" / "Alpha" / "character01" / "notes.txt").write_text("x")
    (tree / "images_background" / ".hidden_alphabet").mkdir()
    assert omniglot(tree).num_classes == 7


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist. Received: path="):
        omniglot(tmp_path / "nowhere")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        omniglot(tmp_path / "file.png")


def test_empty_directory(tmp_path):
    with pytest.raises(ValueError, match="alphabet folders.*Received: path="):
        omniglot(tmp_path)
    (tmp_path / "images_background").mkdir()
    with pytest.raises(ValueError, match="images_background.*has none"):
        omniglot(tmp_path)


def test_images_directly_under_an_alphabet(tree):
    _write_png(tree / "images_evaluation" / "Gamma" / "stray.png", "bar")
    with pytest.raises(ValueError, match="directly under an alphabet folder.*stray.png"):
        omniglot(tree)


def test_pointed_at_a_character_folder(tree):
    with pytest.raises(ValueError, match="not images"):
        omniglot(tree / "images_background" / "Alpha" / "character01")


def test_alphabet_without_characters_and_character_without_images(tree):
    (tree / "images_evaluation" / "Empty").mkdir()
    with pytest.raises(ValueError, match="character folders.*Empty"):
        omniglot(tree)
    (tree / "images_evaluation" / "Empty" / "character01").mkdir()
    with pytest.raises(ValueError, match=".png images.*character01"):
        omniglot(tree)


def test_nested_folder_inside_a_character(tree):
    (tree / "images_background" / "Beta" / "character02" / "extra").mkdir()
    with pytest.raises(ValueError, match="subfolder"):
        omniglot(tree)


def test_unreadable_image(tree):
    bad = tree / "images_background" / "Beta" / "character03" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="unreadable file.*broken.png"):
        omniglot(tree)


@pytest.mark.parametrize("size, error", [(0, ValueError), (2.5, TypeError), (True, TypeError)])
def test_bad_image_size(tree, size, error):
    with pytest.raises(error, match="image_size"):
        omniglot(tree, image_size=size)
