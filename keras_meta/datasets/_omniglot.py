"""`omniglot()`: a local copy of Omniglot in its standard directory layout."""

import os

import numpy as np
from PIL import Image

from keras_meta.datasets import _pixels
from keras_meta.datasets._base import ImageDataset, split_by_alphabet

_SECTIONS = (("images_background", "background"), ("images_evaluation", "evaluation"))
_IMAGE_SUFFIX = ".png"
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def omniglot(path, image_size=28, *, invert=True):
    """Loads Omniglot (or any tree in its layout) from a local directory.

    Two layouts are accepted:

    - The standard one: `path/images_background/<alphabet>/<character>/*.png`
      and `path/images_evaluation/<alphabet>/<character>/*.png`. Background
      characters become `background_classes`, evaluation characters
      `evaluation_classes`; if only one of the two folders exists the other
      split is empty.
    - A single folder of alphabets, `path/<alphabet>/<character>/*.png` (for
      example `images_background` itself). Whole alphabets are then split like
      Omniglot's: in sorted name order, background takes the leading alphabets
      holding closest to 2/3 of the characters, keeping at least one alphabet
      for evaluation when there are two or more.

    Every character folder is one class. Folders and files are read in sorted
    name order, so class ids do not depend on the file system. Hidden entries
    (names starting with ".") and files other than `.png` are ignored, except
    that a `.png` at the wrong depth is an error.

    Files are decoded by content, so every mode Pillow reads works: bilevel,
    1- to 16-bit grayscale, palette, RGB, CMYK, YCbCr, HSV and LAB, with or
    without an alpha channel or a transparent color. Each image becomes 8-bit
    grayscale scaled from its bit depth (16-bit 65535 is white, transparent
    pixels are white paper; float images must be in [0, 1] and 32-bit integer
    ones in [0, 255], as in `from_arrays`), is resized to `image_size` x
    `image_size` with Lanczos filtering (the preprocessing of the MAML and
    Prototypical Networks code) and, with `invert=True`, inverted so that pen
    strokes are bright on black, the same polarity as `glyphs()` and MNIST.

    Args:
        path: Directory in one of the layouts above.
        image_size: Positive int, height and width of the returned images.
        invert: Whether to make strokes bright (Omniglot's files have black ink
            on white).

    Returns:
        An `ImageDataset` with `uint8` images `[N, image_size, image_size, 1]`,
        class names `"<alphabet>/<character>"` and per-class `alphabets`.

    Raises:
        FileNotFoundError: If `path` does not exist or is not a directory.
        ValueError: If the tree is empty or malformed (an image directly under
            an alphabet folder, an alphabet without character folders, a
            character folder without images or with subfolders), or an image
            file cannot be decoded, has a mode without a grayscale meaning, or
            holds values outside its mode's range. The message names the file
            and its mode.
        TypeError: If `path` is not a path or `image_size` is not an integer.

    Example:

    ```python
    ds = km.datasets.omniglot("/data/omniglot")   # holds images_background/...
    ds.num_classes, ds.image_shape                  # (1623, (28, 28, 1))
    ```
    """
    if isinstance(image_size, (bool, np.bool_)) or not isinstance(image_size, (int, np.integer)):
        raise TypeError(
            f"Expected `image_size` to be a positive integer. Received: image_size={image_size!r}"
        )
    if image_size <= 0:
        raise ValueError(
            f"Expected `image_size` to be a positive integer. Received: image_size={image_size!r}"
        )
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(
            f"Expected `path` to be a str or os.PathLike directory. Received: path={path!r}"
        )
    root = os.fspath(path)
    if not os.path.isdir(root):
        kind = "is not a directory" if os.path.exists(root) else "does not exist"
        raise FileNotFoundError(
            f"Expected `path` to be an Omniglot directory; it {kind}. Received: path={root!r}"
        )

    sections = [
        (os.path.join(root, folder), split)
        for folder, split in _SECTIONS
        if os.path.isdir(os.path.join(root, folder))
    ]
    standard_layout = bool(sections)
    if not standard_layout:
        sections = [(root, None)]

    characters = []  # (split, alphabet, character, [files])
    for section, split in sections:
        for alphabet in _alphabet_dirs(section, root):
            alphabet_dir = os.path.join(section, alphabet)
            for character in _character_dirs(alphabet_dir, root):
                files = _character_files(os.path.join(alphabet_dir, character), root)
                characters.append((split, alphabet, character, files))

    num_images = sum(len(files) for *_, files in characters)
    images = np.empty((num_images, image_size, image_size, 1), dtype=np.uint8)
    labels = np.empty(num_images, dtype=np.int64)
    position = 0
    for class_id, (*_, files) in enumerate(characters):
        for file in files:
            images[position, :, :, 0] = _load_image(file, image_size, invert, root)
            labels[position] = class_id
            position += 1

    alphabets = tuple(alphabet for _, alphabet, _, _ in characters)
    if standard_layout:
        ids = np.arange(len(characters), dtype=np.int64)
        splits = np.array([split for split, *_ in characters])
        background, evaluation = ids[splits == "background"], ids[splits == "evaluation"]
    else:
        background, evaluation = split_by_alphabet(alphabets, sorted(set(alphabets)))
    return ImageDataset(
        images=images,
        labels=labels,
        class_names=tuple(f"{alphabet}/{character}" for _, alphabet, character, _ in characters),
        background_classes=background,
        evaluation_classes=evaluation,
        alphabets=alphabets,
    )


