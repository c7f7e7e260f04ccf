"""Time CogVideoX-5B-I2V video generation: the plain diffusers pipeline beside the generator's speed-ups.

    python bench/generate.py [--modes plain,compiled,...] [--steps 50] [--frames 49] [--json FILE] [--budget-s S]
    python bench/generate.py --tiny                      # CPU smoke check: the tiny architecture, seconds
    torchrun --nproc-per-node 2 bench/generate.py --parallel 2x1    # one video split over 2 GPUs (cfg x ulysses)

Full size (the default) builds the transformer, VAE and T5-XXL encoder of
CogVideoX-5B-I2V from their configs with random weights (no download: the
compute is the real model's, the pictures are noise) in bfloat16 on the GPU,
at the paper's settings (720x480, 49 frames, guidance 6).

In this order, each printed (and the JSON rewritten) as soon as it is measured,
so a run cut short still leaves every figure it got:

1. **Ceilings** of the card, the most any mode can reach: a bf16 8192^3
   matmul; the transformer's own feed-forward GEMM (both guidance halves'
   tokens x 3072 -> 12288) in bf16 and in fp8; attention at the transformer's
   shape (2 x 48 heads x 17,776 tokens x 64) with the flash, cuDNN and
   memory-efficient SDPA kernels.
2. **Modes**, in the order of what they are worth (`plain`, `compiled`,
   `cudnn_compiled`, `fp8`, then the caches), all on the same weights, inputs
   and seed: a two-step warm-up video (its time, which holds torch.compile's,
   is `first s`), then `--steps` timed steps. `plain` is the diffusers
   pipeline untouched; the others apply `generator.speed` switches with the
   generator's own code (`f2f.backends.video.speedups`). Per mode: the median
   seconds per step, the timed steps, the 50-step video estimated from them
   (text + 50 x s/step + VAE; a step costs the same at every timestep
   without a cache), peak GPU memory, the transformer's effective TFLOP/s
   (analytic FLOPs of a step over its median time), the speed-up over
   `plain` (of the same timed steps, as measured) and how far the final
   latents are from `plain`'s (max |difference| and relative L2). The VAE
   decode is timed once, on the first mode's latents.
3. **Caches** (`first_block`, `pyramid`) decide what to skip step by step, so
   a step has no one cost: they report the measured time of their steps only,
   no 50-step estimate, and are marked approximate (with random weights their
   skips are not the real model's either).

`--budget-s` stops adding modes once that many seconds have passed (the rest
are listed as skipped). With `torchrun`, every rank builds the same pipeline
and the transformer is split (`f2f.backends.video.parallel`); rank 0 alone runs the
text encoder (the embeddings are broadcast) and the VAE decode, and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from f2f.config import SpeedConfig

MODES: dict[str, SpeedConfig] = {
    "plain": SpeedConfig(),
    "fused": SpeedConfig(fuse_qkv=True),
    "cudnn": SpeedConfig(fuse_qkv=True, attention="cudnn"),
    "flash": SpeedConfig(fuse_qkv=True, attention="flash"),
    "compiled": SpeedConfig(fuse_qkv=True, compile="regional"),
    "cudnn_compiled": SpeedConfig(fuse_qkv=True, attention="cudnn", compile="regional"),
    "fp8": SpeedConfig(fuse_qkv=True, compile="regional", quantize="fp8"),
    "first_block": SpeedConfig(fuse_qkv=True, cache="first_block", cache_threshold=0.05),
    "pyramid": SpeedConfig(fuse_qkv=True, cache="pyramid"),
}
GPU_MODES = "plain,compiled,cudnn_compiled,fp8,first_block,pyramid"
CPU_MODES = "plain,fused,compiled,first_block,pyramid"
TEXT_TOKENS = 226
PAPER_STEPS = 50


@dataclass(frozen=True)
class Size:
    """One architecture and the video it makes."""

    name: str
    transformer: dict[str, Any]
    vae: dict[str, Any]
    t5: dict[str, Any]
    width: int
    height: int


FULL = Size(
    name="CogVideoX-5B-I2V",
    transformer={  # the checkpoint's transformer/config.json
        "num_attention_heads": 48,
        "attention_head_dim": 64,
        "in_channels": 32,
        "out_channels": 16,
        "time_embed_dim": 512,
        "text_embed_dim": 4096,
        "num_layers": 42,
        "sample_width": 90,
        "sample_height": 60,
        "sample_frames": 49,
        "patch_size": 2,
        "temporal_compression_ratio": 4,
        "max_text_seq_length": TEXT_TOKENS,
        "spatial_interpolation_scale": 1.875,
        "temporal_interpolation_scale": 1.0,
        "use_rotary_positional_embeddings": True,
        "use_learned_positional_embeddings": True,
    },
    vae={"latent_channels": 16, "scaling_factor": 0.7, "sample_height": 480, "sample_width": 720},  # else diffusers' defaults
    t5={  # google/t5-v1_1-xxl, the encoder only
        "vocab_size": 32128,
        "d_model": 4096,
        "d_kv": 64,
        "d_ff": 10240,
        "num_layers": 24,
        "num_heads": 64,
        "feed_forward_proj": "gated-gelu",
    },
    width=720,
    height=480,
)
TINY = Size(
    name="tiny (CPU smoke check)",
    transformer={
        **FULL.transformer,
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": 8,
        "out_channels": 4,
        "time_embed_dim": 16,
        "text_embed_dim": 32,
        "num_layers": 2,
        "sample_width": 12,
        "sample_height": 8,
    },
    vae={
        "latent_channels": 4,
        "scaling_factor": 0.7,
        "block_out_channels": (8, 8, 8, 8),
        "layers_per_block": 1,
        "norm_num_groups": 2,
        "sample_height": 96,
        "sample_width": 160,
    },
    t5={
        "vocab_size": 256,
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 1,
        "num_heads": 4,
        "feed_forward_proj": "gated-gelu",
    },
    width=96,
    height=64,
)


@dataclass
class Row:
    mode: str
    step_s: float
    denoise_s: float
    steps: int
    vae_s: float
    text_s: float
    paper_s: float | None  # the 50-step video, estimated; None for a cache (its steps differ in cost)
    first_s: float
    peak_gib: float | None
    tflops: float
    speedup: float | None = None
    max_abs_diff: float | None = None
    rel_l2: float | None = None
    approximate: bool = False


@dataclass
class Results:
    """Everything one run measured; rewritten to `path` after each figure."""

    path: Path | None
    setup: dict[str, Any]
    machine: dict[str, Any]
    ceilings: list[dict[str, Any]] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def save(self) -> None:
        if self.path is None:
            return
        data = {**asdict(self), "rows": [asdict(row) for row in self.rows]}
        del data["path"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1) + "\n")
        temporary.replace(self.path)  # a run killed mid-write leaves the last whole file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny architecture on the CPU (a smoke check)")
    parser.add_argument("--modes", help=f"comma-separated, of {', '.join(MODES)} (default: {GPU_MODES}; --tiny: {CPU_MODES})")
    parser.add_argument("--steps", type=int, help="timed denoising steps per mode (default 50; --tiny 3)")
    parser.add_argument("--frames", type=int, help="frames of the video, 8k+1 (default 49; --tiny 9)")
    parser.add_argument("--guidance", type=float, default=6.0)
    parser.add_argument("--parallel", default="1x1", help="cfg x ulysses, under torchrun (e.g. 2x1, 1x2, 2x2)")
    parser.add_argument("--json", type=Path, help="write the results to this file (rewritten after each figure)")
    parser.add_argument("--budget-s", type=float, help="start no further mode once this many seconds have passed")
    parser.add_argument("--no-ceilings", action="store_true", help="skip the matmul, GEMM and attention ceilings")
    args = parser.parse_args(argv)
    started = time.monotonic()
    size = TINY if args.tiny else FULL
    steps = args.steps or (3 if args.tiny else 50)
    args.frames = args.frames or (9 if args.tiny else 49)
    modes = (args.modes or (CPU_MODES if args.tiny else GPU_MODES)).split(",")
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)} (known: {', '.join(MODES)})")
    if (args.frames - 1) % 8:
        parser.error(f"--frames: CogVideoX makes 8k+1 frames (got {args.frames})")

    import torch

    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if not args.tiny and device.type != "cuda":
        parser.error("the full-size benchmark needs a CUDA GPU; use --tiny on the CPU")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    groups = _parallel_groups(args.parallel, device)
    rank0 = groups is None or groups.rank == 0
    say = print_now if rank0 else lambda *_: None
    setup = {
        "model": size.name,
        "width": size.width,
        "height": size.height,
        "frames": args.frames,
        "timed_steps": steps,
        "guidance": args.guidance,
        "dtype": str(dtype).removeprefix("torch."),
        "parallel": args.parallel,
        "step_flops": step_flops(size, args.frames),
    }
    results = Results(args.json if rank0 else None, setup, machine(device))
    results.save()  # the machine first: a run that dies at once still says where it ran
    say(
        f"# {size.name}: {size.width}x{size.height}, {args.frames} frames, {steps} timed steps, guidance {args.guidance:g}, "
        f"{setup['dtype']}, parallel {args.parallel}"
    )
    say("# " + ", ".join(f"{k} {v}" for k, v in results.machine.items()))
    # 1. Ceilings
    if not args.no_ceilings:
        say("| ceiling | shape | ms | TFLOP/s |")
        say("|---|---|---|---|")
        for ceiling in ceilings(size, args.frames, device, dtype):
            results.ceilings.append(ceiling)
            results.save()
            cells = [f"{ceiling['ms']:.3f}", f"{ceiling['tflops']:.3g}"] if "ms" in ceiling else [ceiling["skipped"], "-"]
            say(f"| {ceiling['name']} | {ceiling['shape']} | " + " | ".join(cells) + " |")
    # 2. and 3. The modes, each row as it comes
    bench = Bench(size, device, dtype, steps, args.frames, args.guidance, groups)
    say("| " + " | ".join(HEADER) + " |")
    say("|" + "---|" * len(HEADER))
    reference: Any = None
    for mode in modes:
        if args.budget_s is not None and time.monotonic() - started > args.budget_s:
            results.skipped[mode] = f"the {args.budget_s:g} s budget was spent"
            continue
        try:
            row, latents = bench.run(mode, MODES[mode])
        except Exception as exc:  # a mode this card cannot run (no torchao, no cuDNN attention): say so, go on
            results.skipped[mode] = f"{type(exc).__name__}: {str(exc)[:300]}"
            say(f"| {mode} | skipped: {results.skipped[mode][:120]} |")
            results.save()
            continue
        if reference is None and mode == "plain":
            reference = latents
        elif reference is not None:
            diff = (latents.float() - reference.float()).flatten()
            row.max_abs_diff = diff.abs().max().item()
            row.rel_l2 = (diff.norm() / reference.float().norm()).item()
        plain = next((r for r in results.rows if r.mode == "plain"), row if mode == "plain" else None)
        row.speedup = plain.denoise_s / row.denoise_s if plain else None
        results.rows.append(row)
        results.save()
        say(table_row(row, results.ceilings))
    results.save()
    for mode, why in results.skipped.items():
        say(f"# {mode}: skipped ({why})")
    if groups is not None:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def print_now(*parts: Any) -> None:
    print(*parts, flush=True)


class Bench:
    """Builds the pipeline once per mode (same seed, same weights) and times one video."""

    def __init__(self, size: Size, device: Any, dtype: Any, steps: int, frames: int, guidance: float, groups: Any) -> None:
        self.size, self.device, self.dtype, self.steps, self.frames, self.guidance = size, device, dtype, steps, frames, guidance
        self.groups = groups
        self.rank0 = groups is None or groups.rank == 0
        from f2f.backends.video.i2v import tile_when_out_of_memory

        self.vae = build_vae(size, device, dtype)
        tile_when_out_of_memory(self.vae)  # as `generator.vae_tiling: auto` (a warning says when it tiles)
        self.embeds, self.text_s = self._encode_text()
        self.vae_s: float | None = None  # decoded once, on the first mode's latents
        from PIL import Image

        self.image = Image.new("RGB", (size.width, size.height), (120, 80, 40))

    def _encode_text(self) -> tuple[tuple[Any, Any], float]:
        """The prompt and negative prompt embeddings: on rank 0 (T5-XXL), broadcast to the other ranks."""
        hidden, seconds = None, 0.0
        if self.rank0:
            t5 = build_t5(self.size, self.device, self.dtype)
            hidden, seconds = encode_timed(t5, self.size, TEXT_TOKENS, self.device)
            del t5
        if self.groups is not None:
            from f2f.backends.video.parallel import broadcast_from_rank_0

            hidden = broadcast_from_rank_0(hidden, self.device)
        return (hidden[:1], hidden[1:]), seconds

    def run(self, mode: str, speed: SpeedConfig) -> tuple[Row, Any]:
        from diffusers import CogVideoXDDIMScheduler, CogVideoXImageToVideoPipeline

        from f2f.backends.tiny.tiny_cogvideox import SCHEDULER_CONFIG
        from f2f.backends.video.i2v import release_memory
        from f2f.backends.video.speedups import apply_speedups, attention_kernel, check_speed

        check_speed(speed, self.device)
        transformer = build_transformer(self.size, self.device, self.dtype)
        pipe = CogVideoXImageToVideoPipeline(
            tokenizer=None,
            text_encoder=None,
            vae=self.vae,
            transformer=transformer,
            scheduler=CogVideoXDDIMScheduler(**SCHEDULER_CONFIG),
        )
        pipe.set_progress_bar_config(disable=True)
        if mode != "plain":
            apply_speedups(pipe, speed)
        if self.groups is not None:  # as the product's split generator: rank 0 encodes the image for every rank
            from f2f.backends.video.parallel import encode_on_rank_0, parallelize_transformer

            parallelize_transformer(transformer, self.groups)
            encode_on_rank_0(pipe)
        try:
            with attention_kernel(speed):
                first_s = self._video(pipe, min(2, self.steps))[1]  # warm-up: kernels chosen, blocks compiled
                reset_peak(self.device)
                latents, denoise_s, step_times = self._video(pipe, self.steps, timed=True)
            peak_gib = peak_memory_gib(self.device)
            if self.vae_s is None:
                self.vae_s = self._decode(pipe, latents) if self.rank0 else 0.0
        finally:
            del pipe, transformer
            release_memory(self.device)
        cache = speed.cache != "off"
        step_s = statistics.median(step_times[1:] or step_times)
        row = Row(
            mode=mode,
            step_s=denoise_s / self.steps if cache else step_s,
            denoise_s=denoise_s,
            steps=self.steps,
            vae_s=self.vae_s,
            text_s=self.text_s,
            paper_s=None if cache else self.text_s + PAPER_STEPS * step_s + self.vae_s,
            first_s=first_s,
            peak_gib=peak_gib,
            tflops=step_flops(self.size, self.frames) / step_s / 1e12,
            approximate=cache,
        )
        return row, latents

    def _video(self, pipe: Any, steps: int, timed: bool = False) -> tuple[Any, float, list[float]]:
        import torch

        marks: list[float] = []

        def mark(*_: Any) -> dict[str, Any]:
            synchronize(self.device)
            marks.append(time.perf_counter())
            return {}

        synchronize(self.device)
        started = time.perf_counter()
        with torch.no_grad():
            latents = pipe(
                image=self.image,
                prompt_embeds=self.embeds[0],
                negative_prompt_embeds=self.embeds[1],
                height=self.size.height,
                width=self.size.width,
                num_frames=self.frames,
                num_inference_steps=steps,
                guidance_scale=self.guidance,
                use_dynamic_cfg=False,
                generator=torch.Generator("cpu").manual_seed(42),
                output_type="latent",
                callback_on_step_end=mark if timed else None,
            ).frames
        synchronize(self.device)
        total = time.perf_counter() - started
        steps = [b - a for a, b in zip([started, *marks], marks, strict=False)]
        return latents, total, steps

    def _decode(self, pipe: Any, latents: Any) -> float:
        import torch

        with torch.no_grad():
            synchronize(self.device)
            started = time.perf_counter()
            pipe.decode_latents(latents)
            synchronize(self.device)
        return time.perf_counter() - started


# --- the architecture with random weights --------------------------------------------------------


def build_transformer(size: Size, device: Any, dtype: Any) -> Any:
    from diffusers import CogVideoXTransformer3DModel

    return _random(lambda: CogVideoXTransformer3DModel(**size.transformer), device, dtype, seed=0)


def build_vae(size: Size, device: Any, dtype: Any) -> Any:
    from diffusers import AutoencoderKLCogVideoX

    return _random(lambda: AutoencoderKLCogVideoX(**size.vae), device, dtype, seed=1)


def build_t5(size: Size, device: Any, dtype: Any) -> Any:
    from transformers import T5Config, T5EncoderModel

    return _random(lambda: T5EncoderModel(T5Config(**size.t5)), device, dtype, seed=2)


def encode_timed(t5: Any, size: Size, tokens: int, device: Any) -> tuple[Any, float]:
    """A prompt and a negative prompt of `tokens` random ids through `t5` after a warm-up: (hidden states, seconds)."""
    import torch

    with torch.no_grad():
        ids = torch.randint(0, size.t5["vocab_size"], (2, tokens), generator=torch.Generator().manual_seed(1)).to(device)
        t5(ids)  # warm-up
        synchronize(device)
        started = time.perf_counter()
        hidden = t5(ids).last_hidden_state
        synchronize(device)
    return hidden, time.perf_counter() - started


def _random(make: Callable[[], Any], device: Any, dtype: Any, seed: int) -> Any:
    """The module built without initialising on the CPU (meta tensors), then filled on `device` from `seed`.

    Matrices get N(0, 1/fan_in) (activations keep their scale through the
    layers), norm weights 1, biases 0, other tensors N(0, 0.02): the same
    weights for every mode, made in a second on a GPU.
    """
    import torch

    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters made in `dtype`: no cast afterwards
    try:
        with torch.device("meta"):
            module = make()
    finally:
        torch.set_default_dtype(default)
    module = module.to_empty(device=device).eval()
    generator = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if not tensor.is_floating_point():
                continue
            if tensor.ndim >= 2:
                fan_in = tensor[0].numel()
                tensor.normal_(0, fan_in**-0.5, generator=generator)
            elif name.endswith("bias"):
                tensor.zero_()
            elif "norm" in name and name.endswith("weight"):
                tensor.fill_(1)
            else:
                tensor.normal_(0, 0.02, generator=generator)
    return module


def step_flops(size: Size, frames: int) -> float:
    """Matmul FLOPs of one denoising step (both guidance halves): projections, feed-forward, attention.

    Per layer and video: q, k, v, out (8 S D^2), feed-forward D -> 4D -> D
    (16 S D^2), scores and weighted sum (4 S^2 D), with S = 226 text tokens +
    the video tokens; norms, embeddings and the output layer are left out.
    """
    t = size.transformer
    dim = t["num_attention_heads"] * t["attention_head_dim"]
    tokens = TEXT_TOKENS + video_tokens(size, frames)
    per_layer = 24 * tokens * dim**2 + 4 * tokens**2 * dim
    return 2 * t["num_layers"] * per_layer


def ceilings(size: Size, frames: int, device: Any, dtype: Any) -> list[dict[str, Any]]:
    """What the card can do at most: a square matmul, the transformer's feed-forward GEMM, its attention per kernel."""
    import torch

    cuda = device.type == "cuda"
    t = size.transformer
    dim, heads, head_dim = t["num_attention_heads"] * t["attention_head_dim"], t["num_attention_heads"], t["attention_head_dim"]
    tokens = TEXT_TOKENS + video_tokens(size, frames)
    n = 8192 if cuda else 1024
    square = torch.randn(n, n, device=device, dtype=dtype)
    rows = 2 * tokens  # both guidance halves
    x, w = torch.randn(rows, dim, device=device, dtype=dtype), torch.randn(4 * dim, dim, device=device, dtype=dtype)
    label = str(dtype).removeprefix("torch.")
    found = [
        _ceiling(f"matmul {label}", f"{n}x{n}x{n}", 2 * n**3, lambda: square @ square, device),
        _ceiling(
            f"feed-forward GEMM {label}", f"{rows}x{dim} @ {dim}x{4 * dim}", 2 * rows * dim * 4 * dim, lambda: x @ w.t(), device
        ),
        _fp8_gemm(x, w, device),
    ]
    q, k, v = (torch.randn(2, heads, tokens, head_dim, device=device, dtype=dtype) for _ in range(3))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name, kernel in (("flash", "FLASH_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION")):

        def attend(kernel: str = kernel) -> Any:
            with sdpa_kernel(getattr(SDPBackend, kernel)):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v)

        flops = 4 * 2 * heads * tokens**2 * head_dim
        found.append(_ceiling(f"attention {name}", f"2x{heads}x{tokens}x{head_dim}", flops, attend, device))
    return found


