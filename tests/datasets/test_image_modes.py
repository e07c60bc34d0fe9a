"""Every image mode and bit depth loads with visible, correctly scaled strokes, or is refused.

Each case writes a real file into an Omniglot-layout directory and loads it through
`omniglot()`: PNGs written by Pillow for every mode it can save as PNG, PNGs encoded
here for the color types and bit depths Pillow reads but cannot write (1- to 16-bit
grayscale, 16-bit RGB and alpha, low-depth palettes, transparent colors), and files of
other formats (Pillow decodes by content, not by the `.png` name) for the modes PNG
cannot hold. Transparent pixels are stored black, so a loader that ignores
transparency shows ink everywhere; the gray stroke is where a wrongly scaled bit depth
shows, e.g. 16-bit gray clipped to white.
"""

import struct
import types
import zlib

import numpy as np
import pytest
from PIL import Image

from keras_meta.datasets import _pixels, omniglot

SIZE = 28
PAPER, INK, GRAY = 255, 0, 85  # 85 = 255 / 3 is exact at 2, 4, 8 and 16 bits
# Colors the fully transparent paper pixels carry: dark, so they show if alpha is ignored.
HIDDEN, HIDDEN_16 = 7, 1000


def _reference(bilevel=False):
    """Paper with a black vertical bar and a gray horizontal bar, as 8-bit levels."""
    levels = np.full((SIZE, SIZE), PAPER, np.uint8)
    levels[3:25, 5:9] = INK
    levels[18:22, 10:26] = INK if bilevel else GRAY
    return levels


REF, REF_1BIT = _reference(), _reference(bilevel=True)
PAPER_MASK = REF == PAPER


def _with_hidden_paper(levels, hidden=HIDDEN):
    return np.where(PAPER_MASK, levels.dtype.type(hidden), levels)


def _alpha():
    return np.where(PAPER_MASK, 0, 255).astype(np.uint8)


def _palette_indices():
    # Index 0 paper, 1 ink, 2 gray, 3 black (transparent where used).
    return np.select([REF == PAPER, REF == INK], [0, 1], 2).astype(np.uint8)


def _palette_image(indices):
    image = Image.frombytes("P", (SIZE, SIZE), indices.tobytes())
    image.putpalette([255, 255, 255, 0, 0, 0, GRAY, GRAY, GRAY, 0, 0, 0])
    return image


def _sixteen(levels):
    return levels.astype(np.uint16) * 257


