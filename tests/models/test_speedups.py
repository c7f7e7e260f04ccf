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


# --- the step caches on every family that takes them: fewer blocks run; a setting that skips nothing is plain --------

CACHES = {  # mode: (a setting that skips nothing, one that skips)
    "first_block": (
        SpeedConfig(cache="first_block", cache_threshold=1e-9),
        SpeedConfig(cache="first_block", cache_threshold=1.0),
    ),
    "mag": (  # every ratio 0.9: each step adds an error of 0.1; every ratio 1.0: none
        SpeedConfig(cache="mag", cache_ratios=(0.9,), cache_threshold=1e-9),
        SpeedConfig(cache="mag", cache_ratios=(1.0,), cache_threshold=0.05),
    ),
    "taylorseer": (SpeedConfig(cache="taylorseer", cache_interval=1), SpeedConfig(cache="taylorseer", cache_interval=2)),
}
CACHE_FAMILIES = {"cogvideox": (96, 64), "wan2.1": (80, 48), "ltx": (96, 64)}


@pytest.fixture(scope="module")
def cache_checkpoints(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> dict[str, Path]:
    from f2f.backends.tiny.tiny_ltx import make_tiny_ltx
    from f2f.backends.tiny.tiny_wan import make_tiny_wan

    root = tmp_path_factory.mktemp("caches")
    return {"cogvideox": checkpoint, "wan2.1": make_tiny_wan(root / "wan2.1", seed=0), "ltx": make_tiny_ltx(root / "ltx", seed=0)}


def block_run(folder: Path, size: tuple[int, int], speed: SpeedConfig, steps: int = 6) -> tuple[np.ndarray, int]:
    """The clip and how many blocks really computed: their feed-forward ran (a skipped block never reaches it)."""
    from f2f.backends.video.speedups import repeated_blocks, transformers_of

    generator = DiffusersVideoGenerator(folder, device="cpu", speed=speed)
    calls: list[int] = []
    for transformer in transformers_of(generator._pipe):
        for block in repeated_blocks(transformer):
            (getattr(block, "ff", None) or block.ffn).register_forward_pre_hook(lambda *_: calls.append(1))
    width, height = size
    image = Image.new("RGB", size, (180, 60, 30))
    image.paste((20, 90, 200), (0, 0, width // 2, height // 2))
    settings = VideoConfig(width=width, height=height, num_frames=9, num_inference_steps=steps, guidance_scale=3.0, fps=8)
    clip = asyncio.run(generator.generate(image, CAPTION, [5], settings))[0]
    generator.close()
    return np.stack([np.asarray(frame) for frame in clip]), len(calls)


@pytest.fixture(scope="module")
def plain_runs(cache_checkpoints: dict[str, Path]) -> dict[str, tuple[np.ndarray, int]]:
    return {name: block_run(cache_checkpoints[name], size, SpeedConfig()) for name, size in CACHE_FAMILIES.items()}


@pytest.mark.parametrize(
    ("name", "mode"), [(name, mode) for name in CACHE_FAMILIES for mode in CACHES if name == "cogvideox" or mode != "first_block"]
)
def test_each_cache_runs_fewer_blocks_and_skipping_nothing_gives_the_plain_frames(
    cache_checkpoints: dict[str, Path], plain_runs: dict[str, tuple[np.ndarray, int]], name: str, mode: str
) -> None:
    plain, plain_calls = plain_runs[name]
    strict, skips = CACHES[mode]
    frames_, calls = block_run(cache_checkpoints[name], CACHE_FAMILIES[name], strict)
    assert calls == plain_calls and np.array_equal(frames_, plain)  # bit for bit
    frames_, calls = block_run(cache_checkpoints[name], CACHE_FAMILIES[name], skips)
    assert calls < plain_calls and frames_.shape == plain.shape


def test_mag_cache_follows_each_requests_step_count(checkpoint: Path, canvas: Image.Image) -> None:
    generator = DiffusersVideoGenerator(checkpoint, device="cpu", speed=CACHES["mag"][1])
    transformer = generator._pipe.transformer
    for steps in (4, 6, 4):
        settings = VideoConfig(width=WIDTH, height=HEIGHT, num_frames=9, num_inference_steps=steps, guidance_scale=6.0, fps=8)
        asyncio.run(generator.generate(canvas, CAPTION, [5], settings))
        assert transformer._cache_config.num_inference_steps == steps and len(transformer._cache_config.mag_ratios) == steps
    generator.close()


def test_a_cache_the_family_cannot_use_is_refused_before_its_weights_load(
    tmp_path: Path, cache_checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import diffusers

    from f2f.backends.tiny.tiny_chronoedit import make_tiny_chronoedit
    from f2f.backends.tiny.tiny_wan import make_tiny_wan

    chronoedit = make_tiny_chronoedit(tmp_path / "chronoedit", seed=0)
    two_experts = make_tiny_wan(tmp_path / "wan2.2", seed=0, variant="wan2.2")
    for pipeline in ("ChronoEditPipeline", "WanImageToVideoPipeline", "LTXImageToVideoPipeline"):
        monkeypatch.setattr(getattr(diffusers, pipeline), "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    modes = {"pyramid": SpeedConfig(cache="pyramid")} | {mode: skips for mode, (_, skips) in CACHES.items()}
    refusals = [(chronoedit, mode, "the chronoedit family does not support it") for mode in modes]
    for name in ("wan2.1", "ltx"):  # they take mag and taylorseer
        refusals += [(cache_checkpoints[name], mode, "does not support it") for mode in ("first_block", "pyramid")]
    refusals += [(two_experts, "mag", "two-expert checkpoint")]
    for folder, mode, words in refusals:
        with pytest.raises(InvalidConfig) as refused:
            DiffusersVideoGenerator(folder, device="cpu", speed=modes[mode])
        assert refused.value.field == "generator.speed.cache" and refused.value.value == mode, (folder.name, mode)
        assert words in str(refused.value)


def test_mag_cache_needs_its_ratios_naming_the_field() -> None:
    from f2f.config import load_config

    with pytest.raises(InvalidConfig) as refused:
        load_config(overrides={"generator": {"speed": {"cache": "mag"}}})
    assert refused.value.field == "generator.speed.cache_ratios" and "magnitude ratios" in str(refused.value)
    with pytest.raises(InvalidConfig) as refused:
        load_config(overrides={"generator": {"speed": {"cache": "taylorseer", "cache_ratios": [1.0]}}})
    assert refused.value.field == "generator.speed.cache_ratios" and "only cache mag" in str(refused.value)
