"""The Wan video family on tiny random-weight checkpoints (models tier: CPU, seconds per video).

The checkpoints are built once per module with `make_tiny_wan` (Wan2.1 I2V
with CLIP, Wan2.2 I2V-A14B with two experts, Wan2.2 TI2V) and loaded by the
same code as real weights. Random weights make noise: these tests check the
rules, counts, sizes, equality with the plain diffusers pipeline, the shift,
the experts and LoRAs, never what the frames show.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
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
pytest.importorskip("ftfy")  # WanImageToVideoPipeline cleans prompts with it

import torch
from diffusers import WanImageToVideoPipeline

from f2f.backends.tiny.tiny_wan import make_tiny_wan, make_tiny_wan_lora
from f2f.backends.video import cogvideox
from f2f.backends.video.i2v import DiffusersVideoGenerator, check_video, inspect_checkpoint
from f2f.config import LoraConfig, VideoConfig
from f2f.errors import InvalidConfig
from f2f.families import CheckpointSpec

pytestmark = pytest.mark.models

WIDTH, HEIGHT = 80, 48  # a free canvas: not the native 832x480 aspect, multiples of 16
CAPTION = "The dog slowly sits down on the grass."
BATCH_TOLERANCE = 1  # uint8 levels: a seed's frames in a batch vs alone (float rounding of batched kernels)
EPS32 = float(np.finfo(np.float32).eps)
SAMPLE = Path(__file__).resolve().parents[2] / "f2f" / "data" / "sample.png"


def settings(num_frames: int = 5, steps: int = 2, **extra: object) -> VideoConfig:
    return VideoConfig(width=WIDTH, height=HEIGHT, num_frames=num_frames, num_inference_steps=steps, guidance_scale=5.0,
                       fps=16, **extra)  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wan")
    return {variant: make_tiny_wan(root / variant, seed=0, variant=variant) for variant in ("wan2.1", "wan2.2", "wan2.2-ti2v")}


@pytest.fixture(scope="module")
def generator(folders: dict[str, Path]) -> Iterator[DiffusersVideoGenerator]:
    """Wan2.1, two seeds per batch."""
    gen = DiffusersVideoGenerator(folders["wan2.1"], device="cpu", max_batch_seeds=2)
    yield gen
    gen.close()


@pytest.fixture
def canvas() -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), (200, 30, 30))
    image.paste((30, 200, 30), (40, 0, 80, 24))
    return image


def pixels(clip: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(frame, dtype=np.int16) for frame in clip])  # [F, H, W, 3]


def plain(pipe: WanImageToVideoPipeline, image: Image.Image, seeds: list[int], config: VideoConfig) -> list[np.ndarray]:
    """The plain diffusers call on the same inputs: one image for the batch, one generator per seed."""
    out = pipe(image=image, prompt=[CAPTION] * len(seeds), height=config.height, width=config.width,
               num_frames=config.num_frames, num_inference_steps=config.num_inference_steps,
               guidance_scale=config.guidance_scale, generator=[torch.Generator().manual_seed(s) for s in seeds],
               max_sequence_length=512, output_type="pil")  # fmt: skip
    return [pixels(clip) for clip in out.frames]


def load_plain(folder: Path) -> WanImageToVideoPipeline:
    pipe = WanImageToVideoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- the checkpoint's rules (no weights load) ---------------------------------------------------------


def _digest(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_tiny_wan_is_deterministic_and_has_the_real_layouts(folders: dict[str, Path], tmp_path: Path) -> None:
    state = torch.get_rng_state()
    assert _digest(make_tiny_wan(tmp_path / "again", seed=0, variant="wan2.2")) == _digest(folders["wan2.2"])
    assert torch.equal(torch.get_rng_state(), state)
    assert {p.name for p in folders["wan2.1"].iterdir()} >= {"image_encoder", "image_processor", "transformer"}
    assert not (folders["wan2.1"] / "transformer_2").exists()
    assert (folders["wan2.2"] / "transformer_2").is_dir() and not (folders["wan2.2"] / "image_encoder").exists()
    index = json.loads((folders["wan2.2-ti2v"] / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline" and index["expand_timesteps"] is True
    scheduler = json.loads((folders["wan2.1"] / "scheduler/scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "UniPCMultistepScheduler" and scheduler["use_flow_sigmas"]


@pytest.mark.parametrize(
    ("variant", "multiple", "canvas", "two_experts"),
    [("wan2.1", 16, (832, 480), False), ("wan2.2", 16, (832, 480), True), ("wan2.2-ti2v", 32, (1280, 704), False)],
)
def test_wan_folders_are_recognised(
    folders: dict[str, Path], variant: str, multiple: int, canvas: tuple[int, int], two_experts: bool
) -> None:
    family, spec = inspect_checkpoint(folders[variant])
    assert family.name == "wan" and not spec.fixed_canvas and spec.frame_step == 4
    assert (spec.size_multiple, spec.canvas_size, spec.options["two_experts"]) == (multiple, canvas, two_experts)


def _edited_copy(folder: Path, tmp_path: Path, edits: dict[str, dict[str, object]]) -> Path:
    copy = shutil.copytree(folder, tmp_path / "edited")
    for name, values in edits.items():
        data = json.loads((copy / name).read_text())
        data.update(values)
        (copy / name).write_text(json.dumps(data))
    return copy


@pytest.mark.parametrize(
    ("variant", "edits", "words"),
    [
        ("wan2.1", {"transformer/config.json": {"in_channels": 4}}, "text-to-video Wan checkpoint"),
        # Wan2.1-T2V: WanPipeline, z channels, no expand_timesteps
        (
            "wan2.1",
            {"model_index.json": {"_class_name": "WanPipeline"}, "transformer/config.json": {"in_channels": 4}},
            "in_channels 4",
        ),
        ("wan2.1", {"transformer/config.json": {"in_channels": 20}}, "expected 12 (noise + 4 mask + image latents)"),
        ("wan2.2", {"model_index.json": {"boundary_ratio": None}}, "transformer_2 without boundary_ratio"),
        ("wan2.2-ti2v", {"transformer/config.json": {"in_channels": 12}}, "expected 4 (the latents (TI2V"),
    ],
)
def test_a_folder_wan_cannot_animate_is_refused_in_one_line(
    folders: dict[str, Path], tmp_path: Path, variant: str, edits: dict[str, dict[str, object]], words: str
) -> None:
    with pytest.raises(InvalidConfig) as info:
        DiffusersVideoGenerator(_edited_copy(folders[variant], tmp_path, edits), device="cpu")
    assert info.value.field == "generator.model_path" and words in str(info.value) and "\n" not in str(info.value)


def test_frames_are_4k_plus_1_and_sizes_multiples_of_16(folders: dict[str, Path]) -> None:
    family, spec = inspect_checkpoint(folders["wan2.1"])
    check_video(family, spec, settings(num_frames=9))
    for bad, field, words in [
        (settings(num_frames=10), "video.num_frames", "4k+1 frames (5, 9, 13"),
        (VideoConfig(**{**settings().model_dump(), "width": 88}), "video.width", "multiple of 16"),
    ]:
        with pytest.raises(InvalidConfig) as info:
            check_video(family, spec, bad)
        assert info.value.field == field and words in str(info.value)


def test_a_shift_is_refused_on_cogvideox_and_taken_by_wan(folders: dict[str, Path]) -> None:
    spec = CheckpointSpec(name="CogVideoX-5b-I2V", canvas_size=(720, 480), fixed_canvas=True, size_multiple=16, frame_step=8)
    shifted = VideoConfig(width=720, height=480, num_frames=9, num_inference_steps=2, guidance_scale=6.0, fps=8, shift=3.0)
    with pytest.raises(InvalidConfig) as info:
        check_video(cogvideox.FAMILY, spec, shifted)
    assert info.value.field == "video.shift" and "no timestep shift" in str(info.value)
    family, wan_spec = inspect_checkpoint(folders["wan2.1"])
    check_video(family, wan_spec, settings(shift=3.0))


# --- generate -------------------------------------------------------------------------------------


def test_generate_is_the_plain_pipeline_and_a_seed_is_the_same_in_a_batch(
    generator: DiffusersVideoGenerator, folders: dict[str, Path], canvas: Image.Image
) -> None:
    clips = asyncio.run(generator.generate(canvas, CAPTION, [3, 4], settings()))
    assert [len(clip) for clip in clips] == [5, 5] and {f.size for c in clips for f in c} == {(WIDTH, HEIGHT)}
    pipe = load_plain(folders["wan2.1"])
    batch = plain(pipe, canvas, [3, 4], settings())
    # the same call, weights and shapes: bit for bit on any CPU
    assert all(np.array_equal(pixels(ours), theirs) for ours, theirs in zip(clips, batch, strict=True))
    alone = plain(pipe, canvas, [4], settings())[0]
    assert np.abs(alone - pixels(clips[1])).max() <= BATCH_TOLERANCE
    assert np.abs(pixels(clips[0]) - pixels(clips[1])).mean() > 1.0  # the seeds differ


def test_the_two_experts_share_the_steps_at_the_boundary(folders: dict[str, Path], canvas: Image.Image) -> None:
    gen = DiffusersVideoGenerator(folders["wan2.2"], device="cpu")
    calls: list[str] = []
    for name in ("transformer", "transformer_2"):
        getattr(gen._pipe, name).register_forward_pre_hook(lambda *_, name=name: calls.append(name))
    clips = asyncio.run(gen.generate(canvas, CAPTION, [0], settings(steps=4)))
    gen.close()
    assert len(clips[0]) == 5
    # the high-noise expert takes the steps with t >= 0.9 x 1000, the low-noise one the rest; 2 calls a step (guidance)
    timesteps = _timesteps(folders["wan2.2"], 4)
    high = sum(t >= 900 for t in timesteps)
    assert 0 < high < 4 and calls == ["transformer"] * 2 * high + ["transformer_2"] * 2 * (4 - high)


def _timesteps(folder: Path, steps: int) -> list[float]:
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler.from_pretrained(folder, subfolder="scheduler")
    scheduler.set_timesteps(steps)
    return [float(t) for t in scheduler.timesteps]


def test_video_shift_changes_the_clip_and_does_not_outlive_its_request(
    generator: DiffusersVideoGenerator, canvas: Image.Image
) -> None:
    checkpoint = dict(generator._pipe.scheduler.config)
    first = asyncio.run(generator.generate(canvas, CAPTION, [1], settings()))[0]
    shifted = asyncio.run(generator.generate(canvas, CAPTION, [1], settings(shift=8.0)))[0]
    changed = dict(generator._pipe.scheduler.config)
    again = asyncio.run(generator.generate(canvas, CAPTION, [1], settings()))[0]
    # changed: a mean over half a level (float rounding moves at most one level on a few pixels); restored: the same
    # call in the same process, so bit for bit on any CPU
    assert np.abs(pixels(first) - pixels(shifted)).mean() > 0.5 and np.array_equal(pixels(first), pixels(again))
    assert changed == {**checkpoint, "flow_shift": 8.0}  # nothing else of the scheduler changed
    assert dict(generator._pipe.scheduler.config) == checkpoint


# --- LoRA ------------------------------------------------------------------------------------------


def test_a_lora_in_the_wan_trainers_format_is_fused_as_diffusers_defines_it(
    generator: DiffusersVideoGenerator, folders: dict[str, Path], canvas: Image.Image, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    lora_file = make_tiny_wan_lora(tmp_path / "lora.safetensors", seed=1, variant="wan2.1")
    scale = 0.75
    with_lora = DiffusersVideoGenerator(folders["wan2.1"], device="cpu", lora=[LoraConfig(path=lora_file, scale=scale)])
    fused = {k: v.clone() for k, v in with_lora._pipe.transformer.state_dict().items()}
    ours = asyncio.run(with_lora.generate(canvas, CAPTION, [2], settings()))[0]
    with_lora.close()
    without = asyncio.run(generator.generate(canvas, CAPTION, [2], settings()))[0]
    assert np.abs(pixels(ours) - pixels(without)).mean() > 0.5  # more than rounding's one level on a few pixels
    # the fused weights: W + scale * (alpha / rank) * up @ down, within float32 rounding of that sum (a few ulps
    # of the magnitudes added: the product of rank-2 factors, the scaling and the addition each round once)
    base, lora = load_plain(folders["wan2.1"]).transformer.state_dict(), load_file(str(lora_file))
    layers = [
        k.removeprefix("diffusion_model.").removesuffix(".lora_down.weight") for k in lora if k.endswith("lora_down.weight")
    ]
    for layer in layers:
        down, up = lora[f"diffusion_model.{layer}.lora_down.weight"], lora[f"diffusion_model.{layer}.lora_up.weight"]
        alpha = float(lora[f"diffusion_model.{layer}.alpha"])
        target = _diffusers_name(layer)
        delta = scale * alpha / down.shape[0] * (up.double() @ down.double())
        weight = base[f"{target}.weight"].double()
        magnitude = scale * alpha / down.shape[0] * (up.double().abs() @ down.double().abs())
        bound = 4 * EPS32 * (weight.abs() + delta.abs() + magnitude)
        assert ((fused[f"{target}.weight"].double() - (weight + delta)).abs() <= bound).all(), target
    assert any(not torch.equal(fused[k], base[k]) for k in base)
    # and the run is the plain pipeline with those weights, to the bit
    pipe = load_plain(folders["wan2.1"])
    pipe.transformer.load_state_dict(fused)
    assert np.array_equal(plain(pipe, canvas, [2], settings())[0], pixels(ours))


def _diffusers_name(layer: str) -> str:
    """The diffusers layer of an original Wan trainer's one (blocks.0.self_attn.q -> blocks.0.attn1.to_q)."""
    names = {"self_attn": "attn1", "cross_attn": "attn2", "q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}
    block, module, part = layer.rsplit(".", 2)
    if module == "ffn":
        return f"{block}.ffn.net.{'0.proj' if part == '0' else '2'}"
    return f"{block}.{names[module]}.{names[part]}"


@pytest.mark.parametrize(("change", "words"), [("shape", "the LoRA makes"), ("layer", "which the transformer does not have")])
def test_a_lora_that_does_not_fit_is_refused_before_the_pipeline_loads(
    folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str, words: str
) -> None:
    from safetensors.torch import load_file, save_file

    path = make_tiny_wan_lora(tmp_path / "lora.safetensors", seed=0, variant="wan2.1")
    state = load_file(str(path))
    key = "diffusion_model.blocks.0.ffn.0.lora_up.weight"
    if change == "shape":
        state[key] = torch.zeros(48, state[key].shape[1])  # ffn 48 wide: a bigger model's LoRA
    else:
        state = {k.replace("blocks.0.", "blocks.3."): v for k, v in state.items()}  # a block the tiny model lacks
    save_file(state, str(path))

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pipeline loaded before the LoRA was checked")

    monkeypatch.setattr(WanImageToVideoPipeline, "from_pretrained", no_load)
    with pytest.raises(InvalidConfig) as info:
        DiffusersVideoGenerator(folders["wan2.1"], device="cpu", lora=[LoraConfig(path=path)])
    assert info.value.field == "generator.lora[0].path" and words in str(info.value)


# --- end to end ------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["tiny-wan2.1", "tiny-wan2.2"])
def test_f2f_edit_on_a_tiny_wan_profile_keeps_the_source_size(tmp_path: Path, profile: str) -> None:
    out, config = tmp_path / "out", tmp_path / "cache.yaml"
    config.write_text(f"cache_dir: {tmp_path / 'cache'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "f2f.cli", "edit", str(SAMPLE), "make it rain", "--profile", profile, "--config", str(config),
         "--out", str(out), "--seed", "1"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "result.json").read_text())
    assert data["canvas"]["fit"] == "free"
    assert Image.open(out / "edited.png").size == Image.open(SAMPLE).size


