"""Generator speed-ups (`generator.speed`) against the plain path, on the tiny checkpoint (CPU).

Exact switches must give the plain frames to float rounding: the frames
are uint8, so a rounding difference shows as at most one level on a few
pixels (stated tolerance: max 1/255, mean under 1e-3); the cache
modes are approximate and opt-in: they must do less work, and the threshold
that skips nothing must give the plain frames. CUDA-only switches must be
refused on the CPU, naming the switch.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from f2f.backends.tiny.tiny_cogvideox import make_tiny_cogvideox
from f2f.backends.video.i2v import DiffusersVideoGenerator
from f2f.config import SpeedConfig, VideoConfig
from f2f.errors import InvalidConfig

pytestmark = pytest.mark.models

WIDTH, HEIGHT = 96, 64
CAPTION = "The dog slowly sits down on the grass."
ONE_LEVEL = 1 / 255 + 1e-6  # max |difference| of frames in 0..1
MEAN_EXACT = 1e-3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cogvideox(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0, height=HEIGHT, width=WIDTH, layers=3)


@pytest.fixture(scope="module")
def canvas() -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), (180, 60, 30))
    image.paste((20, 90, 200), (0, 0, WIDTH // 2, HEIGHT // 2))
    return image


def frames(checkpoint: Path, canvas: Image.Image, speed: SpeedConfig, steps: int = 4) -> np.ndarray:
    generator = DiffusersVideoGenerator(checkpoint, device="cpu", speed=speed)
    try:
        settings = VideoConfig(width=WIDTH, height=HEIGHT, num_frames=9, num_inference_steps=steps, guidance_scale=6.0, fps=8)
        clip = asyncio.run(generator.generate(canvas, CAPTION, [5], settings))[0]
    finally:
        generator.close()
    return np.stack([np.asarray(frame, dtype=np.float32) / 255 for frame in clip])


def assert_exact(got: np.ndarray, plain: np.ndarray) -> None:
    difference = np.abs(got - plain)
    assert difference.max() <= ONE_LEVEL and difference.mean() < MEAN_EXACT, (difference.max(), difference.mean())


@pytest.fixture(scope="module")
def plain(checkpoint: Path, canvas: Image.Image) -> np.ndarray:
    return frames(checkpoint, canvas, SpeedConfig())


@pytest.mark.parametrize(
    "speed",
    [
        SpeedConfig(fuse_qkv=True),
        SpeedConfig(attention="math"),
        SpeedConfig(attention="flash"),
        SpeedConfig(compile="regional"),
        SpeedConfig(fuse_qkv=True, attention="math", compile="regional"),
    ],
    ids=["fuse_qkv", "math", "flash", "compile", "all-exact"],
)
def test_exact_switches_give_the_plain_frames(
    checkpoint: Path, canvas: Image.Image, plain: np.ndarray, speed: SpeedConfig
) -> None:
    assert_exact(frames(checkpoint, canvas, speed), plain)


def test_fused_projections_are_really_used(checkpoint: Path) -> None:
    generator = DiffusersVideoGenerator(checkpoint, device="cpu", speed=SpeedConfig(fuse_qkv=True))
    attention = generator._pipe.transformer.transformer_blocks[0].attn1
    assert attention.fused_projections and type(attention.processor).__name__ == "FusedCogVideoXAttnProcessor2_0"
    generator.close()


class BlockCalls:
    """Counts the transformer blocks that really computed: their feed-forward ran (a cache skips the whole block)."""

    def __init__(self, generator: DiffusersVideoGenerator) -> None:
        self.count = 0
        for block in generator._pipe.transformer.transformer_blocks:
            block.ff.register_forward_pre_hook(self._one)

    def _one(self, *_: object) -> None:
        self.count += 1


def cached_run(checkpoint: Path, canvas: Image.Image, speed: SpeedConfig, steps: int = 6) -> tuple[np.ndarray, int]:
    generator = DiffusersVideoGenerator(checkpoint, device="cpu", speed=speed)
    calls = BlockCalls(generator)
    settings = VideoConfig(width=WIDTH, height=HEIGHT, num_frames=9, num_inference_steps=steps, guidance_scale=6.0, fps=8)
    clip = asyncio.run(generator.generate(canvas, CAPTION, [5], settings))[0]
    generator.close()
    return np.stack([np.asarray(frame, dtype=np.float32) / 255 for frame in clip]), calls.count


def test_first_block_cache_skips_blocks_and_a_zero_threshold_skips_none(checkpoint: Path, canvas: Image.Image) -> None:
    exact, all_calls = cached_run(checkpoint, canvas, SpeedConfig())
    assert all_calls == 6 * 3  # steps x blocks (the guidance halves run as one batch)
    strict, strict_calls = cached_run(checkpoint, canvas, SpeedConfig(cache="first_block", cache_threshold=1e-9))
    assert strict_calls == all_calls
    assert_exact(strict, exact)
    loose, loose_calls = cached_run(checkpoint, canvas, SpeedConfig(cache="first_block", cache_threshold=1.0))
    assert loose_calls < all_calls  # fewer blocks run: the opt-in speed-up
    assert loose.shape == exact.shape


def test_cuda_only_switches_are_refused_on_the_cpu_naming_the_switch(checkpoint: Path) -> None:
    for speed, field in (
        (SpeedConfig(attention="efficient"), "generator.speed.attention"),
        (SpeedConfig(attention="cudnn"), "generator.speed.attention"),
        (SpeedConfig(quantize="fp8"), "generator.speed.quantize"),
    ):
        with pytest.raises(InvalidConfig) as refused:
            DiffusersVideoGenerator(checkpoint, device="cpu", speed=speed)
        assert refused.value.field == field and "CUDA" in str(refused.value)


def test_unknown_switch_values_are_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match="compile"):
        SpeedConfig(compile="everything")  # type: ignore[arg-type]


def test_pyramid_attention_broadcast_reuses_attention_in_the_middle_steps(checkpoint: Path, canvas: Image.Image) -> None:
    def attention_calls(speed: SpeedConfig) -> int:
        generator = DiffusersVideoGenerator(checkpoint, device="cpu", speed=speed)
        calls: list[int] = []
        for block in generator._pipe.transformer.transformer_blocks:  # the query projection runs only if attention does
            block.attn1.to_q.register_forward_pre_hook(lambda *_: calls.append(1))
        settings = VideoConfig(width=WIDTH, height=HEIGHT, num_frames=9, num_inference_steps=6, guidance_scale=6.0, fps=8)
        asyncio.run(generator.generate(canvas, CAPTION, [5], settings))
        generator.close()
        return len(calls)

    exact = attention_calls(SpeedConfig())
    assert exact == 6 * 3
    assert attention_calls(SpeedConfig(cache="pyramid")) < exact  # timesteps 100..800 reuse every other attention


# --- the other families: the same switches through the generic code (diffusers' repeated blocks, both experts) ----


@pytest.fixture(scope="module")
def family_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, tuple[int, int]]]:
    from f2f.backends.tiny.tiny_ltx import make_tiny_ltx
    from f2f.backends.tiny.tiny_wan import make_tiny_wan

    root = tmp_path_factory.mktemp("families")
    return {
        "wan2.2": (make_tiny_wan(root / "wan2.2", seed=0, variant="wan2.2"), (80, 48)),  # two experts
        "ltx": (make_tiny_ltx(root / "ltx", seed=0), (96, 64)),
    }


@pytest.mark.parametrize("name", ["wan2.2", "ltx"])
def test_fused_and_compiled_blocks_give_the_plain_frames_on_every_family(
    family_checkpoints: dict[str, tuple[Path, tuple[int, int]]], name: str
) -> None:
    folder, (width, height) = family_checkpoints[name]
    image = Image.new("RGB", (width, height), (180, 60, 30))
    settings = VideoConfig(width=width, height=height, num_frames=9, num_inference_steps=2, guidance_scale=3.0, fps=16)
    clips = {}
    for label, speed in (("plain", SpeedConfig()), ("fast", SpeedConfig(fuse_qkv=True, compile="regional"))):
        generator = DiffusersVideoGenerator(folder, device="cpu", speed=speed)
        if label == "fast":  # every transformer's repeated blocks are compiled: both experts of a two-expert model
            from f2f.backends.video.speedups import repeated_blocks, transformers_of

            experts = transformers_of(generator._pipe)
            assert len(experts) == (2 if name == "wan2.2" else 1)
            assert all(block._compiled_call_impl is not None for t in experts for block in repeated_blocks(t))
        clip = asyncio.run(generator.generate(image, CAPTION, [5], settings))[0]
        generator.close()
        clips[label] = np.stack([np.asarray(frame, dtype=np.float32) / 255 for frame in clip])
    assert_exact(clips["fast"], clips["plain"])
