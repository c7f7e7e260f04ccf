"""The ChronoEdit family on a tiny random-weight checkpoint (models tier: CPU, seconds per video).

The checkpoint is built once per module with `make_tiny_chronoedit` and loaded
by the same code as real weights. Random weights make noise: these tests check
the frame rules with and without temporal reasoning, equality with the plain
diffusers pipeline, the scheduler, LoRAs, the refusals, and `f2f edit` end to
end, never what the frames show. (Masks: tests/models/test_masks.py.)
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
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("ftfy")  # ChronoEditPipeline cleans prompts with it

import torch

from f2f.backends.tiny.tiny_chronoedit import make_tiny_chronoedit
from f2f.backends.tiny.tiny_wan import make_tiny_wan_lora
from f2f.backends.video import chronoedit, wan
from f2f.backends.video.i2v import DiffusersVideoGenerator, check_video, inspect_checkpoint
from f2f.config import F2FConfig, LoraConfig, VideoConfig
from f2f.errors import InvalidConfig, InvalidInput
from f2f.families import CheckpointSpec
from f2f.request import check_edit

pytestmark = pytest.mark.models

WIDTH, HEIGHT = 80, 48  # a free canvas, multiples of 16
CAPTION = "Add a red hat to the dog; keep the background and the dog's pose unchanged."
SAMPLE = Path(__file__).resolve().parents[2] / "f2f" / "data" / "sample.png"
THINK = {"num_frames": 29, "enable_temporal_reasoning": True, "num_temporal_reasoning_steps": 2}  # reasoning every step


def settings(**extra: object) -> VideoConfig:
    values = {"width": WIDTH, "height": HEIGHT, "num_frames": 5, "num_inference_steps": 2, "guidance_scale": 5.0, "fps": 8,
              "enable_temporal_reasoning": False, "num_temporal_reasoning_steps": 0, "shift": 5.0}  # fmt: skip
    return VideoConfig(**{**values, **extra})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_chronoedit(tmp_path_factory.mktemp("chronoedit") / "tiny-chronoedit", seed=0)


@pytest.fixture(scope="module")
def generator(folder: Path) -> Iterator[DiffusersVideoGenerator]:
    gen = DiffusersVideoGenerator(folder, device="cpu", max_batch_seeds=2)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def canvas() -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), (200, 30, 30))
    image.paste((30, 200, 30), (WIDTH // 2, 0, WIDTH, HEIGHT // 2))
    return image


def pixels(clip: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(frame, dtype=np.int16) for frame in clip])


def plain(folder: Path, canvas: Image.Image, seed: int, video: VideoConfig, num_frames: int) -> np.ndarray:
    """The plain diffusers pipeline as ChronoEdit's own script runs it (UniPC at the flow shift)."""
    from diffusers import ChronoEditPipeline, UniPCMultistepScheduler

    pipe = ChronoEditPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=video.shift)
    frames = pipe(
        image=canvas, prompt=[CAPTION], height=video.height, width=video.width, num_frames=num_frames,
        num_inference_steps=video.num_inference_steps, guidance_scale=video.guidance_scale,
        generator=[torch.Generator().manual_seed(seed)], output_type="pil", max_sequence_length=512,
        enable_temporal_reasoning=bool(video.enable_temporal_reasoning),
        num_temporal_reasoning_steps=video.num_temporal_reasoning_steps,
    ).frames[0]  # fmt: skip
    return pixels(frames)


def test_the_tiny_checkpoint_is_recognised_with_its_rules(folder: Path) -> None:
    found, spec = inspect_checkpoint(folder)
    assert found.name == "chronoedit" and found.pipeline_class == "ChronoEditPipeline"
    assert (spec.canvas_size, spec.fixed_canvas, spec.size_multiple, spec.frame_step) == ((1280, 720), False, 16, 4)
    assert spec.options["reasoning_frames"] == 29  # rope_temporal_skip_len 8: the edit at latent frame 7


@pytest.mark.parametrize(
    ("extra", "frames"),
    [
        ({}, 5),  # the source and the edit
        ({"enable_temporal_reasoning": True, "num_temporal_reasoning_steps": 1}, 5),  # reasoning frames dropped after step 1
        (THINK, 29),  # reasoning for every step: the whole trajectory
    ],
)
def test_a_clip_has_the_frames_its_reasoning_makes_and_is_the_plain_pipeline(
    generator: DiffusersVideoGenerator, folder: Path, canvas: Image.Image, extra: dict[str, object], frames: int
) -> None:
    video = settings(**{"num_frames": frames, **extra})
    together = asyncio.run(generator.generate(canvas, CAPTION, [3, 4], video))
    assert [len(clip) for clip in together] == [frames, frames]
    assert {frame.size for frame in together[0]} == {(WIDTH, HEIGHT)}
    asked = 29 if video.enable_temporal_reasoning else 5
    alone = asyncio.run(generator.generate(canvas, CAPTION, [3], video))[0]
    assert np.array_equal(pixels(alone), plain(folder, canvas, 3, video, asked))  # the same call: bit for bit
    # A seed in a batch of two: the batched matmuls sum in another order on any CPU's kernels (AMD or Intel), a float
    # rounding far below one 8-bit level that can still tip a pixel across a rounding edge: one level at most.
    assert np.abs(pixels(together[0]) - pixels(alone)).max() <= 1