def _fp8_gemm(x: Any, w: Any, device: Any) -> dict[str, Any]:
    """The feed-forward GEMM in float8 (e4m3, per-tensor scales, bf16 out), as fp8 quantisation runs it."""
    import torch

    name, shape = "feed-forward GEMM fp8", f"{x.shape[0]}x{x.shape[1]} @ {w.shape[1]}x{w.shape[0]}"
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        return {"name": name, "shape": shape, "skipped": "needs a CUDA GPU of compute capability 8.9+"}
    a, b = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn).t()  # b column-major, as _scaled_mm wants
    one = torch.ones((), device=device, dtype=torch.float32)
    flops = 2 * x.shape[0] * x.shape[1] * w.shape[0]
    return _ceiling(name, shape, flops, lambda: torch._scaled_mm(a, b, one, one, out_dtype=torch.bfloat16), device)


def _ceiling(name: str, shape: str, flops: float, run: Callable[[], Any], device: Any) -> dict[str, Any]:
    """Mean time of `run` after warm-ups, as TFLOP/s; or why it cannot run here."""
    try:
        for _ in range(3):
            run()
        synchronize(device)
        repeats = 20 if device.type == "cuda" else 3
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        synchronize(device)
    except Exception as exc:  # a kernel this build or card lacks (cuDNN attention on the CPU): say so
        return {"name": name, "shape": shape, "skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
    seconds = (time.perf_counter() - started) / repeats
    return {"name": name, "shape": shape, "ms": seconds * 1e3, "tflops": flops / seconds / 1e12}


def video_tokens(size: Size, frames: int) -> int:
    t = size.transformer
    latent_frames = (frames - 1) // t["temporal_compression_ratio"] + 1
    return latent_frames * (size.height // 8 // t["patch_size"]) * (size.width // 8 // t["patch_size"])


# --- devices --------------------------------------------------------------------------------------


def _parallel_groups(layout: str, device: Any) -> Any:
    cfg, _, ulysses = layout.partition("x")
    if (int(cfg), int(ulysses or 1)) == (1, 1):
        return None
    import torch
    import torch.distributed as dist

    from f2f.backends.video.parallel import init_groups
    from f2f.config import ParallelConfig

    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return init_groups(ParallelConfig(cfg=int(cfg), ulysses=int(ulysses or 1)))


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def machine(device: Any) -> dict[str, str]:
    """The card (name and driver as nvidia-smi reports them), the CPU and every library the figures depend on."""
    import diffusers
    import torch
    import transformers

    info = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": str(os.cpu_count()),
    }
    with contextlib.suppress(ImportError):
        import torchao

        info["torchao"] = torchao.__version__
    if device.type == "cuda":
        info["cuda"] = str(torch.version.cuda)
        info["cudnn"] = str(torch.backends.cudnn.version())
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            card = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
            info["gpu"], info["driver"], info["gpu_memory"] = (part.strip() for part in card.split(","))
        info.setdefault("gpu", torch.cuda.get_device_name(device))
    return info


HEADER = [
    "mode",
    "s/step",
    "timed steps s",
    "VAE s",
    "text s",
    "50-step s",
    "first s",
    "peak GiB",
    "TFLOP/s",
    "% matmul",
    "vs plain",
    "max abs diff",
    "rel L2",
]


def table_row(row: Row, found_ceilings: list[dict[str, Any]]) -> str:
    """One Markdown row; `% matmul` is against the square-matmul ceiling, when it was measured."""
    peak = next((c["tflops"] for c in found_ceilings if c["name"].startswith("matmul") and "tflops" in c), None)
    cells = [
        row.mode + (" (approx.)" if row.approximate else ""),
        f"{row.step_s:.3f}",
        f"{row.denoise_s:.2f} ({row.steps})",
        f"{row.vae_s:.2f}",
        f"{row.text_s:.3f}",
        "-" if row.paper_s is None else f"{row.paper_s:.1f}",
        f"{row.first_s:.1f}",
        "-" if row.peak_gib is None else f"{row.peak_gib:.1f}",
        f"{row.tflops:.3g}",
        "-" if peak is None else f"{100 * row.tflops / peak:.0f}%",
        "-" if row.speedup is None else f"{row.speedup:.2f}x",
        "-" if row.max_abs_diff is None else f"{row.max_abs_diff:.2e}",
        "-" if row.rel_l2 is None else f"{row.rel_l2:.2e}",
    ]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    raise SystemExit(main())
