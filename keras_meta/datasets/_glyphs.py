"""`glyphs()`: the embedded procedural Omniglot-like dataset, from Hershey fonts.

No few-shot benchmark can be downloaded at run time, so the default dataset is
drawn locally from the Hershey stroke fonts (PyPI `hershey-fonts`). Strokes
rather than bitmaps are what make this work: each drawing perturbs the pen
strokes themselves, much as Omniglot's 20 drawers each wrote a character.

How a class set is made (independent of `seed`, `drawings` and `image_size`):

1. Every non-empty glyph of the selected fonts, fonts taken in `FONT_ORDER`
   (plain text fonts before the symbol fonts that reuse their letters).
   Exact stroke duplicates keep their first font; tiny marks (extent under 0.3
   of the font's em height: `.`, `,`, `'`) are dropped as shapeless at 28x28.
2. Each glyph, in each of `rotations` (multiples of 90 degrees), is a candidate
   class, rotated copies after all upright glyphs. Rotating characters into new
   classes is the standard Omniglot augmentation (Santoro et al. 2016, Vinyals
   et al. 2016), and is needed here: the 32 fonts' 3,067 table entries hold
   only about 1,230 distinct glyphs (1,191 once tiny marks are dropped, 874
   after step 3).
3. Candidates are rendered once without noise at 28x28 and blurred by about a
   pixel; a candidate whose rendering has cosine similarity >= `DEDUP_THRESHOLD`
   with an already kept class is dropped.
   That removes same-letter-same-style pairs across fonts (simplex vs duplex),
   symmetric rotations ("O" by 180) and coincidences ("u" by 180 is "n").
4. Each font is an alphabet. Whole font families are held out for evaluation
   (`EVALUATION_FONTS`: gothic, Greek, Cyrillic and four symbol fonts, about a
   third of the classes), so styles that nearly match never straddle the split.
"""

import importlib.metadata
import json
import os
import warnings
import zlib

import numpy as np
from PIL import Image, ImageDraw

from keras_meta.datasets import _io
from keras_meta.datasets._base import ImageDataset

# Bump when anything that changes the produced bytes changes; it is part of the
# cache file name so stale caches are never read.
FORMAT_VERSION = 1

FONT_ORDER = (
    "rowmans", "rowmand", "rowmant", "timesr", "timesrb", "timesi", "timesib",
    "futural", "futuram", "scripts", "scriptc", "cursive",
    "gothiceng", "gothicger", "gothicita", "gothgbt", "gothgrt", "gothitt",
    "greeks", "greek", "greekc", "timesg", "cyrillic", "cyrilc_1", "japanese",
    "astrology", "markers", "mathlow", "mathupp", "meteorology", "music", "symbolic",
)  # fmt: skip

EVALUATION_FONTS = frozenset({
    "gothiceng", "gothicger", "gothicita", "gothgbt", "gothgrt", "gothitt",
    "greeks", "greek", "greekc", "timesg", "cyrillic", "cyrilc_1",
    "astrology", "markers", "meteorology", "music",
})  # fmt: skip

DEDUP_THRESHOLD = 0.96
_MIN_EXTENT_EM = 0.3
_CANONICAL_SIZE = 28
_CANONICAL_WIDTH = 2.0
_SUPERSAMPLE = 4
# Share of the canvas covered by a glyph's larger side before the random scale.
_FILL = 0.7
_ROTATION_MATRICES = {
    0: np.array([[1.0, 0.0], [0.0, 1.0]]),
    90: np.array([[0.0, -1.0], [1.0, 0.0]]),
    180: np.array([[-1.0, 0.0], [0.0, -1.0]]),
    270: np.array([[0.0, 1.0], [-1.0, 0.0]]),
}


