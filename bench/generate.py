"""Time CogVideoX-5B-I2V video generation: the plain diffusers pipeline beside the generator's speed-ups.

    python bench/generate.py [--modes plain,fused,compiled,...] [--steps 50] [--frames 49] [--json FILE]
    python bench/generate.py --tiny                      # CPU smoke check: the tiny architecture, seconds
    torchrun --nproc-per-node 2 bench/generate.py --parallel 2x1    # one video split over 2 GPUs (cfg x ulysses)

Full size (the default) builds the transformer, VAE and T5-XXL encoder of
CogVideoX-5B-I2V from their configs with random weights (no download: the
compute is the real model's, the pictures are noise) in bfloat16 on the GPU,
at the paper's settings (720x480, 49 frames, 50 steps, guidance 6). Every
mode runs the same weights, inputs and seed, in the same process:

- `plain` is the diffusers pipeline untouched;
- the others apply `generator.speed` switches with the generator's own code
  (`f2f.backends.speedups`): `check_speed`, `apply_speedups`,
  `attention_kernel`.

Per mode: a two-step warm-up video (its time, which holds torch.compile's,
is `first s`), then one timed video of `--steps` steps: the median seconds
per denoising step, the denoising loop, the VAE decode, the text encoder,
end to end (their sum), the paper's 50-step video from those (text + 50 x
s/step + VAE: a step costs the same at every timestep, so `--steps 10` is
enough where GPU time is short), peak GPU memory, the transformer's effective TFLOP/s (analytic FLOPs
of a step over its median time) against a bf16 matmul peak measured on the
same card first, the speed-up over `plain` (of the 50-step video), and how far the final latents
are from `plain`'s (max |difference| and relative L2). Cache modes decide
what to skip from the activations: with random weights their speed-up is
not the real model's, so they are marked approximate.

With `torchrun`, every rank builds the same pipeline and the transformer is
split (`f2f.backends.parallel`: CFG-parallel x Ulysses); rank 0 prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
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
    "fp8": SpeedConfig(fuse_qkv=True, compile="regional", quantize="fp8"),
    "first_block": SpeedConfig(fuse_qkv=True, cache="first_block", cache_threshold=0.05),
    "pyramid": SpeedConfig(fuse_qkv=True, cache="pyramid"),
}
GPU_MODES = "plain,fused,cudnn,compiled,fp8,first_block,pyramid"
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
    vae_s: float
    text_s: float
    total_s: float
    paper_s: float
    first_s: float
    peak_gib: float | None
    tflops: float
    speedup: float | None = None
    max_abs_diff: float | None = None
    rel_l2: float | None = None
    approximate: bool = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny architecture on the CPU (a smoke check)")
    parser.add_argument("--modes", help=f"comma-separated, of {', '.join(MODES)} (default: {GPU_MODES}; --tiny: {CPU_MODES})")
    parser.add_argument("--steps", type=int, help="denoising steps (default 50; --tiny 3)")
    parser.add_argument("--frames", type=int, help="frames of the video, 8k+1 (default 49; --tiny 9)")
    parser.add_argument("--guidance", type=float, default=6.0)
    parser.add_argument("--parallel", default="1x1", help="cfg x ulysses, under torchrun (e.g. 2x1, 1x2, 2x2)")
    parser.add_argument("--json", type=Path, help="also write the rows and the machine to this file")
    args = parser.parse_args(argv)
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
    peak = matmul_peak(device, dtype)
    bench = Bench(size, device, dtype, steps, args.frames, args.guidance, groups)
    rows: list[Row] = []
    reference: Any = None
    for mode in modes:
        try:
            row, latents = bench.run(mode, MODES[mode])
        except Exception as exc:  # a mode this card cannot run (no torchao, no cuDNN attention): say so, go on
            if rank0:
                print(f"{mode}: skipped ({type(exc).__name__}: {str(exc)[:200]})", file=sys.stderr)
            continue
        if reference is None and mode == "plain":
            reference = latents
        elif reference is not None:
            diff = (latents.float() - reference.float()).flatten()
            row.max_abs_diff = diff.abs().max().item()
            row.rel_l2 = (diff.norm() / reference.float().norm()).item()
        rows.append(row)
    plain = next((row for row in rows if row.mode == "plain"), None)
    for row in rows:
        row.speedup = plain.paper_s / row.paper_s if plain else None
    if rank0:
        print_table(size, device, dtype, steps, args, peak, rows)
        if args.json:
            args.json.write_text(
                json.dumps({"machine": machine(device), "peak_tflops": peak[0], "rows": [asdict(r) for r in rows]})
            )
    if groups is not None:
        torch.distributed.destroy_process_group()
    return 0


class Bench:
    """Builds the pipeline once per mode (same seed, same weights) and times one video."""

    def __init__(self, size: Size, device: Any, dtype: Any, steps: int, frames: int, guidance: float, groups: Any) -> None:
        self.size, self.device, self.dtype, self.steps, self.frames, self.guidance = size, device, dtype, steps, frames, guidance
        self.groups = groups
        from f2f.backends.cogvideox import tile_when_out_of_memory

        self.vae, self.t5 = build_vae(size, device, dtype), build_t5(size, device, dtype)
        tile_when_out_of_memory(self.vae)  # as `generator.vae_tiling: auto` (a warning says when it tiles)
        self.embeds, self.text_s = self._encode_text()
        from PIL import Image

        self.image = Image.new("RGB", (size.width, size.height), (120, 80, 40))

    def _encode_text(self) -> tuple[tuple[Any, Any], float]:
        import torch

        with torch.no_grad():
            ids = torch.randint(0, self.size.t5["vocab_size"], (2, TEXT_TOKENS), generator=torch.Generator().manual_seed(1))
            ids = ids.to(self.device)
            self.t5(ids)  # warm-up
            synchronize(self.device)
            started = time.perf_counter()
            hidden = self.t5(ids).last_hidden_state
            synchronize(self.device)
        return (hidden[:1], hidden[1:]), time.perf_counter() - started

    def run(self, mode: str, speed: SpeedConfig) -> tuple[Row, Any]:
        from diffusers import CogVideoXDDIMScheduler, CogVideoXImageToVideoPipeline

        from f2f.backends.cogvideox import release_memory
        from f2f.backends.speedups import apply_speedups, attention_kernel, check_speed
        from f2f.backends.tiny_cogvideox import SCHEDULER_CONFIG

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
        if self.groups is not None:
            from f2f.backends.parallel import parallelize_transformer

            parallelize_transformer(transformer, self.groups)
        try:
            with attention_kernel(speed):
                first_s = self._video(pipe, min(2, self.steps))[1]  # warm-up: kernels chosen, blocks compiled
                reset_peak(self.device)
                latents, denoise_s, step_times = self._video(pipe, self.steps, timed=True)
            peak_gib = peak_memory_gib(self.device)
            vae_s = self._decode(pipe, latents)
        finally:
            del pipe, transformer
            release_memory(self.device)
        step_s = statistics.median(step_times[1:] or step_times)
        flops = step_flops(self.size, self.frames)
        row = Row(
            mode=mode,
            step_s=step_s,
            denoise_s=denoise_s,
            vae_s=vae_s,
            text_s=self.text_s,
            total_s=self.text_s + denoise_s + vae_s,
            paper_s=self.text_s + PAPER_STEPS * step_s + vae_s,
            first_s=first_s,
            peak_gib=peak_gib,
            tflops=flops / step_s / 1e12,
            approximate=speed.cache != "off",
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
    latent_frames = (frames - 1) // t["temporal_compression_ratio"] + 1
    patches = (size.height // 8 // t["patch_size"]) * (size.width // 8 // t["patch_size"])
    tokens = TEXT_TOKENS + latent_frames * patches
    per_layer = 24 * tokens * dim**2 + 4 * tokens**2 * dim
    return 2 * t["num_layers"] * per_layer


def matmul_peak(device: Any, dtype: Any) -> tuple[float, str]:
    """TFLOP/s of large square matmuls on this device and dtype (the effective peak the table compares to)."""
    import torch

    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    repeats = 20 if device.type == "cuda" else 3
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    seconds = (time.perf_counter() - started) / repeats
    return 2 * n**3 / seconds / 1e12, f"{n}x{n} {str(dtype).removeprefix('torch.')}"


# --- devices --------------------------------------------------------------------------------------


def _parallel_groups(layout: str, device: Any) -> Any:
    cfg, _, ulysses = layout.partition("x")
    if (int(cfg), int(ulysses or 1)) == (1, 1):
        return None
    import torch
    import torch.distributed as dist

    from f2f.backends.parallel import init_groups
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
    import diffusers
    import torch

    info = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": str(os.cpu_count()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
        with contextlib.suppress(Exception):
            import subprocess

            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
            ).stdout.strip()
    return info


def print_table(size: Size, device: Any, dtype: Any, steps: int, args: Any, peak: tuple[float, str], rows: list[Row]) -> None:
    info = machine(device)
    print(
        f"# {size.name}: {size.width}x{size.height}, {args.frames} frames, {steps} steps, guidance {args.guidance:g}, "
        f"{str(dtype).removeprefix('torch.')}, parallel {args.parallel}"
    )
    print("# " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"# matmul peak: {peak[0]:.1f} TFLOP/s ({peak[1]}); transformer FLOPs per step: {step_flops(size, args.frames):.3g}")
    header = [
        "mode",
        "s/step",
        "denoise s",
        "VAE s",
        "text s",
        "total s",
        "50-step s",
        "first s",
        "peak GiB",
        "TFLOP/s",
        "% peak",
        "vs plain",
        "max abs diff",
        "rel L2",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [
            row.mode + (" (approx.)" if row.approximate else ""),
            f"{row.step_s:.3f}",
            f"{row.denoise_s:.2f}",
            f"{row.vae_s:.2f}",
            f"{row.text_s:.3f}",
            f"{row.total_s:.2f}",
            f"{row.paper_s:.2f}",
            f"{row.first_s:.2f}",
            "-" if row.peak_gib is None else f"{row.peak_gib:.1f}",
            f"{row.tflops:.1f}" if row.tflops >= 1 else f"{row.tflops:.3f}",
            f"{100 * row.tflops / peak[0]:.0f}%",
            "-" if row.speedup is None else f"{row.speedup:.2f}x",
            "-" if row.max_abs_diff is None else f"{row.max_abs_diff:.2e}",
            "-" if row.rel_l2 is None else f"{row.rel_l2:.2e}",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
