"""An edited image as a caller asked for it: its format (png, jpeg, webp), compression and size.

Rules:

- `output_format` is png (default), jpeg or webp; `output_compression`
  (0-100, jpeg and webp only, as OpenAI's) is the encoder's quality.
- `size` is `auto` (the source's size, the default) or `WIDTHxHEIGHT`, each
  side 16 to 4096, with the source's aspect ratio (within 1 %): the edit is
  resized to it, never stretched or cropped; any other size is refused
  naming the sizes this server makes for that image. A resize to more than
  the app's `max_output_pixels` (WIDTH x HEIGHT; 4096 x 4096 by default) is
  refused naming `size`, the value and the limit; `auto` (the stored image,
  nothing made) is always served.
- The stored outputs stay PNG; a conversion is made when asked for, once per
  job, stored file, size, format and quality (`cached`): the first request
  writes it (whole) to the job's objects under `cache/`, later ones are
  answered from that object. The cache goes with the job (expiry deletes
  the job's objects) and keeps at most `CACHE_FILES_PER_JOB` objects, the
  least recently asked for removed first (in a bucket: the least recently
  made), so that no caller fills the store by asking for many sizes. Where
  the cache cannot be written (a full, read-only or unreachable store) the
  conversion is answered uncached.
"""

from __future__ import annotations

import io
import logging
import re
from typing import Literal

from PIL import Image

from f2f.errors import InvalidInput
from f2f.serving.jobs import Objects, StoreUnavailable

logger = logging.getLogger("f2f.serving")

OutputFormat = Literal["png", "jpeg", "webp"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
MIN_SIDE, MAX_SIDE = 16, 4096
ASPECT_TOLERANCE = 0.01
CACHE_DIR = "cache"  # in the job's folder
CACHE_FILES_PER_JOB = 16


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


def check_size(value: str | None, source_size: tuple[int, int], max_pixels: int | None = None) -> tuple[int, int] | None:
    """The size the edit is resized to (None: the source's); InvalidInput names `size` and the sizes this server makes,
    or the limit `max_pixels` (the app's `max_output_pixels`) of a resize."""
    if value is None or value == "auto":
        return None
    width, height = source_size
    match = _SIZE.match(value)
    if match:
        w, h = int(match[1]), int(match[2])
        in_range = MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE
        if in_range and abs((w / h) / (width / height) - 1) <= ASPECT_TOLERANCE:
            if (w, h) == source_size:
                return None
            if max_pixels is not None and w * h > max_pixels:
                rule = f"must be at most {max_pixels:,} pixels (WIDTH x HEIGHT) on this server (max_output_pixels), or auto"
                raise InvalidInput("size", value, f"{rule}; {value} is {w * h:,}")
            return (w, h)
    rule = (
        f"this server makes the edit at the source's aspect ratio: auto ({width}x{height}), or WIDTHxHEIGHT with "
        f"WIDTH/HEIGHT = {width / height:.4g} (within 1 %), each side {MIN_SIDE} to {MAX_SIDE}"
    )
    raise InvalidInput("size", value, rule)


def encode(
    stored: bytes, fmt: OutputFormat = "png", compression: int | None = None, size: tuple[int, int] | None = None
) -> bytes:
    """The stored PNG, resized to `size` and encoded as `fmt` (a PNG as asked is answered as it is)."""
    if fmt == "png" and size is None:
        return stored
    with Image.open(io.BytesIO(stored)) as image:
        image = image.convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    options = {} if compression is None else {"quality": compression}
    image.save(buffer, format=_PILLOW_FORMATS[fmt], **options)
    return buffer.getvalue()


def cached(
    objects: Objects,
    stored: str,
    cache: str,
    fmt: OutputFormat = "png",
    compression: int | None = None,
    size: tuple[int, int] | None = None,
) -> str | bytes:
    """The key of the object answering for the stored PNG `stored` as asked: `stored` when asked as it is, else the
    conversion at `cache` (a key in the job's `cache/`, named by `cache_name`), made by the first request; the bytes,
    uncached, if it cannot be written."""
    if fmt == "png" and size is None:
        return stored
    if objects.exists(cache):
        objects.touch(cache)  # asked for again: the last to be evicted
        return cache
    data = encode(objects.get(stored), fmt, compression, size)
    try:
        _evict(objects, cache.rpartition("/")[0], CACHE_FILES_PER_JOB - 1)
        objects.put(cache, data, MEDIA_TYPES[fmt])
    except StoreUnavailable as exc:
        logger.warning("cannot cache %s (%s); answered uncached", cache, exc)
        return data
    return cache


def cache_name(served: str, fmt: OutputFormat, compression: int | None, size: tuple[int, int] | None) -> str:
    """`<stored file>-<WxH|auto>-<format>-<quality|default>.<format>`, e.g. `ranked_2-1024x683-jpeg-80.jpeg`.

    Named by the stored file, not the rank: rank 1 is the selected frame's file once one is selected, so a new
    selection is never answered from the cache of the old one.
    """
    stem = served.removesuffix(".png").replace("/", "_")
    dims = "auto" if size is None else f"{size[0]}x{size[1]}"
    return f"{stem}-{dims}-{fmt}-{'d' if compression is None else compression}.{fmt}"


def _evict(objects: Objects, folder: str, keep: int) -> None:
    """Remove the least recently used objects under `folder` until `keep` are left."""
    found = objects.listing(folder)
    for key, _ in found[: max(0, len(found) - keep)]:
        objects.delete(key)
