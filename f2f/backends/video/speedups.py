"""Generator speed-ups: the one place the `generator.speed` switches are applied to a video pipeline.

Each family declares the switches it supports (`Family.speed`); the others
are refused before load. A two-expert model (Wan2.2-A14B) gets every switch
on both transformers.

Each switch is checked where it cannot work (a CUDA-only kernel on the CPU,
fp8 without torchao or an sm 8.9+ GPU) and refused with InvalidConfig naming
`generator.speed.<switch>`, never dropped silently. All off is the plain
diffusers path, which `bench/generate.py` times beside them.

| switch | what it does | result vs plain |
|---|---|---|
| `fuse_qkv` | `transformer.fuse_qkv_projections()`: one matmul for q, k, v | equal to float rounding |
| `attention` | `sdpa_kernel` around the call: flash, cuDNN, memory-efficient or math | equal to float rounding |
| `compile: regional` | `torch.compile` of each transformer block (the 42 blocks share one graph) | equal to float rounding |
| `quantize: fp8` | torchao float8 dynamic activations and weights in the transformer's linear layers | close (fp8 rounding) |
| `cache` | diffusers' FirstBlockCache or PyramidAttentionBroadcast: work reused across steps | approximate (opt-in) |

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
_KERNELS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH"}


def check_speed(speed: SpeedConfig, device: Any) -> None:
    """InvalidConfig naming the switch that cannot work on `device` (a torch.device)."""
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
        if speed.cache != "off":
            transformer.enable_cache(_cache_config(pipe, speed))
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


def _cache_config(pipe: Any, speed: SpeedConfig) -> Any:
    from diffusers import FirstBlockCacheConfig, PyramidAttentionBroadcastConfig

    if speed.cache == "first_block":
        return FirstBlockCacheConfig(threshold=speed.cache_threshold)
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
