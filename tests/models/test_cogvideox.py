"""The CogVideoX video backend on a tiny random-weight checkpoint (models tier: CPU, seconds).

The checkpoint is built once per module with `make_tiny_cogvideox` (96x64
canvas) and loaded by the same code as real weights. Random weights make noise,
not video: these tests check counts, sizes, determinism, batching, progress,
cancellation and the errors, never what the frames show.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("diffusers")

import torch

from f2f.backends.tiny.tiny_cogvideox import make_tiny_cogvideox
from f2f.backends.video.i2v import DiffusersVideoGenerator
from f2f.config import F2FConfig, GeneratorConfig, VideoConfig
from f2f.errors import BackendNotConfigured, EditCancelled, GeneratorOutOfMemory, InvalidConfig
from f2f.protocols import CancelToken, LoadedVideoGenerator, Progress, VideoGenerator

pytestmark = pytest.mark.models

WIDTH, HEIGHT = 96, 64
CAPTION = "The dog slowly sits down on the grass."
BATCH_TOLERANCE = 1  # uint8 levels: a seed's frames in a batch vs alone (float rounding of batched kernels)


def settings(num_frames: int = 9, steps: int = 2, **extra: int) -> VideoConfig:
    """The tiny canvas, `num_frames` frames, `steps` denoising steps, guidance on (6.0)."""
    return VideoConfig(
        width=WIDTH, height=HEIGHT, num_frames=num_frames, num_inference_steps=steps, guidance_scale=6.0, fps=8, **extra
    )


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cogvideox(tmp_path_factory.mktemp("ckpt") / "tiny-cogvideox-i2v", seed=0, height=HEIGHT, width=WIDTH)


@pytest.fixture(scope="module")
def generator(tiny_dir: Path) -> Iterator[DiffusersVideoGenerator]:
    """One seed per batch: the reference path."""
    gen = DiffusersVideoGenerator(tiny_dir, device="cpu")
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def batched(tiny_dir: Path) -> Iterator[DiffusersVideoGenerator]:
    """Two seeds per batch: three seeds run as batches [a, b] and [c]."""
    gen = DiffusersVideoGenerator(tiny_dir, device="cpu", max_batch_seeds=2)
    yield gen
    gen.close()


@pytest.fixture
def canvas() -> Image.Image:
    """A 96x64 RGB canvas with three coloured regions."""
    image = Image.new("RGB", (WIDTH, HEIGHT), (200, 30, 30))
    image.paste((30, 200, 30), (48, 0, 96, 32))
    image.paste((230, 230, 230), (0, 32, 48, 64))
    return image


def pixels(clip: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(frame, dtype=np.int16) for frame in clip])  # [F, H, W, 3]


# --- make_tiny_cogvideox ---------------------------------------------------------------------------


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_tiny_checkpoint_is_deterministic_and_leaves_the_global_rng(tiny_dir: Path, tmp_path: Path) -> None:
    state = torch.get_rng_state()
    again = _digest(make_tiny_cogvideox(tmp_path / "again", seed=0, height=HEIGHT, width=WIDTH))
    other = _digest(make_tiny_cogvideox(tmp_path / "other", seed=1, height=HEIGHT, width=WIDTH))
    assert torch.equal(torch.get_rng_state(), state)
    assert again == _digest(tiny_dir)
    weights = [name for name in again if name.endswith(".safetensors")]
    assert len(weights) == 3 and all(again[name] != other[name] for name in weights)


def test_tiny_checkpoint_has_the_i2v_layout(tiny_dir: Path) -> None:
    index = json.loads((tiny_dir / "model_index.json").read_text())
    transformer = json.loads((tiny_dir / "transformer/config.json").read_text())
    vae = json.loads((tiny_dir / "vae/config.json").read_text())
    scheduler = json.loads((tiny_dir / "scheduler/scheduler_config.json").read_text())
    assert index["_class_name"] == "CogVideoXImageToVideoPipeline"
    assert transformer["in_channels"] == 2 * vae["latent_channels"] == 2 * transformer["out_channels"]
    assert transformer["use_rotary_positional_embeddings"] and transformer["use_learned_positional_embeddings"]
    assert (transformer["sample_width"], transformer["sample_height"]) == (WIDTH // 8, HEIGHT // 8)
    assert scheduler["_class_name"] == "CogVideoXDDIMScheduler" and scheduler["prediction_type"] == "v_prediction"
    assert sum(p.stat().st_size for p in tiny_dir.rglob("*") if p.is_file()) < 1_000_000


# --- generate ---------------------------------------------------------------------------------------


def test_is_a_video_generator(generator: DiffusersVideoGenerator) -> None:
    assert isinstance(generator, VideoGenerator) and isinstance(generator, LoadedVideoGenerator)
    assert generator.family.name == "cogvideox" and generator.health() is None
    assert generator.spec.canvas_size == (WIDTH, HEIGHT)
    assert generator.spec.frame_step == 8


@pytest.mark.parametrize("num_frames", [9, 17])
def test_exact_frame_count_at_the_canvas_size(generator: DiffusersVideoGenerator, canvas: Image.Image, num_frames: int) -> None:
    clips = asyncio.run(generator.generate(canvas, CAPTION, [0], settings(num_frames)))
    assert len(clips) == 1 and len(clips[0]) == num_frames
    assert all(frame.size == (WIDTH, HEIGHT) and frame.mode == "RGB" for frame in clips[0])


def test_same_seed_same_frames_other_seed_other_frames(generator: DiffusersVideoGenerator, canvas: Image.Image) -> None:
    first = asyncio.run(generator.generate(canvas, CAPTION, [5, 6], settings()))
    again = asyncio.run(generator.generate(canvas, CAPTION, [5], settings()))
    assert [f.tobytes() for f in again[0]] == [f.tobytes() for f in first[0]]
    assert np.abs(pixels(first[0]) - pixels(first[1])).mean() > 1.0


def test_a_seed_gives_the_same_frames_in_a_batch_as_alone(
    generator: DiffusersVideoGenerator, batched: DiffusersVideoGenerator, canvas: Image.Image
) -> None:
    seeds = [11, 12, 13]  # batched: [11, 12] then [13]
    alone = asyncio.run(generator.generate(canvas, CAPTION, seeds, settings()))
    together = asyncio.run(batched.generate(canvas, CAPTION, seeds, settings()))
    for solo, in_batch in zip(alone, together, strict=True):
        assert np.abs(pixels(solo) - pixels(in_batch)).max() <= BATCH_TOLERANCE


def test_memory_switches_keep_the_clips(tiny_dir: Path, batched: DiffusersVideoGenerator, canvas: Image.Image) -> None:
    """VAE slicing matches the plain path; tiling (seams on purpose) keeps counts and sizes."""
    plain = asyncio.run(batched.generate(canvas, CAPTION, [1, 2], settings()))
    for switch in ("vae_slicing", "vae_tiling"):
        gen = DiffusersVideoGenerator(tiny_dir, device="cpu", max_batch_seeds=2, **{switch: True})
        clips = asyncio.run(gen.generate(canvas, CAPTION, [1, 2], settings()))
        gen.close()
        assert [len(c) for c in clips] == [9, 9] and {f.size for c in clips for f in c} == {(WIDTH, HEIGHT)}
        if switch == "vae_slicing":
            assert all(np.abs(pixels(a) - pixels(b)).max() <= BATCH_TOLERANCE for a, b in zip(plain, clips, strict=True))


def test_vae_tiling_auto_tiles_only_when_untiled_runs_out_of_memory(
    tiny_dir: Path, canvas: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    def clips(vae_tiling: object, untiled_fits: bool = True) -> tuple[np.ndarray, list[tuple[bool, float]]]:
        """The frames of one video, and each VAE decode: (tiled?, the latents' sum)."""
        gen = DiffusersVideoGenerator(tiny_dir, device="cpu", vae_tiling=vae_tiling)
        vae, decode_once, calls = gen._pipe.vae, gen._pipe.vae._decode, []

        def decode(z: torch.Tensor, *args: object, **kwargs: object) -> object:
            calls.append((vae.use_tiling, float(z.sum())))
            if not vae.use_tiling and not untiled_fits:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 30.00 GiB")
            return decode_once(z, *args, **kwargs)

        monkeypatch.setattr(vae, "_decode", decode)
        out = asyncio.run(gen.generate(canvas, CAPTION, [4], settings()))
        assert vae.use_tiling == (vae_tiling is True)  # auto goes back to untiled for the next video
        gen.close()
        return pixels(out[0]), calls

    plain, plain_calls = clips(False)
    auto, auto_calls = clips("auto")
    assert auto_calls == plain_calls and [tiled for tiled, _ in plain_calls] == [False] and np.array_equal(plain, auto)
    rescued, rescued_calls = clips("auto", untiled_fits=False)
    latents = plain_calls[0][1]
    assert rescued_calls == [(False, latents), (True, latents)]  # the same latents: untiled, out of memory, then tiled
    assert rescued.shape == plain.shape and not np.array_equal(rescued, plain)  # tiles: seams, on purpose


def test_the_input_image_reaches_the_model(generator: DiffusersVideoGenerator, canvas: Image.Image) -> None:
    """Another first frame gives another clip (same seed and caption).

    Random weights do NOT make the first frame resemble the input (measured:
    it is no closer to the input than the clip of the inverted input is, nor
    than random noise), so only the dependence is asserted.
    """
    inverted = Image.fromarray(255 - np.asarray(canvas))
    a = asyncio.run(generator.generate(canvas, CAPTION, [3], settings()))[0]
    b = asyncio.run(generator.generate(inverted, CAPTION, [3], settings()))[0]
    assert np.abs(pixels(a) - pixels(b)).mean() > 0.5


def test_progress_counts_steps_across_batches_in_order(batched: DiffusersVideoGenerator, canvas: Image.Image) -> None:
    events: list[Progress] = []
    clips = asyncio.run(batched.generate(canvas, CAPTION, [1, 2, 3], settings(steps=3), progress=events.append))
    assert len(clips) == 3
    assert events == [Progress("generate", step, 6) for step in range(1, 7)]  # 3 steps x 2 batches


def test_cancel_mid_run_stops_and_the_instance_stays_usable(generator: DiffusersVideoGenerator, canvas: Image.Image) -> None:
    token = CancelToken()
    events: list[Progress] = []

    def cancel_at_first_step(event: Progress) -> None:
        events.append(event)
        token.cancel()

    with pytest.raises(EditCancelled):
        asyncio.run(generator.generate(canvas, CAPTION, [0], settings(steps=50), progress=cancel_at_first_step, cancel=token))
    assert 1 <= len(events) < 50
    clips = asyncio.run(generator.generate(canvas, CAPTION, [0], settings()))
    assert len(clips[0]) == 9


def test_out_of_memory_mid_video_is_a_typed_error_and_the_instance_stays_usable(
    generator: DiffusersVideoGenerator, canvas: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    transformer = generator._pipe.transformer
    forward, calls = transformer.forward, []

    def runs_out_at_the_second_step(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")  # as the CUDA allocator says
        return forward(*args, **kwargs)

    monkeypatch.setattr(transformer, "forward", runs_out_at_the_second_step)
    with pytest.raises(GeneratorOutOfMemory) as raised:
        asyncio.run(generator.generate(canvas, CAPTION, [0, 1], settings(num_frames=17, steps=3)))
    assert raised.value.code == "out_of_memory"
    assert "1 seed(s) of 17 frames at 96x64" in str(raised.value) and "cpu memory" in str(raised.value)
    monkeypatch.undo()
    clips = asyncio.run(generator.generate(canvas, CAPTION, [0], settings()))
    assert len(clips[0]) == 9


def test_a_cancelled_token_stops_before_any_step(generator: DiffusersVideoGenerator, canvas: Image.Image) -> None:
    token, events = CancelToken(), []
    token.cancel()
    with pytest.raises(EditCancelled):
        asyncio.run(generator.generate(canvas, CAPTION, [0], settings(), progress=events.append, cancel=token))
    assert events == []


def test_cancelling_the_task_stops_the_worker(generator: DiffusersVideoGenerator, canvas: Image.Image) -> None:
    async def cancel_after_first_step() -> list[Progress]:
        events: list[Progress] = []
        started = asyncio.Event()
        task = asyncio.create_task(
            generator.generate(canvas, CAPTION, [0], settings(steps=50), progress=lambda e: (events.append(e), started.set()))
        )
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await generator.generate(canvas, CAPTION, [0], settings())  # waits for the stopped worker's lock
        return events

    events = asyncio.run(cancel_after_first_step())
    assert 1 <= len(events) < 50


# --- rules and errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"width": 112}, "video.width", "generates only 96x64"),
        ({"height": 80}, "video.height", "generates only 96x64"),
        ({"num_frames": 13, "frame_step": 4}, "video.num_frames", "8k+1 frames (9, 17, 25"),
        ({"num_frames": 17, "frame_step": 4}, "video.frame_step", "multiple of 8"),
    ],
)
def test_settings_the_checkpoint_cannot_make_are_rejected(
    generator: DiffusersVideoGenerator, canvas: Image.Image, overrides: dict[str, int], field: str, words: str
) -> None:
    bad = VideoConfig(**{**settings().model_dump(), **overrides})
    with pytest.raises(InvalidConfig) as info:
        generator.check_settings(bad)
    assert info.value.field == field and words in str(info.value)


def test_a_pipeline_that_returns_the_wrong_frames_is_an_error(
    generator: DiffusersVideoGenerator, canvas: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    class EightFrames:  # what a 4k+1 count would give back: 4 * latent frames
        def __call__(self, **kwargs: object) -> SimpleNamespace:
            return SimpleNamespace(frames=[[canvas.copy() for _ in range(8)]])

    monkeypatch.setattr(generator, "_pipe", EightFrames())
    with pytest.raises(RuntimeError, match="returned 8 frames"):
        asyncio.run(generator.generate(canvas, CAPTION, [0], settings()))


def _broken_copy(tiny_dir: Path, tmp_path: Path, name: str, key: str, value: object) -> Path:
    """A copy of the tiny checkpoint with one config value changed."""
    folder = shutil.copytree(tiny_dir, tmp_path / "broken")
    data = json.loads((folder / name).read_text())
    data[key] = value
    (folder / name).write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("missing", "no such folder"),
        ("no_index", "model_index.json is missing"),
        ("text_to_video", "names 'CogVideoXPipeline'"),
        ("not_i2v", "not the image-to-video layout"),
    ],
)
def test_bad_checkpoint_folders_name_the_model_path(tiny_dir: Path, tmp_path: Path, case: str, words: str) -> None:
    folder = {
        "missing": lambda: tmp_path / "nowhere",
        "no_index": lambda: tmp_path,
        "text_to_video": lambda: _broken_copy(tiny_dir, tmp_path, "model_index.json", "_class_name", "CogVideoXPipeline"),
        "not_i2v": lambda: _broken_copy(tiny_dir, tmp_path, "transformer/config.json", "in_channels", 4),
    }[case]()
    with pytest.raises(InvalidConfig) as info:
        DiffusersVideoGenerator(folder, device="cpu")
    assert info.value.field == "generator.model_path" and words in str(info.value)


