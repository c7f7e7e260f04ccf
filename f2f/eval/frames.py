"""Frames along an edit's path: kept candidate PNGs, or the chosen clip's video.mp4 beside its result.json.

From a video, the frames are the result's candidate frames (every
`selection.candidate_stride`-th, as the VLM saw them), cut out of the canvas
with the result's letterbox box and resized to the source's size, as the
edit itself was before its camera drift was undone: these frames are not
aligned to the source (`f2f.align`), while kept candidate PNGs are, each on
its own estimate. An MP4 is lossy (H.264): its frames differ slightly from
the generated ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from f2f.canvas import unletterbox
from f2f.errors import BackendNotConfigured, InvalidInput


def video_frames(video: Path, result_json: Path) -> dict[int, Image.Image]:
    """The candidate frames of `video` by frame index, at the source's size."""
    try:
        result = json.loads(result_json.read_text(encoding="utf-8"))
        box, size, wanted = tuple(result["letterbox_box"]), tuple(result["source_size"]), set(result["candidate_frames"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(
            "result.json", str(result_json), f"must hold letterbox_box, source_size, candidate_frames ({exc})"
        ) from None
    try:
        import imageio_ffmpeg
    except ImportError:
        raise BackendNotConfigured("reading video.mp4 needs imageio-ffmpeg: pip install 'f2f[video]'") from None
    reader = imageio_ffmpeg.read_frames(str(video), pix_fmt="rgb24")
    try:
        meta = next(reader)
        width, height = meta["size"]
        frames = {}
        for index, raw in enumerate(reader):
            if index in wanted:
                canvas = Image.fromarray(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
                frames[index] = unletterbox(canvas, box, size)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise InvalidInput("video", str(video), f"must be a readable MP4 ({exc})") from None
    finally:
        reader.close()
    return frames
