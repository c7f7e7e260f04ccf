"""Shared fixtures. This folder is on sys.path (pytest puts conftest folders there), so tests import `fakes`."""

from __future__ import annotations

import pytest
from PIL import Image

from f2f.config import F2FConfig, load_config


@pytest.fixture
def small_config() -> F2FConfig:
    """A CogVideoX-family 96x64 canvas, 17 frames, 2 steps: candidates 4, 8, 12, 16 (labels 1..4), seed 7."""
    video = {"width": 96, "height": 64, "num_frames": 17, "num_inference_steps": 2}
    return load_config(overrides={"generator": {"family": "cogvideox"}, "video": video, "seed": 7})


@pytest.fixture
def square_image() -> Image.Image:
    """A 40x40 RGB image with a distinct colour in each quadrant."""
    image = Image.new("RGB", (40, 40), (200, 30, 30))
    image.paste((30, 200, 30), (20, 0, 40, 20))
    image.paste((30, 30, 200), (0, 20, 20, 40))
    image.paste((220, 220, 220), (20, 20, 40, 40))
    return image
