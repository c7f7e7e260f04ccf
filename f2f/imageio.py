"""Decode what users really send into a fully loaded RGB Pillow image.

Rules of `open_image`, in order (every failure is an `InvalidImage` naming the
field, the path or ``"<N bytes>"``, and the rule):

1. the file exists and is not empty;
2. Pillow recognises it from its header (nothing is decoded yet);
3. its format is in ``input.allowed_formats`` (MPO, the multi-picture JPEG
   that many phone cameras write, counts as JPEG);
4. width*height is at most ``input.max_image_pixels``, checked before any pixel
   is decoded, so decompression bombs are never decoded (Pillow's own
   `DecompressionBombError` is reported as the same rule);
5. it decodes completely (truncated or corrupt data is an error, never a
   half-grey picture);
6. it is converted by `to_rgb`.

`probe_image` applies rules 1-4 only, from the header, and returns the
upright size: the cheap check of an image that is decoded later.

Rules of `to_rgb` (the input image is never changed):

* the EXIF orientation is applied first (a phone photo comes out upright);
* an embedded ICC profile is honoured: RGB, RGBA, CMYK and L images are
  converted from their profile to sRGB (a wide-gamut or CMYK photo keeps
  its colours); a profile that cannot be read, or one of another colour
  space than the pixels, is ignored, as browsers do;
* RGB is kept as is; L and 1 become grey RGB; CMYK and YCbCr go through Pillow;
* RGBA, LA, PA, La, RGBa, a P image with an RGBA palette and P, L, 1 or RGB with
  a ``transparency`` entry are alpha-composited onto `background` (white by
  default): a fully transparent pixel becomes `background`, a half transparent
  one a blend of the two;
* 16-bit modes (I;16, I;16B, I;16L, I;16N) are scaled 0..65535 -> 0..255 as
  round(x / 257), never clipped;
* I (32-bit integers): if no value is above 255 it is taken as 8-bit data,
  otherwise as 16-bit data scaled like I;16; values outside the range are
  clipped (negative -> 0);
* F (floats): rounded and clipped to 0..255, NaN becomes 0;
* any other mode is rejected.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms, ImageOps

from f2f.config import InputConfig
from f2f.errors import InvalidImage

Colour = tuple[int, int, int]
ImageSource = str | os.PathLike | bytes

_FORMAT_ALIASES = {"MPO": "JPEG"}
ORIENTATION_TAG = 0x0112  # EXIF Orientation
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
_TRANSPARENCY_INFO_MODES = ("P", "L", "1", "RGB")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


# --- open_image -------------------------------------------------------------


def open_image(source: ImageSource, limits: InputConfig | None = None, field: str = "image") -> Image.Image:
    """Decode `source` (a path or the file's bytes) into a loaded RGB image.

    The checks run in the order given in the module docstring; every failure
    raises `InvalidImage(field, value, rule)` and no Pillow or OS error escapes.
    """
    limits = limits or InputConfig()
    stream, value = _open_stream(source, field)
    with stream:
        return _decode(stream, limits, field, value)


def probe_image(source: ImageSource, limits: InputConfig | None = None, field: str = "image") -> tuple[int, int]:
    """Rules 1-4 of `open_image` from the header alone (no pixel is decoded): the upright (EXIF-oriented) size.

    A path is read up to its header only. The orientation comes from EXIF found in the header (a PNG's eXIf
    chunk after its pixels is not read).
    """
    limits = limits or InputConfig()
    stream, value = _open_stream(source, field)
    with stream, _open_header(stream, limits, field, value) as img:
        _check_format(img, limits, field, value)
        _check_size(img, limits, field, value)
        turned = "exif" in img.info and img.getexif().get(ORIENTATION_TAG) in (5, 6, 7, 8)  # a quarter turn
        return (img.height, img.width) if turned else img.size


def _open_stream(source: ImageSource, field: str) -> tuple[BinaryIO, str]:
    """A readable, non-empty binary stream of `source` and its value for errors."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        stream: BinaryIO = io.BytesIO(data)
        value = f"<{len(data)} bytes>"
    else:
        stream, value = _open_path(source, field)
    if _stream_size(stream) == 0:
        stream.close()
        raise InvalidImage(field, value, "the file is empty")
    return stream, value


def _open_path(source: str | os.PathLike, field: str) -> tuple[BinaryIO, str]:
    """Open a path for reading; a missing or unreadable file is an InvalidImage."""
    try:
        value = os.fsdecode(source)
    except TypeError:
        raise InvalidImage(field, source, "must be a file path or the image file's bytes") from None
    try:
        return open(value, "rb"), value
    except FileNotFoundError:
        raise InvalidImage(field, value, "file not found") from None
    except IsADirectoryError:
        raise InvalidImage(field, value, "is a directory, not an image file") from None
    except (OSError, ValueError) as exc:  # permissions, a NUL byte in the path, ...
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidImage(field, value, f"cannot read the file ({reason})") from None


def _stream_size(stream: BinaryIO) -> int:
    """Bytes in `stream` from its start (the stream is left at its start)."""
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    return size


def _decode(stream: BinaryIO, limits: InputConfig, field: str, value: str) -> Image.Image:
    """Header checks, then the full decode, then the RGB conversion."""
    with _open_header(stream, limits, field, value) as img:
        _check_format(img, limits, field, value)
        _check_size(img, limits, field, value)
        _load(img, limits, field, value)
        try:
            return to_rgb(img, limits.alpha_background)
        except InvalidImage as exc:
            raise InvalidImage(field, value, exc.rule) from None
        except Exception:  # any decoder failure is the caller's bad data
            raise InvalidImage(field, value, "the image data is truncated or corrupt") from None


def _open_header(stream: BinaryIO, limits: InputConfig, field: str, value: str) -> Image.Image:
    """`Image.open`: reads the header only; no pixel is decoded yet."""
    try:
        return Image.open(stream)
    except Image.DecompressionBombError:
        raise InvalidImage(field, value, _pillow_bomb_rule(limits)) from None
    except Exception:  # unidentified, malformed header, ...
        raise InvalidImage(field, value, "not a readable image") from None


def _check_format(img: Image.Image, limits: InputConfig, field: str, value: str) -> None:
    """The format Pillow detected must be one of `input.allowed_formats` (any case)."""
    detected = str(img.format or "unknown").upper()
    allowed = [name.upper() for name in limits.allowed_formats]
    if _FORMAT_ALIASES.get(detected, detected) not in allowed:
        rule = f"format {detected} is not accepted; allowed: {', '.join(allowed)} (input.allowed_formats)"
        raise InvalidImage(field, value, rule)


def _check_size(img: Image.Image, limits: InputConfig, field: str, value: str) -> None:
    """Width*height must be at most `input.max_image_pixels`; zero-sized images are refused."""
    width, height = img.size
    pixels = width * height
    if pixels > limits.max_image_pixels:
        rule = f"{width}x{height} = {pixels:,} pixels is over the limit of {limits.max_image_pixels:,} (input.max_image_pixels)"
        raise InvalidImage(field, value, rule)
    if pixels == 0:
        raise InvalidImage(field, value, f"the image has no pixels ({width}x{height})")


def _load(img: Image.Image, limits: InputConfig, field: str, value: str) -> None:
    """Decode every pixel; truncated or corrupt data is an InvalidImage."""
    try:
        img.load()
    except Image.DecompressionBombError:
        raise InvalidImage(field, value, _pillow_bomb_rule(limits)) from None
    except Exception:  # OSError, SyntaxError, EOFError, zlib errors, ...
        raise InvalidImage(field, value, "the image data is truncated or corrupt") from None


def _pillow_bomb_rule(limits: InputConfig) -> str:
    """The pixel-limit rule for an image that Pillow itself refused as a bomb."""
    return (
        "the image is too large to decode safely (Pillow refused it as a possible decompression bomb); "
        f"the limit is {limits.max_image_pixels:,} pixels (input.max_image_pixels)"
    )


# --- to_rgb -----------------------------------------------------------------


def to_rgb(image: Image.Image, background: Colour = (255, 255, 255), *, orient: bool = True) -> Image.Image:
    """A new RGB image of `image`, by the rules in the module docstring.

    `orient=False` skips the EXIF orientation (for frames a model generated).
    The input is never changed; the result is always a new image.
    """
    if image.width == 0 or image.height == 0:
        raise InvalidImage("image", f"{image.width}x{image.height}", "the image has no pixels")
    upright = _to_srgb(ImageOps.exif_transpose(image) if orient else image.copy())
    if _has_transparency(upright):
        return _composite(upright, background)
    converter = _CONVERTERS.get(upright.mode)
    if converter is None:
        raise InvalidImage("image", upright.mode, f"colour mode {upright.mode} is not supported")
    return converter(upright)


def ensure_rgb(image: Image.Image, background: Colour = (255, 255, 255)) -> Image.Image:
    """`image` itself when it is already upright RGB without transparency, else `to_rgb(image, background)`.

    Saves a full copy of large images that are already what `to_rgb` makes
    (anything `open_image` returned); the caller must not modify the result.
    """
    upright = image.getexif().get(ORIENTATION_TAG, 1) == 1
    plain = "transparency" not in image.info and "icc_profile" not in image.info
    if image.mode == "RGB" and upright and plain and image.width and image.height:
        return image
    return to_rgb(image, background)


_ICC_SPACES = {"RGB": "RGB", "RGBA": "RGB", "CMYK": "CMYK", "L": "GRAY"}  # image mode -> its profile's colour space


def _to_srgb(image: Image.Image) -> Image.Image:
    """`image` converted from its ICC profile to sRGB (no profile, or an unusable one: as it is), without the profile."""
    icc = image.info.pop("icc_profile", None)
    if not icc or image.mode not in _ICC_SPACES:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if source.profile.xcolor_space.strip() != _ICC_SPACES[image.mode]:
            return image
        mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, source, _srgb_profile(), outputMode=mode)
    except (OSError, ImageCms.PyCMSError):
        return image
    assert converted is not None  # profileToProfile returns a new image unless inPlace
    converted.info = {key: value for key, value in image.info.items() if key != "icc_profile"}
    return converted


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _has_transparency(image: Image.Image) -> bool:
    """An alpha channel, an RGBA palette, or a `transparency` entry Pillow can apply."""
    if image.mode in _ALPHA_MODES or image.mode == "La":
        return True
    if image.mode == "P" and image.palette is not None and image.palette.mode.endswith("A"):
        return True
    return image.mode in _TRANSPARENCY_INFO_MODES and "transparency" in image.info


