"""The pipeline call that test_parallel.py runs in one process and split over several: shared by both sides."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from f2f.config import VideoConfig

WIDTH, HEIGHT = 80, 48  # 5 x 3 patches a latent frame: 45 video tokens for 9 frames, uneven over 2 and 4 ranks
HEADS = 4


CAPTION = "the dog slowly sits down"
SETTINGS = VideoConfig(
    width=WIDTH, height=HEIGHT, num_frames=9, num_inference_steps=3, guidance_scale=6.0, fps=8
)  # what run_case asks for


def case_image() -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), (180, 60, 30))
    image.paste((20, 90, 200), (0, 0, WIDTH // 2, HEIGHT // 2))
    return image


def run_case(pipe: Any, guidance: float = 6.0) -> Any:
    """Frames (float32 numpy, 0..1) of a fixed image, caption and seed: 9 frames, 3 steps (guidance > 1: a CFG batch)."""
    output = pipe(
        image=case_image(),
        prompt=CAPTION,
        height=HEIGHT,
        width=WIDTH,
        num_frames=9,
        num_inference_steps=3,
        guidance_scale=guidance,
        use_dynamic_cfg=False,
        generator=torch.Generator("cpu").manual_seed(7),
        max_sequence_length=pipe.transformer.config.max_text_seq_length,
        output_type="np",
    )
    return output.frames[0]