# --- what the family supports ----------------------------------------------------------------------


def test_cfg_parallel_and_unverified_speed_switches_are_refused_at_load(folders: dict[str, Path]) -> None:
    """Wan splits by Ulysses only (diffusers' context parallelism: on CPU diffusers 0.42.1 cannot build its mesh,
    `rank % torch.accelerator.device_count()` with no accelerator, so the split itself runs on GPUs only)."""
    from f2f.backends.video.parallel import ParallelGroups
    from f2f.config import ParallelConfig, SpeedConfig

    groups = ParallelGroups(ParallelConfig(cfg=2, ulysses=1), rank=0, cfg_group=None, sp_group=None)
    with pytest.raises(InvalidConfig) as info:
        DiffusersVideoGenerator(folders["wan2.1"], device="cpu", parallel=groups)
    assert info.value.field == "generator.parallel.cfg" and "only by ulysses" in str(info.value)
    with pytest.raises(InvalidConfig) as info:
        DiffusersVideoGenerator(folders["wan2.1"], device="cpu", speed=SpeedConfig(cache="pyramid"))
    assert info.value.field == "generator.speed.cache" and "wan family does not support it" in str(info.value)


def test_the_attention_kernel_switch_keeps_the_clip(
    generator: DiffusersVideoGenerator, folders: dict[str, Path], canvas: Image.Image
) -> None:
    from f2f.config import SpeedConfig

    math = DiffusersVideoGenerator(folders["wan2.1"], device="cpu", speed=SpeedConfig(attention="math"))
    ours = asyncio.run(math.generate(canvas, CAPTION, [5], settings()))[0]
    math.close()
    reference = asyncio.run(generator.generate(canvas, CAPTION, [5], settings()))[0]
    assert np.abs(pixels(ours) - pixels(reference)).max() <= BATCH_TOLERANCE  # another SDPA kernel: float rounding