def _composite(image: Image.Image, background: Colour) -> Image.Image:
    """Alpha-composite `image` onto an opaque `background` colour."""
    if image.mode == "La":
        return _composite_premultiplied_la(image, background)
    canvas = Image.new("RGBA", image.size, (*background, 255))
    canvas.alpha_composite(image.convert("RGBA"))
    return canvas.convert("RGB")


def _composite_premultiplied_la(image: Image.Image, background: Colour) -> Image.Image:
    """La holds grey already multiplied by alpha: out = grey + bg * (255 - alpha) / 255."""
    data = np.asarray(image, dtype=np.float64)
    grey, alpha = data[..., :1], data[..., 1:]
    out = grey + np.asarray(background, dtype=np.float64) * (255.0 - alpha) / 255.0
    return _rgb_from_array(out)


def _rgb_from_array(values: np.ndarray) -> Image.Image:
    """An RGB image from an (h, w) or (h, w, 3) array: NaN -> 0, rounded, clipped to 0..255."""
    clean = np.clip(np.rint(np.nan_to_num(values, nan=0.0)), 0, 255).astype(np.uint8)
    if clean.ndim == 2 or clean.shape[-1] == 1:
        return Image.fromarray(clean.reshape(clean.shape[:2])).convert("RGB")
    return Image.fromarray(clean)


