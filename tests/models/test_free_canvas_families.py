"""CogVideoX1.5 and LTX-Video on tiny random-weight checkpoints (models tier: CPU, seconds).

Both have free canvases; each test runs for both families (`family` fixture)
through the real seam (`f2f.backends.video.i2v`) and, for equality, the plain
diffusers pipeline. Random weights make noise: counts, sizes, equality and the
errors are checked, never what the frames show.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("diffusers")

import torch

from f2f.backends.video.i2v import DiffusersVideoGenerator, check_video, inspect_checkpoint
from f2f.config import VideoConfig
from f2f.errors import InvalidConfig

pytestmark = pytest.mark.models

CAPTION = "The dog slowly sits down."
SAMPLE = Path(__file__).resolve().parents[2] / "f2f" / "data" / "sample.png"
BATCH_TOLERANCE = 1  # uint8 levels: a seed's frames in a batch vs alone (float rounding of batched kernels)
FAMILIES = {  # name: (tiny builder, canvas (a multiple of the rule, not the native area), frame step, size multiple)
    "cogvideox1.5": ("make_tiny_cogvideox", (112, 64), 8, 16),
    "ltx": ("make_tiny_ltx", (96, 64), 8, 32),
}


def _build(name: str, folder: Path) -> Path:
    if name == "ltx":
        from f2f.backends.tiny.tiny_ltx import make_tiny_ltx

        return make_tiny_ltx(folder, seed=0)
    from f2f.backends.tiny.tiny_cogvideox import make_tiny_cogvideox

    return make_tiny_cogvideox(folder, seed=0, variant="cogvideox1.5")


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, DiffusersVideoGenerator]]:
    name = request.param
    folder = _build(name, tmp_path_factory.mktemp(name) / f"tiny-{name}")
    gen = DiffusersVideoGenerator(folder, device="cpu", max_batch_seeds=1 if name == "ltx" else 2)
    yield name, folder, gen
    gen.close()


def settings(name: str, num_frames: int = 9, **extra: object) -> VideoConfig:
    width, height = FAMILIES[name][1]
    fps = 16 if name == "cogvideox1.5" else 24
    return VideoConfig(
        width=width, height=height, num_frames=num_frames, num_inference_steps=2, guidance_scale=3.0, fps=fps, **extra
    )


def canvas(name: str) -> Image.Image:
    width, height = FAMILIES[name][1]
    image = Image.new("RGB", (width, height), (200, 30, 30))
    image.paste((30, 200, 30), (width // 2, 0, width, height // 2))
    return image


def pixels(clip: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(frame, dtype=np.int16) for frame in clip])  # [F, H, W, 3]


def test_the_checkpoint_is_recognised_with_its_rules(family: tuple[str, Path, DiffusersVideoGenerator]) -> None:
    name, folder, _ = family
    found, spec = inspect_checkpoint(folder)
    assert found.name == ("ltx" if name == "ltx" else "cogvideox")
    native = (768, 512) if name == "ltx" else (1360, 768)  # the published area, not the config's RoPE table (1.5)
    assert (spec.canvas_size, spec.fixed_canvas) == (native, False)
    assert (spec.frame_step, spec.size_multiple) == FAMILIES[name][2:]
    assert spec.video_defaults()["max_canvas_pixels"] == native[0] * native[1]


@pytest.mark.parametrize("num_frames", [9, 17, 25])
def test_a_free_canvas_clip_has_exactly_the_frames_and_size_asked(
    family: tuple[str, Path, DiffusersVideoGenerator], num_frames: int
) -> None:
    name, _, gen = family
    clips = asyncio.run(gen.generate(canvas(name), CAPTION, [0], settings(name, num_frames)))
    assert len(clips) == 1 and len(clips[0]) == num_frames
    assert {frame.size for frame in clips[0]} == {FAMILIES[name][1]}


def test_frames_off_the_rule_are_refused_before_any_weight_loads(family: tuple[str, Path, DiffusersVideoGenerator]) -> None:
    name, folder, _ = family
    found, spec = inspect_checkpoint(folder)  # the configs alone: no weight is read
    with pytest.raises(InvalidConfig) as info:
        check_video(found, spec, settings(name, num_frames=13))
    assert info.value.field == "video.num_frames" and "8k+1 frames (9, 17, 25" in str(info.value)
    with pytest.raises(InvalidConfig) as info:
        check_video(found, spec, VideoConfig(**{**settings(name).model_dump(), "width": FAMILIES[name][3] + 8}))
    assert info.value.field == "video.width" and f"multiple of {FAMILIES[name][3]}" in str(info.value)


def test_equal_to_the_plain_diffusers_pipeline(family: tuple[str, Path, DiffusersVideoGenerator]) -> None:
    import diffusers

    name, folder, gen = family
    video = settings(name)
    ours = asyncio.run(gen.generate(canvas(name), CAPTION, [7], video))[0]
    pipe = getattr(diffusers, gen.family.pipeline_class).from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    family_args = (
        {"decode_timestep": 0.05, "decode_noise_scale": 0.025, "frame_rate": video.fps}
        if name == "ltx"
        else {"use_dynamic_cfg": False, "max_sequence_length": 226}
    )
    plain = pipe(
        image=canvas(name), prompt=CAPTION, height=video.height, width=video.width, num_frames=video.num_frames,
        num_inference_steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(7), **family_args,
    ).frames[0]  # fmt: skip
    assert np.array_equal(pixels(ours), pixels(plain))  # the same call, weights and shapes: bit for bit on any CPU


def test_seeds_in_one_batch_equal_seeds_alone(family: tuple[str, Path, DiffusersVideoGenerator]) -> None:
    """CogVideoX1.5: a batch of two. LTX-Video runs one seed per call (its pipeline takes one generator)."""
    name, _, gen = family
    together = asyncio.run(gen.generate(canvas(name), CAPTION, [3, 4], settings(name)))  # one batch of two
    alone = [asyncio.run(gen.generate(canvas(name), CAPTION, [seed], settings(name)))[0] for seed in (3, 4)]
    for solo, in_batch in zip(alone, together, strict=True):
        assert np.abs(pixels(solo) - pixels(in_batch)).max() <= BATCH_TOLERANCE
    assert np.abs(pixels(together[0]) - pixels(together[1])).mean() > 1.0  # the seeds differ


def test_ltx_refuses_a_shift_and_batched_seeds(family: tuple[str, Path, DiffusersVideoGenerator]) -> None:
    name, folder, gen = family
    if name != "ltx":
        pytest.skip("LTX-Video only")
    with pytest.raises(InvalidConfig) as info:
        DiffusersVideoGenerator(folder, device="cpu", max_batch_seeds=2)
    assert info.value.field == "generator.max_batch_seeds" and "one seed per batch" in str(info.value)
    with pytest.raises(InvalidConfig) as info:
        gen.check_settings(settings(name, shift=3.0))
    assert info.value.field == "video.shift"


@pytest.mark.parametrize(
    ("file", "key", "value", "words"),
    [
        ("transformer/config.json", "in_channels", 3, "the transformer takes in_channels 3"),
        ("transformer/config.json", "patch_size_t", 2, "1-frame patches"),
        ("model_index.json", "_class_name", "LTXLatentUpsamplePipeline", "names 'LTXLatentUpsamplePipeline'"),
    ],
)
def test_a_mismatched_ltx_folder_is_refused(
    family: tuple[str, Path, DiffusersVideoGenerator], tmp_path: Path, file: str, key: str, value: object, words: str
) -> None:
    name, folder, _ = family
    if name != "ltx":
        pytest.skip("LTX-Video only")
    broken = shutil.copytree(folder, tmp_path / "broken")
    data = json.loads((broken / file).read_text())
    (broken / file).write_text(json.dumps({**data, key: value}))
    with pytest.raises(InvalidConfig) as info:
        DiffusersVideoGenerator(broken, device="cpu")
    assert info.value.field == "generator.model_path" and words in str(info.value)


@pytest.mark.parametrize("profile", ["tiny-cogvideox1.5", "tiny-ltx"])
def test_edit_end_to_end_on_a_free_canvas_profile(tmp_path: Path, profile: str) -> None:
    (tmp_path / "cache.yaml").write_text(f"cache_dir: {tmp_path / 'cache'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "f2f.cli", "edit", str(SAMPLE), "make it rain", "--profile", profile,
         "--config", str(tmp_path / "cache.yaml"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    assert data["canvas"]["fit"] == "free"
    assert Image.open(tmp_path / "out" / "edited.png").size == Image.open(SAMPLE).size
