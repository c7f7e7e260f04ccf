"""What previews of the path cost: every tiny video family on this machine's CPU, previews off and on, in one run.

    python bench/previews.py [--steps 8] [--repeats 3]

For each tiny family (`f2f.backends.tiny`, random weights: the numbers time
the plumbing), one generator is loaded and, after a warm-up, runs `--repeats`
edits of one seed with previews off and `--repeats` with a preview after
every step (`preview_every` 1, the most there can be), alternating. It prints
the median seconds per step off and on (their difference is within this
machine's noise), the median time of one preview itself (timed around
`f2f.backends.video.previews.render`), that as a share of a step off, and
the time to the first preview: from the call to the first
preview's event, on a fresh generator whose map is not yet fitted (the fit
from the VAE: once per checkpoint) and once it is cached beside the checkpoint.

Full size, from FLOPs: a preview is one 3 x C multiply-add per latent cell
of the last latent frame (2 x 3 x C x h x w FLOPs) and a resize; a
CogVideoX-5B step at 720x480, 49 frames is `bench/generate.py`'s
`step_flops` (both guidance halves). The ratio is printed too; on a GPU the
preview's real cost is its copy of a 3 x h x w tensor to the host (a sync),
not its arithmetic.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
CAPTION = "The dog slowly sits down on the grass."
# family: (canvas, frames, extra video settings)
FAMILIES: dict[str, tuple[tuple[int, int], int, dict[str, Any]]] = {
    "cogvideox": ((96, 64), 9, {}),
    "wan": ((80, 48), 9, {}),
    "ltx": ((96, 64), 9, {}),
    "chronoedit": ((80, 48), 5, {"enable_temporal_reasoning": False, "num_temporal_reasoning_steps": 0}),
}


def checkpoint(name: str, root: Path) -> Path:
    from f2f.backends.tiny.tiny_chronoedit import make_tiny_chronoedit
    from f2f.backends.tiny.tiny_cogvideox import make_tiny_cogvideox
    from f2f.backends.tiny.tiny_ltx import make_tiny_ltx
    from f2f.backends.tiny.tiny_wan import make_tiny_wan

    makers = {
        "cogvideox": lambda folder: make_tiny_cogvideox(folder, seed=0, height=64, width=96),
        "wan": lambda folder: make_tiny_wan(folder, seed=0),
        "ltx": lambda folder: make_tiny_ltx(folder, seed=0),
        "chronoedit": lambda folder: make_tiny_chronoedit(folder, seed=0),
    }
    return makers[name](root / name)


def run(generator: Any, name: str, steps: int, preview_every: int | None) -> tuple[float, float | None, int]:
    """Seconds of one edit, seconds to its first preview (None: none), previews made."""
    from PIL import Image

    from f2f.config import VideoConfig

    (width, height), frames, extra = FAMILIES[name]
    settings = VideoConfig(
        width=width, height=height, num_frames=frames, num_inference_steps=steps, guidance_scale=5.0, fps=8, **extra
    )
    image = Image.new("RGB", (width, height), (180, 60, 30))
    firsts: list[float] = []
    count = [0]
    started = time.perf_counter()

    def on_progress(event: Any) -> None:
        if event.preview is not None:
            count[0] += 1
            if not firsts:
                firsts.append(time.perf_counter() - started)

    asked = {} if preview_every is None else {"preview_every": preview_every}
    asyncio.run(generator.generate(image, CAPTION, [5], settings, progress=on_progress, **asked))
    return time.perf_counter() - started, (firsts[0] if firsts else None), count[0]


def timed_renders() -> list[float]:
    """Time every `render` from now on (the generator imports it at each call); the list of its seconds."""
    from f2f.backends.video import previews

    seconds: list[float] = []
    render = previews.render

    def timed(*args: Any) -> Any:
        started = time.perf_counter()
        image = render(*args)
        seconds.append(time.perf_counter() - started)
        return image

    previews.render = timed
    return seconds


def family_row(name: str, root: Path, steps: int, repeats: int, renders: list[float]) -> dict[str, Any]:
    from f2f.backends.video.i2v import DiffusersVideoGenerator

    folder = checkpoint(name, root)
    generator = DiffusersVideoGenerator(folder, device="cpu")
    _, first_fitting, _ = run(generator, name, steps, 1)  # fits the map from the VAE, and warms up
    generator.close()
    generator = DiffusersVideoGenerator(folder, device="cpu")
    _, first_cached, _ = run(generator, name, steps, 1)  # reads the map from beside the checkpoint
    off, on = [], []
    renders.clear()
    for _ in range(repeats):
        off.append(run(generator, name, steps, None)[0])
        on.append(run(generator, name, steps, 1)[0])
    generator.close()
    step_off, step_on = statistics.median(off) / steps, statistics.median(on) / steps
    per_preview = statistics.median(renders)
    return {
        "family": name,
        "step_off_ms": 1e3 * step_off,
        "step_on_ms": 1e3 * step_on,
        "preview_ms": 1e3 * per_preview,
        "share": per_preview / step_off,
        "first_fitting_s": first_fitting,
        "first_cached_s": first_cached,
    }


def full_size_estimate() -> tuple[float, float]:
    """(preview FLOPs, step FLOPs) of CogVideoX-5B at 720x480, 49 frames: 16 latent channels, a 60 x 90 latent frame."""
    from generate import FULL, step_flops

    return 2 * 3 * 16 * 60 * 90, step_flops(FULL, 49)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="denoising steps per edit")
    parser.add_argument("--repeats", type=int, default=3, help="timed edits per setting (median), after the warm-ups")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # as the replicas run it
    print(f"machine: {platform.machine()}, {platform.processor() or platform.system()}, torch {torch.__version__}, 1 thread")
    print(f"{args.steps} steps, one seed, median of {args.repeats}; previews on: one after every step\n")
    print("| family | ms/step off | ms/step on | ms/preview | share of a step | first preview, fitting (s) | cached (s) |")
    print("|---|---|---|---|---|---|---|")
    renders = timed_renders()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.families.split(","):
            row = family_row(name, Path(tmp), args.steps, args.repeats, renders)
            print(
                f"| {row['family']} | {row['step_off_ms']:.1f} | {row['step_on_ms']:.1f} | {row['preview_ms']:.2f} | "
                f"{100 * row['share']:.1f}% | {row['first_fitting_s']:.2f} | {row['first_cached_s']:.2f} |"
            )
    preview, step = full_size_estimate()
    shape = "CogVideoX-5B, 720x480, 49 frames"
    print(f"\nfull size ({shape}): a preview {preview:.3g} FLOPs, a step {step:.3g} FLOPs, ratio {preview / step:.1e}")


if __name__ == "__main__":
    main()
