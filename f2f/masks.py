"""Masked edits: where the edit may happen, read from what callers send, and kept exact outside it.

Rules of `read_mask(data, size, needs_alpha)` (every failure an `InvalidInput`
naming `mask`):

- A PNG, WebP or TIFF file (bytes or a path) or a Pillow image, exactly the
  source's size (after the source's EXIF orientation, as `open_image` reads it).
- With an alpha channel (OpenAI's format: RGBA or LA): fully transparent
  pixels (alpha 0) mark the area to edit; any other alpha keeps the source.
- Without one, a one-channel image: white marks the area to edit, black keeps
  the source. Each mode's values are scaled to 0..255 by value x 255 / its full
  scale, and 128 and above is white, i.e. a value of at least half the full
  scale (`FULL_SCALE`):
  - `1` and `L` (8 bits): full scale 255, white from 128;
  - `I;16`, `I;16L`, `I;16B` (16 bits, a 16-bit PNG or TIFF): full scale
    65535, white from 32768;
  - `I` (32-bit integers, a TIFF; older Pillows read 16-bit PNGs so): values
    must be 0 to 65535, full scale 65535;
  - `F` (32-bit floats, a TIFF): values must be 0.0 to 1.0, full scale 1.0,
    white from 0.5.
  A value outside its mode's range (or a float that is not finite) is refused,
  naming the mode, the value and the range: never clipped or guessed.
  Where the caller's API is OpenAI's (`needs_alpha`), a mask without alpha is
  refused, as OpenAI refuses it.
- A mask that marks nothing to edit, or everything, is refused: send no mask
  to edit the whole image.
- The result is an "L" image of the source's size: 255 edit, 0 keep.

Rules of `feathered(mask, feather_px)` and `composite(edit, source, alpha)`:
the alpha is the mask under a box blur of radius `feather_px` (finite
support: it is 0 farther than `feather_px` outside the area to edit, 255
deeper than `feather_px` inside it), so beyond the feather the composite is
the source's pixels exactly, deep inside the area the edit's, and a ramp
between.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from f2f.errors import InvalidInput

if TYPE_CHECKING:
    from f2f.config import MaskConfig

MASK_FORMATS = ("PNG", "WEBP", "TIFF")
WHITE_FROM = 128
# one-channel modes: the value that is full white; values must lie in 0..full scale, white from half of it
FULL_SCALE: dict[str, float] = {"1": 255, "L": 255, "I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I": 65535, "F": 1.0}


def read_mask(data: bytes | str | os.PathLike | Image.Image, size: tuple[int, int], needs_alpha: bool = False) -> Image.Image:
    """The area to edit as an "L" image of `size` (255 edit, 0 keep); InvalidInput naming `mask` by the rules above."""
    image = data if isinstance(data, Image.Image) else _decode(data, size)
    image = ImageOps.exif_transpose(image)
    if image.size != size:
        rule = f"must be the image's size, {size[0]}x{size[1]} (got {image.size[0]}x{image.size[1]})"
        raise InvalidInput("mask", f"{image.size[0]}x{image.size[1]}", rule)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
        area = alpha.point(lambda a: 255 if a == 0 else 0)
    elif needs_alpha:
        raise InvalidInput(
            "mask", image.mode, "must be a PNG with an alpha channel: fully transparent pixels mark the area to edit"
        )
    elif image.mode in FULL_SCALE:
        area = _white_area(image)
    else:
        rule = "must have an alpha channel (transparent = edit here) or one channel (white = edit here): " + ", ".join(FULL_SCALE)
        raise InvalidInput("mask", image.mode, rule)
    low, high = area.getextrema()
    if high == 0:
        raise InvalidInput("mask", "empty", "marks nothing to edit; send no mask to edit the whole image")
    if low == 255:
        raise InvalidInput("mask", "full", "marks the whole image; send no mask to edit the whole image")
    return area


def _white_area(image: Image.Image) -> Image.Image:
    """255 where a one-channel mask's value is at least half its mode's full scale, else 0; InvalidInput out of range."""
    if image.mode in ("L", "1"):
        return image.convert("L").point(lambda v: 255 if v >= WHITE_FROM else 0)
    full = FULL_SCALE[image.mode]
    values = np.asarray(image)  # [H, W]: uint16, int32 or float32
    if not np.isfinite(values).all():
        raise InvalidInput("mask", "nan or inf", _range_rule(image.mode, full))
    low, high = values.min().item(), values.max().item()
    if low < 0 or high > full:
        raise InvalidInput("mask", low if low < 0 else high, _range_rule(image.mode, full))
    return Image.fromarray(np.where(values >= full / 2, 255, 0).astype(np.uint8))


def _range_rule(mode: str, full: float) -> str:
    scale = "0.0 to 1.0 (1.0 = white)" if mode == "F" else f"0 to {int(full)} ({int(full)} = white)"
    return f"a mode {mode} mask must hold values {scale}; white (half the full scale and above) marks the area to edit"


def _decode(data: bytes | str | os.PathLike, size: tuple[int, int]) -> Image.Image:
    raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else _read(Path(data))
    try:
        image = Image.open(io.BytesIO(raw))
        if image.format not in MASK_FORMATS:
            raise InvalidInput("mask", image.format, "must be a PNG, WebP or TIFF file")
        if image.width * image.height > 4 * size[0] * size[1]:  # never decode a bomb: it is refused for its size anyway
            raise InvalidInput("mask", f"{image.width}x{image.height}", f"must be the image's size, {size[0]}x{size[1]}")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput("mask", f"<{len(raw)} bytes>", "must be a PNG, WebP or TIFF file that decodes completely") from None
    return image


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput("mask", str(path), f"cannot read it ({exc.strerror})") from None


@dataclass(frozen=True)
class MaskedEdit:
    """A caller's mask as an edit uses it: the area (source size, 255 edit), its feathered alpha, the mode."""

    area: Image.Image = field(repr=False)
    alpha: Image.Image = field(repr=False)
    mode: str
    feather_px: int

    @classmethod
    def of(cls, area: Image.Image, config: MaskConfig) -> MaskedEdit:
        return cls(area, feathered(area, config.feather_px), config.mode, config.feather_px)

    def keep(self) -> Image.Image:
        """Where the source must stay (255), for estimates that must ignore the edit (`f2f.align`)."""
        return ImageOps.invert(self.area)

    def apply(self, edit: Image.Image, source: Image.Image) -> Image.Image:
        """`edit` inside the area, `source` exactly beyond the feather."""
        return composite(edit, source, self.alpha)

    def as_json(self) -> dict[str, Any]:
        return {"area": round(area_fraction(self.area), 4), "mode": self.mode, "feather_px": self.feather_px}


def area_fraction(mask: Image.Image) -> float:
    """The fraction of the image the mask marks to edit."""
    histogram = mask.histogram()
    return sum(histogram[WHITE_FROM:]) / (mask.width * mask.height)


def feathered(mask: Image.Image, feather_px: int) -> Image.Image:
    """The composite's alpha: the mask, its edge a ramp `feather_px` to either side (0 beyond it outside)."""
    return mask if feather_px == 0 else mask.filter(ImageFilter.BoxBlur(feather_px))


def composite(edit: Image.Image, source: Image.Image, alpha: Image.Image) -> Image.Image:
    """The edit where `alpha` is 255, the source's exact pixels where it is 0, a blend between (both RGB)."""
    return Image.composite(edit, source, alpha)
