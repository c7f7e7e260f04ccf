"""Masked edits: where the edit may happen, read from what callers send, and kept exact outside it.

Rules of `read_mask(data, size, needs_alpha)` (every failure an `InvalidInput`
naming `mask`):

- A PNG or WebP file (bytes or a path) or a Pillow image, exactly the source's
  size (after the source's EXIF orientation, as `open_image` reads it).
- With an alpha channel (OpenAI's format: RGBA or LA): fully transparent
  pixels (alpha 0) mark the area to edit; any other alpha keeps the source.
- Without one, a one-channel image (L or 1): white (128 and above) marks the
  area to edit, black keeps the source. Where the caller's API is OpenAI's
  (`needs_alpha`), a mask without alpha is refused, as OpenAI refuses it.
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

from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from f2f.errors import InvalidInput

if TYPE_CHECKING:
    from f2f.config import MaskConfig

MASK_FORMATS = ("PNG", "WEBP")
WHITE_FROM = 128


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
    elif image.mode in ("L", "1"):
        area = image.convert("L").point(lambda v: 255 if v >= WHITE_FROM else 0)
    else:
        rule = "must have an alpha channel (transparent = edit here) or one channel (white = edit here)"
        raise InvalidInput("mask", image.mode, rule)
    low, high = area.getextrema()
    if high == 0:
        raise InvalidInput("mask", "empty", "marks nothing to edit; send no mask to edit the whole image")
    if low == 255:
        raise InvalidInput("mask", "full", "marks the whole image; send no mask to edit the whole image")
    return area


def _decode(data: bytes | str | os.PathLike, size: tuple[int, int]) -> Image.Image:
    raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else _read(Path(data))
    try:
        image = Image.open(io.BytesIO(raw))
        if image.format not in MASK_FORMATS:
            raise InvalidInput("mask", image.format, f"must be a {' or '.join(MASK_FORMATS)} file")
        if image.width * image.height > 4 * size[0] * size[1]:  # never decode a bomb: it is refused for its size anyway
            raise InvalidInput("mask", f"{image.width}x{image.height}", f"must be the image's size, {size[0]}x{size[1]}")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput("mask", f"<{len(raw)} bytes>", "must be a PNG or WebP file that decodes completely") from None
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

    def public(self) -> dict[str, Any]:
        return {"area": round(area_fraction(self.area), 4), "mode": self.mode, "feather_px": self.feather_px}


def area_fraction(mask: Image.Image) -> float:
    """The fraction of the image the mask marks to edit."""
    histogram = mask.histogram()
    return sum(histogram[WHITE_FROM:]) / (mask.width * mask.height)


def feathered(mask: Image.Image, feather_px: int) -> Image.Image:
    """The composite's alpha: the mask, its edge a ramp `feather_px` to either side (0 beyond it outside)."""
    return mask if feather_px == 0 else mask.filter(ImageFilter.BoxBlur(feather_px))


def composite(edit: Image.Image, source: Image.Image, alpha: Image.Image) -> Image.Image:
    """The edit where `alpha` is 255, the source's exact pixels where it is 0, a blend between."""
    return Image.composite(edit.convert("RGB"), source.convert("RGB"), alpha)