def glyphs(
    cache_dir=None,
    drawings=20,
    image_size=28,
    seed=0,
    verbose=1,
    *,
    fonts=None,
    rotations=(0, 90, 180, 270),
):
    """Loads the procedural Omniglot-like dataset, building and caching it once.

    With the defaults: 3,043 classes (874 upright glyphs plus their distinct
    quarter turns) from 26 of the 32 Hershey fonts (the other 6 only repeat
    glyphs of earlier fonts), 20 drawings each, 28x28x1 `uint8` with bright
    strokes on black; 2,025 background and 1,018 evaluation classes. See the
    module docstring for how classes and splits are chosen.

    The classes already include rotated glyphs, so do not also turn on a
    sampler's rotation augmentation (`FewShotClassification(rotations=...)`):
    its rotated copies would duplicate existing classes. For that recipe,
    build `glyphs(rotations=(0,))` instead.

    Each drawing applies, in order: a smooth random warp of the strokes (two
    low-frequency sine displacement waves), a small random shift of every stroke
    and of every stroke point, then a random affine map (rotation within +-10
    degrees, scale 0.85-1.1, aspect +-8%, shear +-0.15, translation within +-6% of
    the canvas), and draws the strokes with round joints and a random width of
    1.3-2.3 output pixels at 4x resolution, box-filtered down (anti-aliased).

    The result is a pure function of the arguments and the installed
    `hershey-fonts` data: each class draws from its own NumPy `SeedSequence`
    keyed by (seed, font, glyph, rotation), so a class's drawings do not depend
    on which other classes are built. Equal arguments give byte-identical arrays
    with the same NumPy and Pillow versions.

    The first call builds the dataset (about 30 seconds of one CPU core at the
    default size) and writes it atomically to `cache_dir` (an 8 MB compressed
    `.npz` whose name holds a hash of the arguments); later calls load the file
    in well under a second. A cache file that fails to load, or whose checksum
    does not match its contents, is rebuilt with a warning. A cache that cannot
    be written (read-only or invalid `KERAS_META_HOME`, full disk) costs only
    time: the built dataset is returned with a `CacheWarning`. Temporary files
    of a killed build are deleted by a later call once unmodified for an hour;
    younger ones may belong to a concurrent build and are kept.

    Args:
        cache_dir: Directory of the cache file. Defaults to
            `$KERAS_META_HOME/datasets`, or `~/.keras_meta/datasets`.
        drawings: Positive int, drawings per class.
        image_size: Int >= 8, height and width of the square images.
        seed: Non-negative int seeding the drawing noise.
        verbose: 0 for silence, 1 for a progress bar on stderr while building.
        fonts: Optional sequence of font names (see `FONT_ORDER`) to build from
            a subset, e.g. for quick experiments and tests. Classes are
            deduplicated within the subset only.
        rotations: Angles in degrees from {0, 90, 180, 270}, including 0, whose
            rotated glyphs become classes. `(0,)` keeps upright glyphs only
            (874 classes).

    Returns:
        An `ImageDataset` whose `alphabets` are font names and whose
        `class_names` read `"font/code"` or `"font/code/rot90"`, `code` being the
        glyph's position in the font's table.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range or names an unknown font.

    Warns:
        CacheWarning: If the cache file could not be written.

    Example:

    ```python
    ds = km.datasets.glyphs()               # built once, then read from cache
    task = km.tasks.FewShotClassification(
        ds.images, ds.labels, ways=5, shots=1, queries=15,
        split=ds.split("background"))
    ```
    """
    drawings = _check_int(drawings, "drawings", 1)
    image_size = _check_int(image_size, "image_size", 8)
    seed = _check_int(seed, "seed", 0)
    verbose = _check_int(verbose, "verbose", 0)
    fonts = _check_fonts(fonts)
    rotations = _check_rotations(rotations)

    params = {
        "format": FORMAT_VERSION,
        "hershey_fonts": _hershey_version(),
        "drawings": drawings,
        "image_size": image_size,
        "seed": seed,
        "fonts": list(fonts),
        "rotations": list(rotations),
    }
    params_json = json.dumps(params, sort_keys=True)
    digest = _io.checksum(np.frombuffer(params_json.encode(), dtype=np.uint8))[:16]
    cache_dir = _io.default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    path = os.path.join(cache_dir, f"glyphs-v{FORMAT_VERSION}-{digest}.npz")
    # Every call, hit or miss: debris of a killed build of any glyphs configuration
    # would otherwise stay forever once its own configuration is cached or unused.
    _io.remove_stale_temporaries(cache_dir, "glyphs-v*.npz")

    if os.path.exists(path):
        dataset, problem = _read_cache(path, params_json)
        if dataset is not None:
            return dataset
        warnings.warn(f"Rebuilding the glyphs dataset cache {path!r}: {problem}", _io.CacheWarning,
                      stacklevel=2)

    dataset = _build(drawings, image_size, seed, verbose, fonts, rotations)
    arrays = _dataset_arrays(dataset)
    arrays["params"] = np.asarray(params_json)
    arrays["checksum"] = np.asarray(_content_checksum(arrays))
    _io.save_cache(path, arrays)
    return dataset


