"""Zero-cost fake models for bulk runs at scale (tests and bench only; the product never uses them), and a driver
that runs one bulk run on them and prints its summary and its peak resident memory.

    python tests/bulk/zero_cost.py MANIFEST OUT [--block-rows N] [--delay-s S] [--max-retries N]

The VLM answers at once (a caption; the first candidate); the generator returns the canvas itself as every frame,
after `delay_s` seconds (a run slow enough to interrupt). Run with the repository and tests/bulk on PYTHONPATH:
Ray's workers import this module by name to unpickle the loader.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from f2f.config import F2FConfig, VideoConfig
from f2f.protocols import Answer, Frames, Message, TokenUsage

VIDEO = {"width": 32, "height": 32, "num_frames": 9, "num_inference_steps": 1}


class InstantVLM:
    async def chat(self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0) -> Answer:
        text = " ".join(part.get("text", "") for m in messages for part in m["content"] if isinstance(part, dict))
        return Answer("SELECTED: 1" if "SELECTED" in text else "The subject slowly turns red.", TokenUsage(1, 1, 0))


class InstantGenerator:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    async def generate(
        self, image: Image.Image, caption: str, seeds: Sequence[int], settings: VideoConfig, **_: Any
    ) -> list[Frames]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return [[image] * settings.num_frames for _ in seeds]


class ZeroCostModels:
    """A `f2f.bulk.stages.ModelLoader` of the two fakes."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def vlm(self, config: F2FConfig) -> InstantVLM:
        return InstantVLM()

    def generator(self, config: F2FConfig) -> InstantGenerator:
        return InstantGenerator(self.delay_s)


def config() -> F2FConfig:
    return F2FConfig.model_validate({"video": VIDEO, "seed": 3, "selection": {"collage_max_pixels": 65536}})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("manifest")
    parser.add_argument("out")
    parser.add_argument("--block-rows", type=int, default=None)
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--max-retries", type=int, default=2)
    args = parser.parse_args(argv)
    from f2f.bulk.run import BulkRun
    from f2f.bulk.storage import Location

    run = BulkRun(
        Location.of(args.manifest),
        Location.of(args.out),
        config(),
        max_retries=args.max_retries,
        block_rows=args.block_rows,
        loader=ZeroCostModels(args.delay_s),
    )
    scanned = run.scan()
    data = run.execute(scanned, False, lambda *_: None, lambda line: print(line, file=sys.stderr, flush=True))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": round(peak_mb, 1), "summary": data}))
    return 0


def result_of(stdout: str) -> dict[str, Any]:
    """A driver's result: its last JSON line (Ray forwards its own warnings to the driver's stdout, after it too)."""
    return json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith("{")))


def write_manifest(path: Path, rows: int, images: int = 8) -> Path:
    """A manifest of `rows` rows over `images` small generated images beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        Image.new("RGB", (40, 30), (30 * i % 256, 90, 160)).save(path.parent / f"img{i}.png")
    with path.open("w") as manifest:
        for n in range(rows):
            manifest.write(json.dumps({"id": f"item{n}", "image": f"img{n % images}.png", "prompt": "make it red"}) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
