"""Writing clips as video files (H.264 MP4 through imageio-ffmpeg's bundled ffmpeg).

imageio-ffmpeg is imported when a file is written, not when this module is; a
missing one is `BackendNotConfigured` naming the extra.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from f2f.errors import BackendNotConfigured


def write_mp4(frames: Sequence[Image.Image], path: str | Path, fps: int) -> Path:
    """Write `frames` to `path` as H.264 yuv420p MP4 at `fps`; returns the path.

    Rules: at least one frame, all of one size, `fps` >= 1. yuv420p needs an
    even width and height: an odd one gets one black column (right) or row
    (bottom) in the file; the caller's frames are never changed, nor scaled.
    The file appears whole or not at all (a temporary file in the same folder,
    then a rename); an existing file at `path` is replaced.
    """
    size = _check_frames(frames, fps)
    write_frames = _write_frames()
    path = Path(path)
    even = (size[0] + size[0] % 2, size[1] + size[1] % 2)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.mp4")  # ffmpeg picks the muxer from the suffix
    try:
        _encode(write_frames, tmp, frames, even, fps)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _encode(write_frames: Callable[..., Any], tmp: Path, frames: Sequence[Image.Image], size: tuple[int, int], fps: int) -> None:
    """Stream the frames through ffmpeg into `tmp`; ffmpeg is stopped even when a frame fails."""
    options = {"codec": "libx264", "pix_fmt_out": "yuv420p", "ffmpeg_log_level": "error"}
    writer = write_frames(tmp, size, fps=fps, macro_block_size=1, **options)  # 1: ffmpeg never rescales
    try:
        writer.send(None)  # start ffmpeg
        for frame in frames:
            writer.send(_even_rgb(frame, size).tobytes())
    finally:
        writer.close()


def _check_frames(frames: Sequence[Image.Image], fps: int) -> tuple[int, int]:
    """The common (width, height) of the frames; ValueError if none, mixed sizes or fps < 1."""
    if len(frames) == 0:
        raise ValueError("write_mp4 needs at least one frame")
    sizes = sorted({frame.size for frame in frames})
    if len(sizes) != 1:
        raise ValueError(f"all frames must have one size (got {sizes})")
    if not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps must be a positive integer (got {fps!r})")
    return sizes[0]


def _even_rgb(frame: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`frame` as RGB on a black canvas of `size` (top-left aligned); the caller's frame is never modified."""
    rgb = frame if frame.mode == "RGB" else frame.convert("RGB")
    if rgb.size == size:
        return rgb
    padded = Image.new("RGB", size)
    padded.paste(rgb, (0, 0))
    return padded


def _write_frames() -> Callable[..., Any]:
    """imageio_ffmpeg.write_frames; BackendNotConfigured naming the extra if imageio-ffmpeg is missing."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise BackendNotConfigured("writing MP4 files needs imageio-ffmpeg: pip install 'f2f[video]'") from exc
    return imageio_ffmpeg.write_frames