def _build(drawings, image_size, seed, verbose, fonts, rotations):
    """Builds the dataset in memory without touching the cache (see `glyphs`)."""
    classes = _class_strokes(fonts, rotations)
    num_classes = len(classes)
    images = np.empty((num_classes * drawings, image_size, image_size, 1), dtype=np.uint8)
    progress = _io.Progress(num_classes, "Building glyphs dataset", verbose)
    for index, (font, code, rotation, strokes) in enumerate(classes):
        rng = np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(zlib.crc32(font.encode()), code, rotation))
        )
        images[index * drawings : (index + 1) * drawings, :, :, 0] = _draw_class(
            strokes, rng, drawings, image_size
        )
        progress.update(index + 1)
    progress.update(num_classes)

    names = tuple(
        f"{font}/{code}" + (f"/rot{rotation}" if rotation else "")
        for font, code, rotation, _ in classes
    )
    alphabets = tuple(font for font, _, _, _ in classes)
    ids = np.arange(num_classes, dtype=np.int64)
    held_out = np.array([a in EVALUATION_FONTS for a in alphabets], dtype=bool)
    return ImageDataset(
        images=images,
        labels=np.repeat(ids, drawings),
        class_names=names,
        background_classes=ids[~held_out],
        evaluation_classes=ids[held_out],
        alphabets=alphabets,
    )


def _class_strokes(fonts=FONT_ORDER, rotations=(0, 90, 180, 270)):
    """The deduplicated classes as `(font, code, rotation, strokes)` tuples.

    `strokes` is a list of float64 `[points, 2]` arrays, centered, with the
    glyph's larger bounding-box side scaled to 1 and y pointing down.
    """
    upright = _font_glyphs(fonts)
    candidates = [(font, code, 0, strokes) for font, code, strokes in upright]
    for rotation in rotations:
        if rotation:
            matrix = _ROTATION_MATRICES[rotation].T
            candidates.extend(
                (font, code, rotation, [s @ matrix for s in strokes])
                for font, code, strokes in upright
            )
    renders = np.stack([_canonical(c[3]) for c in candidates]).astype(np.float64)
    keep = _greedy_dedup(_blur(renders).reshape(len(candidates), -1), DEDUP_THRESHOLD)
    return [candidates[i] for i in keep]


def _font_glyphs(fonts):
    # Imported here: only a build needs the font data, a cache hit does not.
    from HersheyFonts import HersheyFonts

    loader = HersheyFonts()
    seen = set()
    glyph_list = []
    for font in fonts:
        loader.load_default_font(font)
        options = loader.render_options
        em = options["bottom_line"] - options["cap_line"]
        table = loader.all_glyphs
        # Table keys are consecutive characters from " "; sorting them gives the
        # font's own glyph order on every Python, unlike set iteration.
        for key in sorted(table):
            raw = table[key].strokes
            if not raw:
                continue
            strokes = [np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in raw]
            points = np.concatenate(strokes)
            lo, hi = points.min(axis=0), points.max(axis=0)
            identity = tuple(tuple((s - lo).astype(np.int64).ravel().tolist()) for s in strokes)
            if identity in seen:
                continue
            seen.add(identity)
            extent = float((hi - lo).max())
            if extent < _MIN_EXTENT_EM * em:
                continue
            center = (lo + hi) / 2.0
            glyph_list.append((font, ord(key), [(s - center) / extent for s in strokes]))
    return glyph_list


def _blur(images):
    """Separable [1, 4, 6, 4, 1] binomial blur (about a 1-pixel Gaussian), unnormalised.

    Comparing blurred renders makes a one-pixel shift of a thin stroke count as
    the small change it is; the integer kernel keeps values exact integers.
    """
    kernel = (1.0, 4.0, 6.0, 4.0, 1.0)
    height, width = images.shape[1:]
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    rows = sum(k * padded[:, i : i + height, :] for i, k in enumerate(kernel))
    return sum(k * rows[:, :, i : i + width] for i, k in enumerate(kernel))