def test_what_a_family_does_not_support_is_refused_at_load(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from f2f.backends.video import cogvideox
    from f2f.backends.video.parallel import ParallelGroups
    from f2f.config import ParallelConfig, SpeedConfig

    monkeypatch.setattr(cogvideox, "FAMILY", dataclasses.replace(cogvideox.FAMILY, split=None, speed=frozenset({"attention"})))
    with pytest.raises(InvalidConfig) as info:
        DiffusersVideoGenerator(tiny_dir, device="cpu", speed=SpeedConfig(fuse_qkv=True))
    assert info.value.field == "generator.speed.fuse_qkv" and "cogvideox family does not support it" in str(info.value)
    groups = ParallelGroups(ParallelConfig(ulysses=2), rank=0, cfg_group=None, sp_group=None)
    with pytest.raises(InvalidConfig) as info:
        DiffusersVideoGenerator(tiny_dir, device="cpu", parallel=groups)
    assert info.value.field == "generator.parallel" and "cannot split" in str(info.value)


def test_from_config_needs_a_model_path(tiny_dir: Path) -> None:
    with pytest.raises(InvalidConfig) as info:
        DiffusersVideoGenerator.from_config(GeneratorConfig())
    assert info.value.field == "generator.model_path"
    gen = DiffusersVideoGenerator.from_config(GeneratorConfig(model_path=tiny_dir, max_batch_seeds=3))
    assert gen.max_batch_seeds == 3 and gen.device.type == "cpu" and gen.dtype == torch.float32
    gen.close()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(gen.generate(Image.new("RGB", (WIDTH, HEIGHT)), CAPTION, [0], settings()))


def test_missing_diffusers_names_the_extra(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(BackendNotConfigured, match=r"pip install 'f2f\[video\]'"):
        DiffusersVideoGenerator(tiny_dir)


# --- the whole edit over the real backend ------------------------------------------------------------


def test_edit_runs_end_to_end_on_the_tiny_checkpoint(
    generator: DiffusersVideoGenerator, small_config: F2FConfig, square_image: Image.Image
) -> None:
    from fakes import ScriptedVLM

    from f2f.pipeline import edit

    result = asyncio.run(edit(square_image, "make it blue", vlm=ScriptedVLM(), generator=generator, config=small_config))
    assert result.outcome.status == "edited" and result.image.size == square_image.size


# --- write_mp4 --------------------------------------------------------------------------------------


def _read_back(path: Path) -> tuple[tuple[int, int], int]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    count = sum(1 for _ in reader)
    return tuple(meta["size"]), count


@pytest.mark.parametrize("size", [(WIDTH, HEIGHT), (33, 17)])
def test_write_mp4_round_trips_frames_and_size(tmp_path: Path, size: tuple[int, int]) -> None:
    pytest.importorskip("imageio_ffmpeg")
    from f2f.video import write_mp4

    frames = [Image.new("RGB", size, (20 * i, 100, 200 - 20 * i)) for i in range(9)]
    before = [f.tobytes() for f in frames]
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    assert write_mp4(frames, target, fps=8) == target
    even = (size[0] + size[0] % 2, size[1] + size[1] % 2)  # yuv420p: odd sizes get one black column/row
    assert _read_back(target) == (even, 9)
    assert [f.tobytes() for f in frames] == before and all(f.size == size for f in frames)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary file left


def test_write_mp4_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from f2f.video import write_mp4

    with pytest.raises(ValueError, match="at least one frame"):
        write_mp4([], tmp_path / "a.mp4", fps=8)
    with pytest.raises(ValueError, match="one size"):
        write_mp4([Image.new("RGB", (16, 16)), Image.new("RGB", (32, 16))], tmp_path / "a.mp4", fps=8)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(BackendNotConfigured, match=r"pip install 'f2f\[video\]'"):
        write_mp4([Image.new("RGB", (16, 16))], tmp_path / "a.mp4", fps=8)
    assert list(tmp_path.iterdir()) == []
