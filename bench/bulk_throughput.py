"""Bulk edit throughput on this machine with the tiny profile: items per minute for 1 and 2 generator actors.

    python bench/bulk_throughput.py [--items 16] [--generators 1 2]

Edits the first `--items` PosEdit sources (`../shared/data/posedit`) with
their instructions, once per generator-actor count, each into a fresh output
folder, through the same runner as `f2f bulk` (one VLM actor; items in
flight: twice the generators). The actors are started and loaded before the
clock starts. Starts its own Ray on loopback (no other may run: two clusters
do not fit two cores). Random weights: the numbers time the plumbing and the
real code paths, not useful edits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POSEDIT = ROOT.parent / "shared" / "data" / "posedit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=16, help="PosEdit items per run")
    parser.add_argument("--generators", type=int, nargs="+", default=[1, 2], help="generator actor counts to compare")
    args = parser.parse_args()

    import ray

    from f2f.backends import force_offline, prepare_models
    from f2f.bulk import runner
    from f2f.bulk.manifest import read_manifest
    from f2f.config import config_from_dict

    force_offline()
    config = config_from_dict({"profile": "tiny", "seed": 0})
    prepare_models(config)
    annotations = json.loads((POSEDIT / "annotations.json").read_text())[: args.items]
    rows = [{"image": str(POSEDIT / "src_images" / a["image"]), "prompt": a["instruction"]} for a in annotations]
    results = []
    with tempfile.TemporaryDirectory(prefix="f2f-bench-bulk") as work:
        manifest_path = Path(work) / "manifest.jsonl"
        manifest_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        manifest = read_manifest(manifest_path)
        runner.connect_ray()
        try:
            for count in args.generators:
                resources = runner.Resources(vlms=1, generators=count)
                models = runner.start_actors(config, resources)
                out = runner.OutputFolder(Path(work) / f"out-{count}", manifest)
                started = time.monotonic()
                stats = asyncio.run(
                    runner.run_items(
                        runner.plan_items(manifest.items, out, config, max_retries=0),
                        out,
                        config,
                        models,
                        concurrency=2 * count,
                        on_outcome=lambda *_: None,
                    )
                )
                elapsed = time.monotonic() - started
                results.append((count, stats.succeeded, stats.failed, elapsed))
                for actor in models.vlm.actors + models.generator.actors:
                    ray.kill(actor)
        finally:
            ray.shutdown()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, ray {ray.__version__}")
    print("| generator actors | items | failed | seconds | items/min |")
    print("|---|---|---|---|---|")
    for count, succeeded, failed, elapsed in results:
        print(f"| {count} | {succeeded} | {failed} | {elapsed:.1f} | {60 * (succeeded + failed) / elapsed:.1f} |")


if __name__ == "__main__":
    main()
