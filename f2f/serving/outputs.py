"""An edited image as a caller asked for it: its format (png, jpeg, webp), compression and size.

Rules:

- `output_format` is png (default), jpeg or webp; `output_compression`
  (0-100, jpeg and webp only, as OpenAI's) is the encoder's quality.
- `size` is `auto` (the source's size, the default) or `WIDTHxHEIGHT`, each
  side 16 to 4096, with the source's aspect ratio (within 1 %): the edit is
  resized to it, never stretched or cropped; any other size is refused
  naming the sizes this server makes for that image.
- The stored outputs stay PNG; a conversion is made when asked for.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Literal

from PIL import Image

from f2f.errors import InvalidInput

OutputFormat = Literal["png", "jpeg", "webp"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
MIN_SIDE, MAX_SIDE = 16, 4096
ASPECT_TOLERANCE = 0.01


def check_format(value: str | None, compression: int | None) -> tuple[OutputFormat, int | None]:
    """The output format and encoder quality asked for; InvalidInput names the field."""
    fmt = (value or "png").lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in MEDIA_TYPES:
        raise InvalidInput("output_format", value, "must be png, jpeg or webp")
    if compression is not None:
        if fmt == "png":
            raise InvalidInput("output_compression", compression, "applies to jpeg and webp only")
        if not 0 <= compression <= 100:
            raise InvalidInput("output_compression", compression, "must be 0 to 100")
    return fmt, compression  # type: ignore[return-value]


def check_size(value: str | None, source_size: tuple[int, int]) -> tuple[int, int] | None:
    """The size the edit is resized to (None: the source's); InvalidInput names `size` and the sizes this server makes."""
    if value is None or value == "auto":
        return None
    width, height = source_size
    match = _SIZE.match(value)
    if match:
        w, h = int(match[1]), int(match[2])
        in_range = MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE
        if in_range and abs((w / h) / (width / height) - 1) <= ASPECT_TOLERANCE:
            return None if (w, h) == source_size else (w, h)
    rule = (
        f"this server makes the edit at the source's aspect ratio: auto ({width}x{height}), or WIDTHxHEIGHT with "
        f"WIDTH/HEIGHT = {width / height:.4g} (within 1 %), each side {MIN_SIDE} to {MAX_SIDE}"
    )
    raise InvalidInput("size", value, rule)


def encode(path: Path, fmt: OutputFormat = "png", compression: int | None = None, size: tuple[int, int] | None = None) -> bytes:
    """The stored PNG at `path`, resized to `size` and encoded as `fmt` (a PNG as asked is read as it is)."""
    if fmt == "png" and size is None:
        return path.read_bytes()
    with Image.open(path) as stored:
        image = stored.convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    options = {} if compression is None else {"quality": compression}
    image.save(buffer, format=_PILLOW_FORMATS[fmt], **options)
    return buffer.getvalue()