# --- hand-encoded PNG ----------------------------------------------------------------------


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encode_png(samples, color_type, bit_depth, palette=None, trns=None):
    """A PNG of `samples` ([H, W] or [H, W, C] integers), unfiltered, any bit depth."""
    height, width = samples.shape[:2]
    rows = samples.reshape(height, -1)
    if bit_depth == 16:
        rows = rows.astype(">u2").view(np.uint8)
    elif bit_depth < 8:
        bits = np.unpackbits(rows.astype(np.uint8)[..., None], axis=-1)[..., 8 - bit_depth :]
        rows = np.packbits(bits.reshape(height, -1), axis=1)
    raw = b"".join(b"\0" + row.astype(np.uint8).tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    if palette is not None:
        chunks.append(_chunk(b"PLTE", bytes(palette)))
    if trns is not None:
        chunks.append(_chunk(b"tRNS", trns))
    chunks += [_chunk(b"IDAT", zlib.compress(raw)), _chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _gray_png(bit_depth, trns=False):
    """A gray PNG; with `trns`, its paper is the darkest non-black level, marked transparent.

    The key is 1 in the file's units, not 0, so a key read at the wrong scale misses.
    """
    reference = REF_1BIT if bit_depth == 1 else REF
    top = 2**bit_depth - 1
    stored = reference
    if trns:
        # The gray bar moves to 2/3 so that it stays apart from the key at 2 bits.
        reference = np.where(reference == GRAY, 170, reference).astype(np.uint8)
        stored = np.where(PAPER_MASK, 255 // top, reference)
    data = _encode_png(stored.astype(np.int64) * top // 255, 0, bit_depth,
                       trns=struct.pack(">H", 1) if trns else None)
    return data, reference


def _with_channels(levels, channels):
    return np.repeat(levels[..., None], channels, axis=-1)


# (id, bytes of the file, expected 8-bit gray before inversion)
HAND_ENCODED = [
    *[(f"png-gray-{d}bit", *_gray_png(d)) for d in (1, 2, 4, 8, 16)],
    *[(f"png-gray-{d}bit-trns", *_gray_png(d, trns=True)) for d in (2, 4, 8)],
    ("png-gray-16bit-trns", _encode_png(_with_hidden_paper(_sixteen(REF), HIDDEN_16), 0, 16,
                                        trns=struct.pack(">H", HIDDEN_16)), REF),
    ("png-rgb-8bit", _encode_png(_with_channels(REF, 3), 2, 8), REF),
    ("png-rgb-16bit", _encode_png(_with_channels(_sixteen(REF), 3), 2, 16), REF),
    *[(f"png-palette-{d}bit-trns", _encode_png(np.where(PAPER_MASK, 3, _palette_indices()), 3, d,
                                               palette=[255] * 3 + [0] * 3 + [GRAY] * 3 + [0] * 3,
                                               trns=bytes([255, 255, 255, 0])), REF)
      for d in (2, 4, 8)],
    ("png-gray-alpha-8bit", _encode_png(np.stack([_with_hidden_paper(REF), _alpha()], -1), 4, 8), REF),
    ("png-gray-alpha-16bit", _encode_png(np.stack([_with_hidden_paper(_sixteen(REF), HIDDEN_16),
                                                   _sixteen(_alpha())], -1), 4, 16), REF),
    ("png-rgba-8bit", _encode_png(np.dstack([_with_channels(_with_hidden_paper(REF), 3), _alpha()]), 6, 8), REF),
    ("png-rgba-16bit", _encode_png(np.dstack([_with_channels(_with_hidden_paper(_sixteen(REF), HIDDEN_16), 3),
                                              _sixteen(_alpha())]), 6, 16), REF),
]  # fmt: skip


# --- files Pillow writes -------------------------------------------------------------------


def _i16b(levels):
    return Image.frombytes("I;16B", (SIZE, SIZE), _sixteen(levels).astype(">u2").tobytes())


def _merge(mode, bands):
    return Image.merge(mode, [Image.fromarray(np.ascontiguousarray(b)) for b in bands])


def _palette_alpha():
    """A `PA` image: palette indices plus an alpha band hiding the (black) paper."""
    indices = np.where(PAPER_MASK, 1, _palette_indices()).astype(np.uint8)
    image = _palette_image(indices).convert("PA")
    image.putalpha(Image.fromarray(_alpha()))
    return image


# (id, image, save keyword arguments, expected 8-bit gray before inversion)
PILLOW_WRITTEN = [
    ("png-pillow-1", Image.fromarray(REF_1BIT > 127), "PNG", {}, REF_1BIT),
    ("png-pillow-L", Image.fromarray(REF), "PNG", {}, REF),
    ("png-pillow-L-transparency", Image.fromarray(_with_hidden_paper(REF)), "PNG", {"transparency": HIDDEN}, REF),
    ("png-pillow-LA", _merge("LA", [_with_hidden_paper(REF), _alpha()]), "PNG", {}, REF),
    ("png-pillow-P", _palette_image(_palette_indices()), "PNG", {}, REF),
    ("png-pillow-P-transparency", _palette_image(np.where(PAPER_MASK, 3, _palette_indices()).astype(np.uint8)),
     "PNG", {"transparency": 3}, REF),
    ("png-pillow-RGB", Image.fromarray(_with_channels(REF, 3)), "PNG", {}, REF),
    ("png-pillow-RGB-transparency", Image.fromarray(_with_channels(_with_hidden_paper(REF), 3)), "PNG",
     {"transparency": (HIDDEN,) * 3}, REF),
    ("png-pillow-RGBA", Image.fromarray(np.dstack([_with_channels(_with_hidden_paper(REF), 3), _alpha()])),
     "PNG", {}, REF),
    ("png-pillow-I;16", Image.fromarray(_sixteen(REF)), "PNG", {}, REF),
    ("png-pillow-I;16B", _i16b(REF), "PNG", {}, REF),
    ("png-pillow-I;16-transparency", Image.fromarray(_with_hidden_paper(_sixteen(REF), HIDDEN_16)), "PNG",
     {"transparency": HIDDEN_16}, REF),
    # Modes PNG cannot hold, in formats that can; the file keeps its .png name.
    ("tiff-F", Image.fromarray(REF.astype(np.float32) / 255), "TIFF", {}, REF),
    ("tiff-I", Image.fromarray(REF.astype(np.int32)), "TIFF", {}, REF),
    ("tiff-I;16", Image.fromarray(_sixteen(REF)), "TIFF", {}, REF),
    ("tiff-I;16B", _i16b(REF), "TIFF", {}, REF),
    ("tiff-CMYK", Image.fromarray(REF).convert("CMYK"), "TIFF", {}, REF),
    ("tiff-YCbCr", Image.fromarray(REF).convert("YCbCr"), "TIFF", {}, REF),
    ("tiff-LAB", _merge("LAB", [REF, np.full_like(REF, 128), np.full_like(REF, 128)]), "TIFF", {}, REF),
    ("tiff-PA", _palette_alpha(), "TIFF", {}, REF),
]  # fmt: skip


def _tree(tmp_path, name="0001_01.png"):
    folder = tmp_path / "omniglot" / "images_background" / "Alpha" / "character01"
    folder.mkdir(parents=True)
    return tmp_path / "omniglot", folder / name


@pytest.mark.parametrize(
    "data, expected", [c[1:] for c in HAND_ENCODED], ids=[c[0] for c in HAND_ENCODED]
)
def test_every_png_color_type_and_bit_depth(tmp_path, data, expected):
    root, file = _tree(tmp_path)
    file.write_bytes(data)
    ds = omniglot(root, image_size=SIZE)
    np.testing.assert_array_equal(ds.images[0, :, :, 0], 255 - expected)
    ds = omniglot(root, image_size=SIZE, invert=False)
    np.testing.assert_array_equal(ds.images[0, :, :, 0], expected)


@pytest.mark.parametrize(
    "image, fmt, options, expected",
    [c[1:] for c in PILLOW_WRITTEN],
    ids=[c[0] for c in PILLOW_WRITTEN],
)
def test_every_pillow_mode(tmp_path, image, fmt, options, expected):
    root, file = _tree(tmp_path)
    image.save(file, format=fmt, **options)
    with Image.open(file) as written:
        # PNG stores both byte orders as big-endian and reads them back as I;16.
        assert written.mode == image.mode or (fmt, image.mode) == ("PNG", "I;16B")
    ds = omniglot(root, image_size=SIZE)
    np.testing.assert_array_equal(ds.images[0, :, :, 0], 255 - expected)


def test_sixteen_bit_strokes_survive_resizing(tmp_path):
    root, file = _tree(tmp_path)
    Image.fromarray(_sixteen(REF)).save(file)
    eight_bit_root, eight_bit_file = _tree(tmp_path / "eight")
    Image.fromarray(REF).save(eight_bit_file)
    np.testing.assert_array_equal(
        omniglot(root, image_size=20).images, omniglot(eight_bit_root, image_size=20).images
    )


def test_every_mode_of_this_pillow_is_handled():
    assert set(Image.MODES) <= set(_pixels.SUPPORTED_MODES)
    for mode in Image.MODES:
        if mode in ("F", "LAB", "PA", "P", "1") or mode.startswith("I;16"):
            continue  # covered by files above
        if mode in ("La", "RGBa"):  # premultiplied: only from their straight-alpha modes
            image = _merge("LA", [REF, _alpha()]).convert(mode[:-1] + "A").convert(mode)
        else:
            image = Image.fromarray(REF).convert(mode)
        np.testing.assert_array_equal(np.asarray(_pixels.paper_gray(image, "x")), REF, err_msg=mode)


@pytest.mark.parametrize(
    "image, match",
    [
        (Image.fromarray(REF.astype(np.float32)), r"'F' pixels to be in \[0, 1\].*in \[0, 255\]"),
        (Image.fromarray(np.full((4, 4), np.nan, np.float32)), r"'F' pixels to be finite"),
        (Image.fromarray(_sixteen(REF).astype(np.int32)), r"'I' pixels to be in \[0, 255\].*\[0, 65535\]"),
        (Image.fromarray(REF.astype(np.int16) - 128), r"'I' pixels to be in \[0, 255\].*\[-128, 127\]"),
    ],
    ids=["F-0-255", "F-nan", "I-16-bit-values", "I-negative"],
)
def test_values_outside_the_mode_range_are_refused_naming_file_and_mode(tmp_path, image, match):
    root, file = _tree(tmp_path)
    image.save(file, format="TIFF")
    with pytest.raises(ValueError, match=rf"Expected mode {match}") as info:
        omniglot(root)
    assert f"with file {str(file)!r} of mode" in str(info.value)


def test_transparent_color_of_a_16_bit_rgb_png_is_refused(tmp_path):
    # Pillow reads 16-bit RGB at 8 bits: the key 1000 and ink at 768 both become 3.
    samples = _with_channels(np.where(PAPER_MASK, 1000, np.where(REF == INK, 768, 65535)), 3)
    root, file = _tree(tmp_path)
    file.write_bytes(_encode_png(samples, 2, 16, trns=struct.pack(">HHH", 1000, 1000, 1000)))
    match = r"Pillow reads 16-bit RGB PNGs at 8 bits.*of mode 'RGB'.*\(1000, 1000"
    with pytest.raises(ValueError, match=match):
        omniglot(root)


def test_unknown_mode_is_refused():
    fake = types.SimpleNamespace(mode="BGR;24", info={})
    match = r"Expected images in one of the modes 1, CMYK.*Received: f of mode 'BGR;24'"
    with pytest.raises(ValueError, match=match):
        _pixels.paper_gray(fake, "f")