def _greedy_dedup(vectors, threshold, block=512):
    """Indices of `vectors` kept by a first-come greedy cosine-similarity filter.

    Inputs are integer-valued float64 (blurred uint8 pixels, at most 255 * 256),
    so every dot product is an exact integer below 2**53 whatever the BLAS
    summation order: the kept set is the same on every machine.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    norms[norms == 0] = 1.0
    kept = []
    for start in range(0, len(vectors), block):
        chunk = vectors[start : start + block]
        chunk_norms = norms[start : start + block]
        if kept:
            previous = vectors[kept]
            cos = (chunk @ previous.T) / np.outer(chunk_norms, norms[kept])
            blocked = cos.max(axis=1) >= threshold
        else:
            blocked = np.zeros(len(chunk), dtype=bool)
        within = (chunk @ chunk.T) / np.outer(chunk_norms, chunk_norms)
        chunk_kept = []
        for i in range(len(chunk)):
            if blocked[i] or (chunk_kept and within[i, chunk_kept].max() >= threshold):
                continue
            chunk_kept.append(i)
        kept.extend(start + i for i in chunk_kept)
    return kept


def _canonical(strokes):
    scale = _FILL * _CANONICAL_SIZE * _SUPERSAMPLE
    offset = _CANONICAL_SIZE * _SUPERSAMPLE / 2.0
    return _render([s * scale + offset for s in strokes], _CANONICAL_SIZE, _CANONICAL_WIDTH)


def _draw_class(strokes, rng, drawings, size):
    """`drawings` randomly perturbed drawings of `strokes`, `uint8` `[drawings, size, size]`.

    The noise for all drawings is drawn up front in a fixed order and applied
    with vectorized NumPy, so the random stream layout is explicit and the
    Python-level work is just the Pillow calls.
    """
    points = np.concatenate(strokes)
    stroke_of_point = np.repeat(np.arange(len(strokes)), [len(s) for s in strokes])
    n = drawings
    wave_angle, wave_direction, wave_phase = rng.uniform(0.0, 2 * np.pi, size=(3, n, 2))
    wave_frequency = rng.uniform(0.5, 1.5, size=(n, 2))
    wave_amplitude = rng.uniform(0.0, 0.04, size=(n, 2))
    stroke_shift = rng.normal(0.0, 0.015, size=(n, len(strokes), 2))
    point_jitter = rng.normal(0.0, 0.005, size=(n, len(points), 2))
    rotation = np.deg2rad(rng.uniform(-10.0, 10.0, size=n))
    scale = rng.uniform(0.85, 1.1, size=n)
    aspect = np.exp(rng.uniform(-0.08, 0.08, size=n))
    shear = rng.uniform(-0.15, 0.15, size=n)
    translation = rng.uniform(-0.06, 0.06, size=(n, 2))
    width = rng.uniform(1.3, 2.3, size=n)

    # Smooth warp: two sine waves along random axes push points along random
    # directions, bending strokes the way a hand does without making them jagged.
    axes = np.stack([np.cos(wave_angle), np.sin(wave_angle)], axis=-1)
    moves = wave_amplitude[..., None] * np.stack(
        [np.cos(wave_direction), np.sin(wave_direction)], axis=-1
    )
    phase = 2 * np.pi * wave_frequency[:, None, :] * np.einsum("pk,nwk->npw", points, axes)
    warped = (
        points
        + np.einsum("npw,nwk->npk", np.sin(phase + wave_phase[:, None, :]), moves)
        + stroke_shift[:, stroke_of_point]
        + point_jitter
    )

    cos, sin = np.cos(rotation), np.sin(rotation)
    rotate = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], axis=-2)
    shear_m = np.zeros((n, 2, 2))
    shear_m[:, 0, 0] = shear_m[:, 1, 1] = 1.0
    shear_m[:, 0, 1] = shear
    stretch = np.zeros((n, 2, 2))
    stretch[:, 0, 0] = scale * aspect
    stretch[:, 1, 1] = scale / aspect
    canvas = size * _SUPERSAMPLE
    affine = rotate @ shear_m @ stretch * (_FILL * canvas)
    placed = np.einsum("npk,njk->npj", warped, affine)
    placed += canvas / 2.0 + translation[:, None, :] * canvas

    ends = np.cumsum([len(s) for s in strokes])[:-1]
    out = np.empty((n, size, size), dtype=np.uint8)
    for i in range(n):
        out[i] = _render(np.split(placed[i], ends), size, width[i])
    return out


def _render(strokes, size, width):
    """Draws canvas-space `strokes` at 4x resolution and box-filters to `size`."""
    canvas = size * _SUPERSAMPLE
    image = Image.new("L", (canvas, canvas), 0)
    pen = ImageDraw.Draw(image)
    line_width = max(1, int(round(width * _SUPERSAMPLE)))
    radius = line_width / 2.0
    for stroke in strokes:
        coords = stroke.ravel().tolist()
        if len(stroke) > 1:
            pen.line(coords, fill=255, width=line_width)
        # A disc on every point gives round caps and joins; Pillow's own
        # joint="curve" costs about three times as much.
        for j in range(0, len(coords), 2):
            x, y = coords[j], coords[j + 1]
            pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return np.asarray(image.reduce(_SUPERSAMPLE))


def _read_cache(path, params_json):
    """Returns `(dataset, None)`, or `(None, reason)` when the file is unusable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as error:
        return None, f"unreadable ({type(error).__name__}: {error})"
    required = {"images", "labels", "class_names", "background_classes",
                "evaluation_classes", "alphabets", "params", "checksum"}  # fmt: skip
    if not required <= set(arrays):
        return None, f"missing entries {sorted(required - set(arrays))}"
    if str(arrays["params"]) != params_json:
        return None, "parameters do not match the file name"
    if str(arrays["checksum"]) != _content_checksum(arrays):
        return None, "checksum mismatch"
    try:
        dataset = ImageDataset(
            images=arrays["images"],
            labels=arrays["labels"],
            class_names=tuple(arrays["class_names"].tolist()),
            background_classes=arrays["background_classes"],
            evaluation_classes=arrays["evaluation_classes"],
            alphabets=tuple(arrays["alphabets"].tolist()),
        )
    except ValueError as error:
        return None, str(error)
    return dataset, None


