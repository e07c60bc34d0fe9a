"""Pixel values to `uint8` levels: the one place that decides what a dtype or mode means.

Every loader converts through here, so a bit depth, an alpha channel or a float
range is read the same way whether it comes from an array or an image file.
"""

import numpy as np
from PIL import Image

# Pillow's 16-bit grayscale modes; a PNG opens as "I" in older Pillow, as
# "I;16" in newer ones, and PNG has no wider grayscale, so "I" from a PNG is
# 16-bit too.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
# Modes whose conversion to "L" is Pillow's luminance of 8-bit channels.
_EIGHT_BIT_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SUPPORTED_MODES = tuple(
    sorted(_SIXTEEN_BIT_MODES | _ALPHA_MODES | _EIGHT_BIT_MODES | {"LAB", "I", "F"})
)


def full_scale(dtype):
    """The value that means white in an array of `dtype`: 1.0 for floats, else 255.

    Integer arrays carry no bit depth (a Python list becomes int64), so every
    integer dtype holds 8-bit levels; wider data is refused by `to_uint8`, not
    guessed.
    """
    return 1.0 if np.dtype(dtype).kind == "f" else 255


def to_uint8(values, scale, name, received, hint=""):
    """Maps `values` in `[0, scale]` linearly onto `uint8` levels `[0, 255]`.

    Args:
        values: Integer or floating-point NumPy array.
        scale: The value that becomes 255 (255 for 8-bit levels, 65535 for
            16-bit ones, 1.0 for floats).
        name: What the error expected, e.g. "float `images`".
        received: What the error received, e.g. "images.dtype=float64".
        hint: Text appended to the expectation, e.g. how to rescale.

    Returns:
        A `uint8` array of the same shape (`values` itself when already `uint8`).

    Raises:
        ValueError: If a value is NaN, infinite or outside `[0, scale]`; nothing
            is clipped, so data on another scale is never silently misread.
    """
    if values.dtype == np.uint8 and scale == 255:
        return values
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise ValueError(
            f"Expected {name} to be finite. Received: {received} with NaN or infinite values"
        )
    lo, hi = values.min(), values.max()
    if lo < 0 or hi > scale:
        raise ValueError(
            f"Expected {name} to be in [0, {_number(scale)}]{hint}. "
            f"Received: {received} with values in [{_number(lo)}, {_number(hi)}]"
        )
    if scale == 255 and values.dtype.kind in "ui":
        return values.astype(np.uint8)
    return np.rint(values.astype(np.float64) * (255.0 / scale)).astype(np.uint8)


def png_bit_depth(file):
    """The bit depth in the header of the PNG `file`, or `None` if it is not a PNG."""
    with open(file, "rb") as stream:
        head = stream.read(26)
    if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        return head[24]
    return None


def paper_gray(image, received, bit_depth=None):
    """A decoded Pillow image of any supported mode as an 8-bit grayscale `L` image.

    Tones keep their polarity (dark ink stays dark) and are scaled from the
    mode's bit depth to 8 bits; transparent pixels become white paper, whether
    the transparency is an alpha channel or a transparent color.

    Args:
        image: A loaded `PIL.Image.Image`.
        received: How the error messages name the image, e.g.
            "path='/data' with file '/data/a/b/c.png'"; its mode is appended.
        bit_depth: Bits per sample in the file (`png_bit_depth`), which Pillow's
            mode hides for 2- and 4-bit grayscale and 16-bit RGB PNGs; a PNG's
            transparent color is given in those units.

    Returns:
        A `PIL.Image.Image` of mode `"L"`.

    Raises:
        ValueError: If the mode has no grayscale meaning here, its values are
            outside the mode's range (floats outside [0, 1], 32-bit integers
            outside [0, 255]), or its transparent color cannot be located.
    """
    mode = image.mode
    received = f"{received} of mode {mode!r}"
    key = image.info.get("transparency")
    if mode in _ALPHA_MODES or (mode == "P" and key is not None):
        if mode == "La":
            # Pillow converts premultiplied gray+alpha only to straight "LA".
            image = image.convert("LA")
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("L")
    gray = _opaque_gray(image, received)
    if key is not None:
        gray = np.where(_keyed(image, key, bit_depth, received), np.uint8(255), gray)
    return Image.fromarray(np.ascontiguousarray(gray))


def _opaque_gray(image, received):
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        values = np.asarray(image)
        if mode in _SIXTEEN_BIT_MODES or (mode == "I" and image.format == "PNG"):
            scale, hint = 65535, ""
        else:
            # Float and 32-bit integer files carry no bit depth either.
            scale, hint = full_scale(values.dtype), " (read like `from_arrays` arrays)"
        return to_uint8(values, scale, f"mode {mode!r} pixels", received, hint)
    if mode == "LAB":
        # Pillow has no LAB to grayscale conversion; the L* band is lightness.
        return np.asarray(image.getchannel("L"))
    if mode in _EIGHT_BIT_MODES:
        return np.asarray(image.convert("L"))
    raise ValueError(
        f"Expected images in one of the modes {', '.join(SUPPORTED_MODES)}. Received: {received}"
    )


def _keyed(image, key, bit_depth, received):
    """The mask of pixels equal to the transparent color `key`."""
    if image.mode == "RGB" and bit_depth == 16:
        # Pillow keeps only the high byte of each sample, so other colors would
        # match the key too; refusing beats erasing strokes.
        raise ValueError(
            "Expected a transparent color that 8-bit decoding can locate; Pillow reads "
            "16-bit RGB PNGs at 8 bits. Received: "
            f"{received}, 16-bit, with transparent color {key}"
        )
    if image.mode == "L" and bit_depth in (2, 4):
        # Pillow scales 2- and 4-bit samples to 8 bits, but not the key.
        key = key * 255 // (2**bit_depth - 1)
    pixels = np.asarray(image.convert("L") if image.mode == "1" else image)
    return np.all(pixels.reshape(pixels.shape[:2] + (-1,)) == np.reshape(key, -1), axis=-1)


def _number(value):
    value = value.item() if isinstance(value, np.generic) else value
    return f"{value:g}" if isinstance(value, float) else str(value)
