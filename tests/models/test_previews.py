"""Previews of the path while it is denoised (`f2f.backends.video.previews`), on every tiny family: they come at the
asked steps, at the canvas's size, and the frames with previews are the frames without, bit for bit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from f2f.backends.video.i2v import DiffusersVideoGenerator
from f2f.config import VideoConfig
from f2f.protocols import Progress

CAPTION = "The dog slowly sits down on the grass."
STEPS = 4
# family: (canvas, frames, extra video settings)
FAMILIES = {
    "cogvideox": ((96, 64), 9, {}),
    "wan2.1": ((80, 48), 9, {}),
    "ltx": ((96, 64), 9, {}),
    "chronoedit": ((80, 48), 5, {"enable_temporal_reasoning": False, "num_temporal_reasoning_steps": 0}),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from f2f.backends.tiny.tiny_chronoedit import make_tiny_chronoedit
    from f2f.backends.tiny.tiny_cogvideox import make_tiny_cogvideox
    from f2f.backends.tiny.tiny_ltx import make_tiny_ltx
    from f2f.backends.tiny.tiny_wan import make_tiny_wan

    root = tmp_path_factory.mktemp("previews")
    return {
        "cogvideox": make_tiny_cogvideox(root / "cogvideox", seed=0, height=64, width=96, layers=1),
        "wan2.1": make_tiny_wan(root / "wan2.1", seed=0),
        "ltx": make_tiny_ltx(root / "ltx", seed=0),
        "chronoedit": make_tiny_chronoedit(root / "chronoedit", seed=0),
    }


def _run(generator: DiffusersVideoGenerator, name: str, preview_every: int | None) -> tuple[np.ndarray, list[Progress]]:
    (width, height), frames, extra = FAMILIES[name]
    image = Image.new("RGB", (width, height), (180, 60, 30))
    image.paste((20, 90, 200), (0, 0, width // 2, height // 2))
    settings = VideoConfig(
        width=width, height=height, num_frames=frames, num_inference_steps=STEPS, guidance_scale=5.0, fps=8, **extra
    )
    events: list[Progress] = []
    asked = {} if preview_every is None else {"preview_every": preview_every}
    clips = asyncio.run(generator.generate(image, CAPTION, [5, 6], settings, progress=events.append, **asked))
    return np.stack([np.asarray(frame) for clip in clips for frame in clip]), events


@pytest.mark.parametrize("name", list(FAMILIES))
def test_previews_come_at_the_asked_steps_and_leave_the_frames_bit_for_bit(checkpoints: dict[str, Path], name: str) -> None:
    generator = DiffusersVideoGenerator(checkpoints[name], device="cpu", max_batch_seeds=1 if name == "ltx" else 2)
    plain, events = _run(generator, name, None)
    assert all(event.preview is None for event in events)
    previewed, events = _run(generator, name, 2)
    generator.close()
    assert np.array_equal(previewed, plain)  # bit for bit
    steps = [event.step for event in events if event.preview is not None]
    total = events[-1].total
    assert steps == [step for step in range(1, total + 1) if (step - 1) % STEPS % 2 == 1]  # every 2nd step of each batch
    canvas = FAMILIES[name][0]
    assert all(event.preview.size == canvas and event.preview.mode == "RGB" for event in events if event.preview)
    cached = list(checkpoints[name].glob("f2f-preview-*.json"))
    assert len(cached) == 1 and len(json.loads(cached[0].read_text())["bias"]) == 3  # fitted once, kept beside it


def test_the_map_has_one_weight_per_latent_channel_and_is_read_back(checkpoints: dict[str, Path]) -> None:
    from f2f.backends.video.previews import fit_map, preview_map

    generator = DiffusersVideoGenerator(checkpoints["wan2.1"], device="cpu")
    pipe, family, spec = generator._pipe, generator.family, generator.spec
    fitted = fit_map(pipe, family, spec)
    assert preview_map(pipe, family, spec, checkpoints["wan2.1"]) == preview_map(pipe, family, spec, checkpoints["wan2.1"])
    assert len(fitted.weights) == 3 and len(fitted.weights[0]) == pipe.vae.config.z_dim
    generator.close()


def test_the_clean_prediction_is_the_schedulers_x0_where_it_keeps_one(checkpoints: dict[str, Path]) -> None:
    """Wan's UniPC keeps x0 (`model_outputs[-1]`); CogVideoX's DDIM keeps none: its latents are previewed."""
    import torch

    from f2f.backends.video.previews import clean_prediction

    kept = {}
    for name in ("wan2.1", "cogvideox"):
        generator = DiffusersVideoGenerator(checkpoints[name], device="cpu")
        _run(generator, name, None)
        latents = torch.zeros(1)
        kept[name] = clean_prediction(generator._pipe, latents) is not latents
        generator.close()
    assert kept == {"wan2.1": True, "cogvideox": False}