def _content_checksum(arrays):
    return _io.checksum(
        arrays["images"], arrays["labels"], arrays["background_classes"],
        arrays["evaluation_classes"], arrays["class_names"], arrays["alphabets"],
    )  # fmt: skip


def _dataset_arrays(dataset):
    return {
        "images": dataset.images,
        "labels": dataset.labels,
        "class_names": np.asarray(dataset.class_names, dtype=str),
        "background_classes": dataset.background_classes,
        "evaluation_classes": dataset.evaluation_classes,
        "alphabets": np.asarray(dataset.alphabets, dtype=str),
    }


def _hershey_version():
    try:
        return importlib.metadata.version("hershey-fonts")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _check_int(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Expected `{name}` to be an integer. Received: {name}={value!r}")
    if value < minimum:
        raise ValueError(f"Expected `{name}` to be >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _check_fonts(fonts):
    if fonts is None:
        return FONT_ORDER
    try:
        if isinstance(fonts, str):
            raise TypeError
        fonts = list(fonts)
    except TypeError:
        raise TypeError(
            f"Expected `fonts` to be a sequence of font names. Received: fonts={fonts!r}"
        ) from None
    unknown = sorted(set(fonts) - set(FONT_ORDER), key=str)
    if unknown or not fonts:
        raise ValueError(
            f"Expected `fonts` to be a non-empty subset of {list(FONT_ORDER)}. "
            f"Received: fonts={fonts!r}"
        )
    # Priority order, not the caller's, decides which duplicate survives.
    return tuple(f for f in FONT_ORDER if f in set(fonts))


def _check_rotations(rotations):
    try:
        values = sorted({int(r) for r in rotations})
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Expected `rotations` to be a sequence of angles. Received: rotations={rotations!r}"
        ) from error
    if 0 not in values or not set(values) <= set(_ROTATION_MATRICES):
        raise ValueError(
            "Expected `rotations` to contain 0 and only angles from (0, 90, 180, 270). "
            f"Received: rotations={rotations!r}"
        )
    return tuple(values)
