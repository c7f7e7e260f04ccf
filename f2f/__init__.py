"""Frame2Frame: image editing through image-to-video generation.

The method core is light (Pillow, numpy, pydantic, PyYAML): importing f2f
never imports torch, diffusers, transformers, vllm or ray.
"""

from f2f.canvas import Box, Letterboxed, letterbox, unletterbox
from f2f.config import F2FConfig, load_config
from f2f.errors import BackendNotConfigured, EditCancelled, F2FError, InvalidConfig, InvalidImage, InvalidInput
from f2f.imageio import open_image
from f2f.pipeline import edit
from f2f.protocols import VLM, CancelToken, LoadedVideoGenerator, Progress, VideoGenerator
from f2f.result import EditResult
from f2f.selection import candidate_frames, parse_selection

__all__ = [
    "VLM",
    "BackendNotConfigured",
    "Box",
    "CancelToken",
    "EditCancelled",
    "EditResult",
    "F2FConfig",
    "F2FError",
    "InvalidConfig",
    "InvalidImage",
    "InvalidInput",
    "Letterboxed",
    "LoadedVideoGenerator",
    "Progress",
    "VideoGenerator",
    "candidate_frames",
    "edit",
    "letterbox",
    "load_config",
    "open_image",
    "parse_selection",
    "unletterbox",
]