def test_reasoning_runs_with_a_flow_match_scheduler_checkpoint(folder: Path, canvas: Image.Image, tmp_path: Path) -> None:
    """diffusers issue 13620: the pipeline's reasoning step trims UniPC's history, which FlowMatchEuler lacks."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    copy = shutil.copytree(folder, tmp_path / "flow-match")
    shutil.rmtree(copy / "scheduler")
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(copy / "scheduler")
    index = json.loads((copy / "model_index.json").read_text())
    (copy / "model_index.json").write_text(json.dumps({**index, "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}))
    gen = DiffusersVideoGenerator(copy, device="cpu")
    try:
        video = settings(num_frames=5, enable_temporal_reasoning=True, num_temporal_reasoning_steps=1, shift=None)
        clip = asyncio.run(gen.generate(canvas, CAPTION, [0], video))[0]
        assert len(clip) == 5
        assert type(gen._pipe.scheduler).__name__ == "UniPCMultistepScheduler"
        assert gen._pipe.scheduler.config.flow_shift == 3.0  # the checkpoint's own shift, carried over
    finally:
        gen.close()


def test_video_shift_changes_the_clip_and_does_not_outlive_its_request(
    generator: DiffusersVideoGenerator, canvas: Image.Image
) -> None:
    own = asyncio.run(generator.generate(canvas, CAPTION, [1], settings(shift=None)))[0]
    shifted = asyncio.run(generator.generate(canvas, CAPTION, [1], settings(shift=1.0)))[0]
    again = asyncio.run(generator.generate(canvas, CAPTION, [1], settings(shift=None)))[0]
    assert np.abs(pixels(own) - pixels(shifted)).mean() > 0.5
    assert np.array_equal(pixels(own), pixels(again))


def test_a_wan_format_lora_is_fused(
    generator: DiffusersVideoGenerator, folder: Path, canvas: Image.Image, tmp_path: Path
) -> None:
    lora = make_tiny_wan_lora(tmp_path / "lora.safetensors", seed=1, variant="wan2.1")  # the same block shapes
    with_lora = DiffusersVideoGenerator(folder, device="cpu", lora=[LoraConfig(path=lora)])
    try:
        ours = asyncio.run(with_lora.generate(canvas, CAPTION, [2], settings()))[0]
    finally:
        with_lora.close()
    without = asyncio.run(generator.generate(canvas, CAPTION, [2], settings()))[0]
    assert np.abs(pixels(ours) - pixels(without)).mean() > 0.5


# --- bad input: one line naming the field, the value and the rule, from the configs alone ----------------


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"num_frames": 9}, "video.num_frames", "must be 5: chronoedit returns 5 frames (the source and the edit)"),
        ({"num_frames": 29, "enable_temporal_reasoning": True, "num_temporal_reasoning_steps": 3},
         "video.num_temporal_reasoning_steps", "between 1 and video.num_inference_steps (2)"),
        ({"enable_temporal_reasoning": True, "num_temporal_reasoning_steps": 0},
         "video.num_temporal_reasoning_steps", "between 1 and"),
        ({"num_temporal_reasoning_steps": 1}, "video.num_temporal_reasoning_steps", "need enable_temporal_reasoning: true"),
        ({"num_frames": 5, "enable_temporal_reasoning": True, "num_temporal_reasoning_steps": 2},
         "video.num_frames", "must be 29: temporal reasoning for every step returns the whole 29-frame"),
        ({"num_frames": 13, "enable_temporal_reasoning": True, "num_temporal_reasoning_steps": 1},
         "video.num_frames", "must be 5"),
        ({"width": 88}, "video.width", "multiple of 16"),
    ],
)  # fmt: skip
def test_settings_chronoedit_cannot_make_are_refused_before_any_weight_loads(
    folder: Path, extra: dict[str, object], field: str, words: str
) -> None:
    found, spec = inspect_checkpoint(folder)  # the configs alone: no weight is read
    with pytest.raises(InvalidConfig) as info:
        check_video(found, spec, settings(**extra))
    assert info.value.field == field and words in str(info.value)
    assert "\n" not in str(info.value)


def test_the_reasoning_fields_are_refused_by_a_family_without_reasoning() -> None:
    spec = CheckpointSpec(name="w", canvas_size=(832, 480), fixed_canvas=False, size_multiple=16, frame_step=4,
                          options={"two_experts": False, "text_tokens": 512})  # fmt: skip
    plain_wan = VideoConfig(width=80, height=48, num_frames=5, num_inference_steps=2, guidance_scale=5.0, fps=16)
    check_video(wan.FAMILY, spec, plain_wan)
    with pytest.raises(InvalidConfig) as info:
        check_video(wan.FAMILY, spec, settings())
    assert info.value.field == "video.enable_temporal_reasoning" and "the wan family has no temporal reasoning" in str(info.value)


def test_a_folder_indexed_as_wan_is_read_and_run_as_chronoedit(
    generator: DiffusersVideoGenerator, folder: Path, canvas: Image.Image, tmp_path: Path
) -> None:
    """The Hub tags ChronoEdit-14B-Diffusers WanImageToVideoPipeline: its ChronoEdit transformer tells it apart."""
    tagged = shutil.copytree(folder, tmp_path / "tagged")
    index = json.loads((tagged / "model_index.json").read_text())
    (tagged / "model_index.json").write_text(json.dumps({**index, "_class_name": "WanImageToVideoPipeline"}))
    family, _ = inspect_checkpoint(tagged)
    assert family.name == "chronoedit"
    loaded = DiffusersVideoGenerator(tagged, device="cpu", max_batch_seeds=1)
    try:
        clip = asyncio.run(loaded.generate(canvas, CAPTION, [3], settings()))[0]
    finally:
        loaded.close()
    assert np.array_equal(pixels(clip), pixels(asyncio.run(generator.generate(canvas, CAPTION, [3], settings()))[0]))


@pytest.mark.parametrize("part", ["image_encoder", "image_processor", "transformer"])
def test_a_folder_missing_a_part_is_refused_naming_it(folder: Path, tmp_path: Path, part: str) -> None:
    broken = shutil.copytree(folder, tmp_path / "broken")
    shutil.rmtree(broken / part)
    with pytest.raises(InvalidConfig) as info:
        inspect_checkpoint(broken)
    assert info.value.field == "generator.model_path" and f"broken lacks {part}: a ChronoEdit checkpoint has" in str(info.value)


def test_a_mask_with_reasoning_cut_short_is_refused_by_the_request_check(
    generator: DiffusersVideoGenerator, canvas: Image.Image
) -> None:
    mask = Image.new("L", canvas.size, 0)
    mask.paste(255, (WIDTH // 2, 0, WIDTH, HEIGHT))  # 255: edit here
    for mode, video, refused in [
        ("latent", settings(enable_temporal_reasoning=True, num_temporal_reasoning_steps=1), True),
        ("composite", settings(enable_temporal_reasoning=True, num_temporal_reasoning_steps=1), False),
        ("latent", settings(**THINK), False),
    ]:
        config = F2FConfig.model_validate(
            {"generator": {"family": "chronoedit"}, "video": video.model_dump(), "mask": {"mode": mode}}
        )
        if refused:
            with pytest.raises(InvalidInput) as info:
                check_edit(canvas, CAPTION, config, mask=mask)
            assert info.value.field == "mask" and "drops the reasoning frames" in str(info.value)
        else:
            assert check_edit(canvas, CAPTION, config, mask=mask).mask is not None
    assert len(asyncio.run(generator.generate(canvas, CAPTION, [0], settings(**THINK), mask=mask))[0]) == 29


def test_a_split_is_refused_at_load() -> None:
    assert chronoedit.FAMILY.split is None  # i2v refuses generator.parallel for a family without split


# --- end to end ------------------------------------------------------------------------------------------


def test_f2f_edit_on_tiny_chronoedit_keeps_the_source_size(tmp_path: Path) -> None:
    out, config = tmp_path / "out", tmp_path / "cache.yaml"
    config.write_text(f"cache_dir: {tmp_path / 'cache'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "f2f.cli", "edit", str(SAMPLE), "add a red hat", "--profile", "tiny-chronoedit",
         "--config", str(config), "--out", str(out), "--seed", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "result.json").read_text())
    assert data["canvas"]["fit"] == "free"
    assert Image.open(out / "edited.png").size == Image.open(SAMPLE).size


def test_f2f_edit_refuses_reasoning_steps_beyond_the_steps_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"cache_dir: {tmp_path / 'cache'}\n"
        "video: {num_frames: 29, enable_temporal_reasoning: true, num_temporal_reasoning_steps: 9}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "f2f.cli", "edit", str(SAMPLE), "add a red hat", "--profile", "tiny-chronoedit",
         "--config", str(config), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "num_temporal_reasoning_steps" in line]
    assert lines and "9" in lines[0] and "between 1 and video.num_inference_steps (2)" in lines[0], result.stderr[-2000:]
