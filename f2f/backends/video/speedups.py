"""Generator speed-ups: the one place the `generator.speed` switches are applied to a video pipeline.

Each family declares the switches it supports (`Family.speed`: the switch
names and, for `cache`, each mode as `cache:<mode>`, `SWITCHES`); the others
are refused before load (`check_family_speed`), naming the field. A two-expert model
(Wan2.2-A14B) gets every switch on both transformers, except MagCache
(refused: each expert sees a part of the steps its ratios cover).

Each switch is checked where it cannot work (`check_speed`: a CUDA-only kernel on the CPU,
fp8 without torchao or an sm 8.9+ GPU) and refused with InvalidConfig naming
`generator.speed.<switch>`, never dropped silently. All off is the plain
diffusers path, which `bench/generate.py` times beside them.

| switch | what it does | result vs plain |
|---|---|---|
| `fuse_qkv` | `transformer.fuse_qkv_projections()`: one matmul for q, k, v | equal to float rounding |
| `attention` | `sdpa_kernel` around the call: flash, cuDNN, memory-efficient or math | equal to float rounding |
| `compile: regional` | `torch.compile` of each transformer block (the 42 blocks share one graph) | equal to float rounding |
| `quantize: fp8` | torchao float8 dynamic activations and weights in the transformer's linear layers | close (fp8 rounding) |
| `cache` | diffusers' FirstBlockCache, Pyramid Attention Broadcast, MagCache, TaylorSeer (below) | approximate (opt-in) |

The caches: `first_block` skips the other blocks while the first block's
output barely changes; `pyramid` reuses attention every other step in the
middle timesteps; `mag` skips whole steps while the checkpoint's magnitude
ratios (`cache_ratios`, measured once) say the blocks' residual barely
changes, and needs the step count, so it is (re-)enabled per call for the
call's `num_inference_steps` (`fit_cache`); `taylorseer` runs the blocks every
`cache_interval` steps and extrapolates the transformer's output in between
(diffusers' lite mode: the blocks are skipped, only the output is kept, so
the memory is one output per guidance half, not every block's features).

CFG batching needs no switch: the diffusers pipeline already runs the two
guidance halves as one batch of two.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from f2f.config import SpeedConfig
from f2f.errors import InvalidConfig

_FIELD = "generator.speed"
CACHES = ("first_block", "pyramid", "mag", "taylorseer")
SWITCHES = frozenset({"fuse_qkv", "attention", "compile", "quantize", *(f"cache:{mode}" for mode in CACHES)})
_KERNELS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH"}


def check_family_speed(speed: SpeedConfig, family: str, supported: frozenset[str], experts: int) -> None:
    """InvalidConfig naming the switch that the family (its `supported` SWITCHES, `experts` transformers) cannot run."""
    for switch in sorted(SWITCHES - supported):
        name, _, mode = switch.partition(":")
        value = getattr(speed, name)
        if value == mode or (not mode and value != SpeedConfig.model_fields[name].default):
            raise InvalidConfig(f"{_FIELD}.{name}", value, f"the {family} family does not support it")
    if speed.cache == "mag" and experts > 1:
        rule = "a two-expert checkpoint splits the steps between its experts, which MagCache's ratios cannot follow"
        raise InvalidConfig(f"{_FIELD}.cache", "mag", rule)


def check_speed(speed: SpeedConfig, device: Any) -> None:
    """InvalidConfig naming the switch that `device` (a torch.device) cannot run."""
    import torch

    cuda = device.type == "cuda"
    if speed.attention in ("cudnn", "efficient") and not cuda:
        raise InvalidConfig(f"{_FIELD}.attention", speed.attention, "needs a CUDA device (on the CPU: auto, flash or math)")
    if speed.quantize == "fp8":
        if not cuda or torch.cuda.get_device_capability(device) < (8, 9):
            raise InvalidConfig(f"{_FIELD}.quantize", "fp8", "needs a CUDA GPU with fp8 matmuls (compute capability 8.9+)")
        try:
            import torchao  # noqa: F401
        except ImportError:
            raise InvalidConfig(f"{_FIELD}.quantize", "fp8", "needs torchao (pip install torchao)") from None


def apply_speedups(pipe: Any, speed: SpeedConfig) -> None:
    """Apply the switches to a loaded pipeline (already on its device), in the order that composes."""
    for transformer in transformers_of(pipe):
        if speed.fuse_qkv:
            transformer.fuse_qkv_projections()
        if speed.quantize == "fp8":
            from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_

            quantize_(transformer, Float8DynamicActivationFloat8WeightConfig())
        if speed.cache not in ("off", "mag"):  # mag needs the call's step count: fit_cache
            transformer.enable_cache(_cache_config(pipe, transformer, speed))
        if speed.compile == "regional":
            for block in repeated_blocks(transformer):
                block.compile(fullgraph=False, dynamic=False)


def transformers_of(pipe: Any) -> list[Any]:
    """The pipeline's denoising transformers: `transformer`, and `transformer_2` where a second expert is loaded."""
    return [t for t in (pipe.transformer, getattr(pipe, "transformer_2", None)) if t is not None]


def repeated_blocks(transformer: Any) -> list[Any]:
    """The transformer's repeated blocks, each compiled once and reused: the classes diffusers names in
    `_repeated_blocks` (Wan, LTX-Video), else its `transformer_blocks` (CogVideoX names none)."""
    names = set(getattr(transformer, "_repeated_blocks", None) or ())
    if names:
        return [module for module in transformer.modules() if type(module).__name__ in names]
    return list(transformer.transformer_blocks)


def fit_cache(pipe: Any, speed: SpeedConfig, steps: int) -> None:
    """Before a call of `steps` denoising steps: MagCache (re-)enabled for that count where it was not already."""
    if speed.cache != "mag":
        return
    for transformer in transformers_of(pipe):
        enabled = transformer._cache_config  # diffusers' CacheMixin keeps the enabled config
        if enabled is not None and enabled.num_inference_steps == steps:
            continue
        if enabled is not None:
            transformer.disable_cache()
        transformer.enable_cache(_cache_config(pipe, transformer, speed, steps))


def _cache_config(pipe: Any, transformer: Any, speed: SpeedConfig, steps: int = 0) -> Any:
    from diffusers import FirstBlockCacheConfig, MagCacheConfig, PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig

    if speed.cache == "first_block":
        return FirstBlockCacheConfig(threshold=speed.cache_threshold)
    if speed.cache == "mag":
        return MagCacheConfig(threshold=speed.cache_threshold, num_inference_steps=steps, mag_ratios=list(speed.cache_ratios))
    if speed.cache == "taylorseer":  # lite: diffusers' default modules are attention named `...attn`, none in these models
        dtype = transformer.dtype
        return TaylorSeerCacheConfig(cache_interval=speed.cache_interval, use_lite_mode=True, taylor_factors_dtype=dtype)
    # CogVideoX's joint attention counts as "spatial" to the hook; diffusers' documented CogVideoX settings
    return PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2,
        spatial_attention_timestep_skip_range=(100, 800),
        current_timestep_callback=lambda: pipe.current_timestep,
    )


@contextlib.contextmanager
def attention_kernel(speed: SpeedConfig) -> Iterator[None]:
    """The SDPA kernel choice, around one pipeline call (auto: PyTorch's own choice)."""
    if speed.attention == "auto":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(getattr(SDPBackend, _KERNELS[speed.attention])):
        yield