def _sixteen_bit(image: Image.Image) -> Image.Image:
    """0..65535 -> 0..255 as round(x / 257); never Pillow's clipping convert."""
    values = np.clip(np.asarray(image).astype(np.float64), 0, 65535)
    return _rgb_from_array(values / 257.0)


def _thirty_two_bit(image: Image.Image) -> Image.Image:
    """I: taken as 8-bit data if no value is above 255, else as 16-bit data."""
    values = np.asarray(image)
    if values.max() <= 255:
        return _rgb_from_array(values.astype(np.float64))
    return _sixteen_bit(image)


def _float(image: Image.Image) -> Image.Image:
    """F: rounded and clipped to 0..255 (NaN -> 0)."""
    return _rgb_from_array(np.asarray(image, dtype=np.float64))


def _pillow_rgb(image: Image.Image) -> Image.Image:
    """Modes Pillow converts faithfully: L, 1, P, CMYK, YCbCr."""
    return image.convert("RGB")


_CONVERTERS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "RGB": lambda image: image,  # already a new image (exif_transpose or copy)
    "L": _pillow_rgb,
    "1": _pillow_rgb,
    "P": _pillow_rgb,
    "CMYK": _pillow_rgb,
    "YCbCr": _pillow_rgb,
    "I": _thirty_two_bit,
    "F": _float,
    **{mode: _sixteen_bit for mode in _SIXTEEN_BIT_MODES},
}
