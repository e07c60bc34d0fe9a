"""`ImageDataset`, the value every loader returns, and `from_arrays`."""

import dataclasses
import os

import numpy as np

from keras_meta.datasets import _io, _pixels

# Omniglot keeps about 3/5 of its classes for background; 2/3 is the split the
# library uses everywhere a dataset brings none of its own.
BACKGROUND_FRACTION = 2 / 3

_SPLIT_ALIASES = {
    "background": "background",
    "train": "background",
    "evaluation": "evaluation",
    "test": "evaluation",
    "all": "all",
}


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ImageDataset:
    """A labeled image collection with a background/evaluation class split.

    Every loader in `keras_meta.datasets` returns one. The arrays are in the layout
    the few-shot episode sampler consumes without copying: `images` is `uint8`
    `[N, H, W, C]` C-contiguous, `labels` is `int64` `[N]` and every class id in
    `0..num_classes - 1` has at least one image. The constructor checks these
    invariants; use `from_arrays` to build one from arrays that need converting.

    Attributes:
        images: `uint8` array `[N, H, W, C]`, C-contiguous, bright strokes on black
            for the built-in datasets.
        labels: `int64` array `[N]`, class ids in `0..num_classes - 1`.
        class_names: Tuple of `num_classes` strings, indexed by class id.
        background_classes: Sorted `int64` array of the class ids used for
            meta-training (Omniglot's "background" set).
        evaluation_classes: Sorted `int64` array of the class ids held out for
            meta-testing, disjoint from `background_classes`.
        alphabets: `None`, or a tuple of `num_classes` strings naming the alphabet
            (script or font) each class belongs to.

    Example:

    ```python
    ds = km.datasets.glyphs()
    train_ids = ds.split("background")
    first_image_of_class_3 = ds.images[ds.labels == 3][0]
    ```
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple
    background_classes: np.ndarray
    evaluation_classes: np.ndarray
    alphabets: tuple = None

    def __post_init__(self):
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                "Expected `images` to be a uint8 array of shape [N, H, W, C]. "
                f"Received: images={_describe(images)}"
            )
        if not images.flags.c_contiguous:
            raise ValueError(
                "Expected `images` to be C-contiguous. Received: a non-contiguous "
                f"array of shape {images.shape}"
            )
        if (
            not isinstance(labels, np.ndarray)
            or labels.dtype != np.int64
            or labels.shape != images.shape[:1]
        ):
            raise ValueError(
                f"Expected `labels` to be an int64 array of shape ({images.shape[0]},). "
                f"Received: labels={_describe(labels)}"
            )
        if not labels.flags.c_contiguous:
            raise ValueError("Expected `labels` to be C-contiguous.")
        if not isinstance(self.class_names, tuple) or not all(
            isinstance(n, str) for n in self.class_names
        ):
            raise ValueError(
                "Expected `class_names` to be a tuple of strings. "
                f"Received: class_names={type(self.class_names).__name__}"
            )
        num_classes = len(self.class_names)
        counts = np.bincount(labels, minlength=num_classes) if labels.size else np.zeros(0)
        if labels.size == 0 or labels.min() < 0 or counts.size != num_classes or counts.min() == 0:
            raise ValueError(
                f"Expected `labels` to use every class id in 0..{num_classes - 1} "
                f"(one per class name) at least once. Received: labels with values "
                f"{_value_range(labels)} for {num_classes} class names"
            )
        for name in ("background_classes", "evaluation_classes"):
            ids = getattr(self, name)
            if (
                not isinstance(ids, np.ndarray)
                or ids.dtype != np.int64
                or ids.ndim != 1
                or (ids.size and (ids.min() < 0 or ids.max() >= num_classes))
                or np.any(np.diff(ids) <= 0)
            ):
                raise ValueError(
                    f"Expected `{name}` to be a sorted, duplicate-free int64 array of "
                    f"class ids in [0, {num_classes}). Received: {name}={_describe(ids)}"
                )
        if np.intersect1d(self.background_classes, self.evaluation_classes).size:
            raise ValueError(
                "Expected `background_classes` and `evaluation_classes` to be disjoint. "
                "Received: shared class ids "
                f"{np.intersect1d(self.background_classes, self.evaluation_classes)[:10].tolist()}"
            )
        if self.alphabets is not None and (
            not isinstance(self.alphabets, tuple)
            or len(self.alphabets) != num_classes
            or not all(isinstance(a, str) for a in self.alphabets)
        ):
            raise ValueError(
                f"Expected `alphabets` to be None or a tuple of {num_classes} strings "
                f"(one per class). Received: alphabets={_describe(self.alphabets)}"
            )

    @property
    def num_classes(self):
        """The number of classes, `len(class_names)`."""
        return len(self.class_names)

    @property
    def image_shape(self):
        """The shape of one image, `(H, W, C)`."""
        return tuple(self.images.shape[1:])

    def __len__(self):
        return int(self.images.shape[0])

    def __repr__(self):
        alphabets = "" if self.alphabets is None else f", alphabets={len(set(self.alphabets))}"
        return (
            f"ImageDataset(images={len(self)}x{self.image_shape}, "
            f"classes={self.num_classes}, background={self.background_classes.size}, "
            f"evaluation={self.evaluation_classes.size}{alphabets})"
        )

    def split(self, name):
        """The class ids of a split, ready to pass as a sampler's `split`.

        Args:
            name: `"background"` (alias `"train"`), `"evaluation"` (alias
                `"test"`), or `"all"`. There is no built-in validation split; carve
                one out of the background ids, e.g. `ds.split("train")[-100:]`.

        Returns:
            A new sorted `int64` array of class ids.

        Raises:
            ValueError: If `name` is not one of the names above.
        """
        key = _SPLIT_ALIASES.get(name) if isinstance(name, str) else None
        if key is None:
            raise ValueError(
                f"Expected `name` to be one of {sorted(_SPLIT_ALIASES)}. Received: name={name!r}"
            )
        if key == "all":
            return np.arange(self.num_classes, dtype=np.int64)
        return getattr(self, f"{key}_classes").copy()

    def alphabet_of(self, class_id):
        """The alphabet name of class `class_id`, or `None` without alphabet metadata."""
        return None if self.alphabets is None else self.alphabets[class_id]

    def save(self, path):
        """Writes the dataset to an `.npz` file that `from_arrays(path)` reads back.

        The write is atomic: the file appears complete or not at all.

        Args:
            path: Destination file path; `.npz` is not appended.

        Returns:
            The path written, as a string.
        """
        arrays = {
            "images": self.images,
            "labels": self.labels,
            "class_names": np.asarray(self.class_names, dtype=str),
            "background_classes": self.background_classes,
            "evaluation_classes": self.evaluation_classes,
        }
        if self.alphabets is not None:
            arrays["alphabets"] = np.asarray(self.alphabets, dtype=str)
        path = os.fspath(path)
        _io.atomic_save_npz(path, arrays)
        return path


def from_arrays(
    images,
    labels=None,
    *,
    class_names=None,
    background_classes=None,
    evaluation_classes=None,
    alphabets=None,
):
    """Validates labeled images and returns them as an `ImageDataset`.

    Conversions (anything else is rejected with an error naming the argument):

    - `images` of rank 3 `[N, H, W]` are grayscale and gain a channel axis.
    - Floating-point images must be finite and in `[0, 1]`; they are scaled by 255
      and rounded to `uint8`. Floats in `[0, 255]` are rejected rather than guessed.
    - Other integer image dtypes are accepted when every value is in `[0, 255]`.
      An array carries no bit depth (a Python list becomes int64), so wider data
      such as 16-bit `uint16` is rejected rather than guessed: divide it by 257.
    - Boolean images are rejected: True could mean ink or paper.
    - Channels must number 1 to 4, which catches channels-first `[N, C, H, W]`.
    - Without `class_names`, label values need not be contiguous: the sorted
      distinct values become class ids `0..C-1` and their decimal strings the class
      names. With `class_names`, labels must already be `0..len(class_names)-1`,
      each used at least once.

    Without an explicit split, classes are divided like Omniglot's alphabets when
    `alphabets` is given (whole alphabets, in sorted name order, about 2/3 of the
    classes to background), otherwise the first `round(2/3 * C)` class ids are
    background and the rest evaluation. Giving only one of `background_classes` /
    `evaluation_classes` makes the other its complement.

    Args:
        images: Array-like `[N, H, W, C]` or `[N, H, W]`, or the path of an `.npz`
            file holding `images` and `labels` (and optionally `class_names`,
            `background_classes`, `evaluation_classes`, `alphabets`, as written by
            `ImageDataset.save`). Keyword arguments override the file's entries.
        labels: Integer array-like `[N]`; must be `None` when `images` is a path.
        class_names: Optional sequence of C strings indexed by class id.
        background_classes: Optional class ids for meta-training, in the original
            label values.
        evaluation_classes: Optional class ids for meta-testing, in the original
            label values; must not overlap `background_classes`.
        alphabets: Optional sequence of C strings, the alphabet of each class.

    Returns:
        An `ImageDataset`. `images` is a new array unless it already was `uint8`
        `[N, H, W, C]` C-contiguous.

    Raises:
        FileNotFoundError: If `images` is a path that does not exist.
        TypeError: If an argument has an unusable type or dtype.
        ValueError: If shapes, values or splits are inconsistent.

    Example:

    ```python
    ds = km.datasets.from_arrays(x_uint8, y)        # x: [N, 28, 28]
    ds = km.datasets.from_arrays("my_dataset.npz")
    ```
    """
    if isinstance(images, (str, os.PathLike)):
        if labels is not None:
            raise ValueError(
                "Expected `labels` to be None when `images` is an .npz path (the file "
                f"holds the labels). Received: labels={_describe(labels)}"
            )
        stored = _load_npz(images)
        images, labels = stored.pop("images"), stored.pop("labels")
        class_names = stored.get("class_names") if class_names is None else class_names
        alphabets = stored.get("alphabets") if alphabets is None else alphabets
        if background_classes is None and evaluation_classes is None:
            background_classes = stored.get("background_classes")
            evaluation_classes = stored.get("evaluation_classes")
    elif labels is None:
        raise ValueError("Expected `labels` to be given with an image array. Received: labels=None")

    images = _convert_images(images)
    labels = _convert_labels(labels, images.shape[0])

    if class_names is None:
        values, labels = np.unique(labels, return_inverse=True)
        labels = np.ascontiguousarray(labels.reshape(-1), dtype=np.int64)
        class_names = tuple(str(v) for v in values.tolist())
    else:
        class_names = _string_tuple(class_names, "class_names")
        num = len(class_names)
        if num == 0:
            raise ValueError("Expected `class_names` to be non-empty. Received: class_names=()")
        if labels.max() >= num:
            raise ValueError(
                f"Expected `labels` in [0, {num}) to match {num} class names. "
                f"Received: labels with values {_value_range(labels)}"
            )
        missing = np.flatnonzero(np.bincount(labels, minlength=num) == 0)
        if missing.size:
            raise ValueError(
                "Expected every class in `class_names` to have at least one image. "
                f"Received: no labels for class ids {missing[:10].tolist()}"
            )
        values = np.arange(num, dtype=np.int64)
    num_classes = len(class_names)

    if alphabets is not None:
        alphabets = _string_tuple(alphabets, "alphabets")
        if len(alphabets) != num_classes:
            raise ValueError(
                f"Expected `alphabets` to name one alphabet per class ({num_classes}). "
                f"Received: {len(alphabets)} alphabets"
            )

    background = _to_class_ids(background_classes, values, "background_classes")
    evaluation = _to_class_ids(evaluation_classes, values, "evaluation_classes")
    every = np.arange(num_classes, dtype=np.int64)
    if background is None and evaluation is None:
        if alphabets is not None:
            background, evaluation = split_by_alphabet(alphabets, sorted(set(alphabets)))
        else:
            cut = int(round(BACKGROUND_FRACTION * num_classes))
            background, evaluation = every[:cut], every[cut:]
    elif background is None:
        background = np.setdiff1d(every, evaluation)
    elif evaluation is None:
        evaluation = np.setdiff1d(every, background)
    shared = np.intersect1d(background, evaluation)
    if shared.size:
        raise ValueError(
            "Expected `background_classes` and `evaluation_classes` to be disjoint. "
            f"Received: both contain {values[shared][:10].tolist()}"
        )

    return ImageDataset(
        images=images,
        labels=labels,
        class_names=class_names,
        background_classes=background,
        evaluation_classes=evaluation,
        alphabets=alphabets,
    )


def split_by_alphabet(class_alphabets, alphabet_order, fraction=BACKGROUND_FRACTION):
    """Splits classes by whole alphabets, Omniglot style.

    Walks `alphabet_order` and gives background the leading alphabets whose class
    count comes closest to `fraction` of all classes, keeping at least one
    alphabet on each side when there are two or more.

    Args:
        class_alphabets: Sequence, the alphabet of each class id.
        alphabet_order: The alphabets in the order background is filled.
        fraction: Target share of classes for background.

    Returns:
        `(background_classes, evaluation_classes)`, sorted `int64` arrays.
    """
    class_alphabets = list(class_alphabets)
    counts = [sum(1 for a in class_alphabets if a == name) for name in alphabet_order]
    cumulative = np.cumsum(counts)
    target = fraction * len(class_alphabets)
    candidates = range(1, len(alphabet_order)) if len(alphabet_order) > 1 else [1]
    # Ties go to the smaller prefix so the choice never depends on float noise.
    cut = min(candidates, key=lambda k: (abs(cumulative[k - 1] - target), k))
    background_names = set(alphabet_order[:cut])
    is_background = np.array([a in background_names for a in class_alphabets], dtype=bool)
    ids = np.arange(len(class_alphabets), dtype=np.int64)
    return ids[is_background], ids[~is_background]


def _load_npz(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Expected `images` to be an existing .npz file. Received: images={path!r}"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {key: data[key] for key in data.files}
    except Exception as error:
        raise ValueError(
            f"Expected `images` to be a readable .npz file. Received: images={path!r} ({error})"
        ) from error
    missing = [key for key in ("images", "labels") if key not in stored]
    if missing:
        raise ValueError(
            f"Expected the .npz file to hold `images` and `labels` arrays. Received: "
            f"images={path!r} with keys {sorted(stored)}"
        )
    return stored


def _convert_images(images):
    try:
        array = np.asarray(images)
    except Exception as error:
        raise TypeError(
            f"Expected `images` to be an array. Received: images={type(images).__name__}"
        ) from error
    kind = array.dtype.kind
    if kind == "b":
        raise TypeError(
            "Expected `images` to have a numeric dtype; boolean images are refused "
            "because True could mean ink or paper (pass images.astype(np.uint8) * 255 "
            "for white True pixels). Received: images.dtype=bool"
        )
    if kind not in "uif":
        raise TypeError(
            "Expected `images` to have dtype uint8, another integer dtype with values in "
            f"[0, 255], or float in [0, 1]. Received: images.dtype={array.dtype}"
        )
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.ndim != 4:
        raise ValueError(
            "Expected `images` to have rank 4 [N, H, W, C] or rank 3 [N, H, W]. "
            f"Received: images.shape={array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError(f"Expected `images` to be non-empty. Received: images.shape={array.shape}")
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(
            "Expected `images` to have non-zero height and width. "
            f"Received: images.shape={array.shape}"
        )
    if not 1 <= array.shape[3] <= 4:
        raise ValueError(
            "Expected `images` to be channels-last with 1 to 4 channels [N, H, W, C]; "
            "a channels-first array needs np.transpose(images, (0, 2, 3, 1)). "
            f"Received: images.shape={array.shape}"
        )
    if kind == "f":
        name, hint = "float `images`", " (divide [0, 255] data by 255 or pass uint8)"
    else:
        name, hint = "integer `images`", " (divide 16-bit data by 257 or pass uint8)"
    array = _pixels.to_uint8(
        array, _pixels.full_scale(array.dtype), name, f"images.dtype={array.dtype}", hint
    )
    return np.ascontiguousarray(array)


def _convert_labels(labels, num_images):
    try:
        array = np.asarray(labels)
    except Exception as error:
        raise TypeError(
            f"Expected `labels` to be an integer array. Received: labels={type(labels).__name__}"
        ) from error
    if array.dtype.kind not in "ui":
        raise TypeError(
            f"Expected `labels` to have an integer dtype. Received: labels.dtype={array.dtype}"
        )
    if array.ndim != 1:
        raise ValueError(
            f"Expected `labels` to have rank 1 [N]. Received: labels.shape={array.shape}"
        )
    if array.shape[0] != num_images:
        raise ValueError(
            f"Expected one label per image ({num_images}). Received: labels.shape={array.shape}"
        )
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"Expected `labels` to fit in int64. Received: max label {array.max()}")
    array = np.ascontiguousarray(array, dtype=np.int64)
    if array.min() < 0:
        raise ValueError(
            "Expected `labels` to be non-negative. "
            f"Received: labels with values {_value_range(array)}"
        )
    return array


def _to_class_ids(ids, values, name):
    """Maps split ids given in original label values to class ids."""
    if ids is None:
        return None
    array = np.asarray(ids)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind not in "ui" or array.ndim != 1:
        raise TypeError(
            f"Expected `{name}` to be a 1-D sequence of integer class ids. "
            f"Received: {name}={_describe(array)}"
        )
    array = np.unique(array.astype(np.int64))
    positions = np.searchsorted(values, array)
    found = (positions < values.size) & (values[np.minimum(positions, values.size - 1)] == array)
    if not np.all(found):
        raise ValueError(
            f"Expected `{name}` to contain only labels present in the data. "
            f"Received: unknown ids {array[~found][:10].tolist()}"
        )
    return positions.astype(np.int64)


def _string_tuple(values, name):
    if isinstance(values, str):
        raise TypeError(
            f"Expected `{name}` to be a sequence of strings. Received: {name}={values!r}"
        )
    try:
        items = [v.item() if isinstance(v, np.generic) else v for v in values]
    except TypeError as error:
        raise TypeError(
            f"Expected `{name}` to be a sequence of strings. "
            f"Received: {name}={type(values).__name__}"
        ) from error
    if not all(isinstance(v, str) for v in items):
        raise TypeError(
            f"Expected `{name}` to contain only strings. Received: {name}={items[:5]!r}..."
        )
    return tuple(items)


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"array(shape={value.shape}, dtype={value.dtype})"
    return f"{type(value).__name__}"


def _value_range(array):
    if array.size == 0:
        return "(none)"
    return f"in [{int(array.min())}, {int(array.max())}]"
