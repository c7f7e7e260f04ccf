"""How images are prepared for the metrics: the one validated evaluation config.

The default is the protocol that reproduces the Frame2Frame paper's PosEdit
numbers (docs/quality.md): every image (source, target, edit) resized to
512x512 with Pillow's bicubic filter, RGB values scaled to [0, 1] and given
to LPIPS as they are. LPIPS is defined on [-1, 1] inputs; [0, 1] is what the
paper's numbers were measured with (the same distances on [-1, 1] are about
1.4 times larger). `lpips_input: minus1_1` is the LPIPS authors' definition.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


class EvalProtocol(BaseModel):
    """Resolution, resampling and input range of the metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(512, ge=32, le=2048, description="Images are resized to size x size pixels before LPIPS and pose.")
    resample: Literal["bicubic", "bilinear", "lanczos", "nearest"] = Field("bicubic", description="Pillow resampling filter.")
    lpips_input: Literal["zero_1", "minus1_1"] = Field(
        "zero_1", description="RGB range given to LPIPS: zero_1 as the paper measured, minus1_1 as LPIPS defines."
    )
    pck_threshold: float = Field(
        0.2, gt=0, le=1, description="PCK: a joint is correct within this fraction of the target's torso size (PCK@0.2)."
    )


def prepare(image: Image.Image, protocol: EvalProtocol) -> Image.Image:
    """The image as every metric sees it: RGB, protocol.size x protocol.size."""
    image = image.convert("RGB")
    size = (protocol.size, protocol.size)
    return image if image.size == size else image.resize(size, RESAMPLING[protocol.resample])


def lpips_array(image: Image.Image, protocol: EvalProtocol) -> np.ndarray:
    """[3, H, W] float32 in the protocol's LPIPS input range."""
    a = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return a if protocol.lpips_input == "zero_1" else a * 2.0 - 1.0


def aspect_mismatch(a: tuple[int, int], b: tuple[int, int], tolerance: float = 0.02) -> bool:
    """True when two sizes differ in aspect ratio by more than `tolerance` (relative): they cannot be compared."""
    return abs(a[0] / a[1] - b[0] / b[1]) > tolerance * (a[0] / a[1])