def _visible_entries(directory):
    return sorted(name for name in os.listdir(directory) if not name.startswith("."))


def _is_image(directory, name):
    return name.lower().endswith(_IMAGE_SUFFIX) and os.path.isfile(os.path.join(directory, name))


def _alphabet_dirs(section, root):
    entries = _visible_entries(section)
    stray = [name for name in entries if _is_image(section, name)]
    if stray:
        raise ValueError(
            "Expected `path` to hold alphabet folders (<alphabet>/<character>/*.png), "
            f"not images. Received: path={root!r} with {os.path.join(section, stray[0])!r}"
        )
    alphabets = [name for name in entries if os.path.isdir(os.path.join(section, name))]
    if not alphabets:
        raise ValueError(
            "Expected `path` to contain alphabet folders "
            "(<alphabet>/<character>/*.png, optionally under images_background/ and "
            f"images_evaluation/). Received: path={root!r} where {section!r} has none"
        )
    return alphabets


def _character_dirs(alphabet_dir, root):
    entries = _visible_entries(alphabet_dir)
    stray = [name for name in entries if _is_image(alphabet_dir, name)]
    if stray:
        raise ValueError(
            "Expected images inside character folders (<alphabet>/<character>/*.png), "
            "not directly under an alphabet folder; if `path` is a single alphabet, "
            f"pass its parent. Received: path={root!r} with "
            f"{os.path.join(alphabet_dir, stray[0])!r}"
        )
    characters = [name for name in entries if os.path.isdir(os.path.join(alphabet_dir, name))]
    if not characters:
        raise ValueError(
            "Expected every alphabet folder to contain character folders. "
            f"Received: path={root!r} where {alphabet_dir!r} has none"
        )
    return characters


def _character_files(character_dir, root):
    entries = _visible_entries(character_dir)
    nested = [name for name in entries if os.path.isdir(os.path.join(character_dir, name))]
    if nested:
        raise ValueError(
            "Expected character folders to hold only images (<alphabet>/<character>/*.png). "
            f"Received: path={root!r} with a subfolder {os.path.join(character_dir, nested[0])!r}"
        )
    files = [
        os.path.join(character_dir, name) for name in entries if _is_image(character_dir, name)
    ]
    if not files:
        raise ValueError(
            f"Expected every character folder to contain .png images. "
            f"Received: path={root!r} where {character_dir!r} has none"
        )
    return files


def _load_image(file, image_size, invert, root):
    try:
        image = Image.open(file)
    except _DECODE_ERRORS as error:
        raise _unreadable(file, root, error) from error
    # Decoding errors are caught apart from conversion so that a refused mode
    # is reported as such, not as an unreadable file.
    with image:
        try:
            image.load()
        except _DECODE_ERRORS as error:
            raise _unreadable(file, root, error) from error
        received = f"path={root!r} with file {file!r}"
        gray = _pixels.paper_gray(image, received, _pixels.png_bit_depth(file))
    if gray.size != (image_size, image_size):
        gray = gray.resize((image_size, image_size), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.uint8)
    return 255 - pixels if invert else pixels


def _unreadable(file, root, error):
    return ValueError(
        f"Expected readable .png images under `path`. Received: path={root!r} with "
        f"unreadable file {file!r} ({type(error).__name__}: {error})"
    )
