"""Bulk throughput, the old runner against the new, side by side in one run: the orchestration's own cost, and the tiny profile.

    python bench/bulk_throughput.py [--sizes 1000,10000,100000] [--block-rows 256] [--tiny-items 16]
                                    [--generators 1,2] [--old-ref 66dfd01] [--repeat 1] [--skip-tiny]

Two measures, each configuration in a driver process of its own:

- Zero-cost models (`tests/bulk/zero_cost.py`: the VLM answers at once, the
  generator returns the canvas as every frame) over manifests of `--sizes`
  items on 8 small images: items per second from the manifest to the
  reports, and the driver's peak resident memory (`ru_maxrss`). The new
  runner through `zero_cost.main` with `--block-rows` (the CLI's default is 1:
  an item a block; zero-cost items want bigger blocks); the old one
  (`f2f/bulk/runner.py` at `--old-ref`, checked out into a temporary git
  worktree) as its command drove it (`read_manifest`, `OutputFolder`,
  `plan_items`, `run_items` with twice as many items in flight as
  generators, the reports), its `Models` over one VLM and one generator
  actor that wrap the same fakes (`start_actors` without a model to load).
- The tiny profile (random weights) on the first `--tiny-items` PosEdit
  sources (`f2f bulk from-posedit ../shared/data/posedit`): items per minute
  of the whole `f2f bulk` command (its actors' model loads included) with
  each count of `--generators`, one VLM actor a pool, default blocks.

Each driver starts a Ray of its own on this machine (`ray.init()` with no
address, `RAY_TMPDIR` a fresh folder, no dashboard, run from its tree's
folder so that Ray's workers import the same `f2f` as the driver, which it
checks): it never joins another cluster, and its Ray stops with it. The
timings start once Ray is up. Run it alone: the runs share the machine's
cores with whatever else runs (`--repeat` shows the median).

Measured here: AMD EPYC, 2 cores, 24 GiB; 2026-12-06; Python 3.11.7, ray
2.60.0; old 66dfd01, new 15d07d7 (f2f/ unchanged since); one run each,
`--sizes 1000,10000` (100k skipped: from the 10k rows, 10 to 20 minutes a
runner on 2 cores, more than this session had). Other sessions' tests shared the 2 cores; the
load average is given at start, and it rose during the runs.

Run B (load average 0.73 at start, up to 17 later):

    | items  | old items/s | new items/s | old driver peak RSS MB | new driver peak RSS MB |
    |--------|-------------|-------------|------------------------|------------------------|
    |  1,000 |        84.1 |        90.0 |                    222 |                    267 |
    | 10,000 |        96.4 |       145.0 |                    266 |                    280 |

    | generator actors | items | old items/min | new items/min | old s | new s |
    |------------------|-------|---------------|---------------|-------|-------|
    | 1                |    16 |          62.2 |          47.3 |    15 |    20 |
    | 2                |    16 |          28.5 |           3.0 |    34 |   316 |

Run A (load average 10.6 at start):

    | items  | old items/s | new items/s | old driver peak RSS MB | new driver peak RSS MB |
    |--------|-------------|-------------|------------------------|------------------------|
    |  1,000 |        37.0 |        99.2 |                    250 |                    267 |
    | 10,000 |       102.0 |       196.2 |                    265 |                    281 |

    | generator actors | items | old items/min | new items/min | old s | new s |
    |------------------|-------|---------------|---------------|-------|-------|
    | 1                |    16 |          62.0 |          46.2 |    15 |    21 |
    | 2                |    16 |          58.5 |          40.1 |    16 |    24 |

No run failed an item. The 316 s of run B's new runner with 2 generators
did not come back: four more runs of that driver alone took 25, 42, 40
and 49 s (load average 2 to 17).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POSEDIT = ROOT.parent / "shared" / "data" / "posedit"
DRIVER_TIMEOUT_S = 6 * 3600


# --- the drivers (one process per configuration) --------------------------------------------------


def _start_ray() -> None:
    """A Ray of this process's own (never `address="auto"`: another cluster on the machine is not joined)."""
    import ray

    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    here, there = _f2f_folder(), ray.get(ray.remote(_f2f_folder).remote())
    if here != there:
        raise SystemExit(f"the workers import f2f from {there}, the driver from {here}")


def _f2f_folder() -> str:
    import f2f

    return str(Path(f2f.__file__).parent)


def _finish(started: float, succeeded: int, failed: int) -> None:
    """The driver's result line (JSON): what the parent reads."""
    import ray

    seconds = time.monotonic() - started
    ray.shutdown()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "succeeded": succeeded, "failed": failed, "peak_rss_mb": peak_mb}), flush=True)


def _new_zero(manifest: str, out: str, block_rows: int) -> None:
    import zero_cost  # tests/bulk, on PYTHONPATH

    _start_ray()
    started = time.monotonic()
    zero_cost.main([manifest, out, "--block-rows", str(block_rows)])
    by_status = json.loads(Path(out, "summary.json").read_text())["by_status"]
    _finish(started, by_status.get("succeeded", 0), by_status.get("failed", 0))


def _old_zero(manifest: str, out: str) -> None:
    """The old runner's command, its actors wrapping the zero-cost fakes instead of loading models."""
    import asyncio

    import ray
    import zero_cost

    from f2f.bulk import command, runner
    from f2f.bulk.manifest import read_manifest
    from f2f.protocols import Models

    class VLMActor:
        def __init__(self) -> None:
            self.vlm = zero_cost.InstantVLM()

        async def chat(self, messages: Any, max_tokens: int, temperature: float) -> str:  # the old runner's VLM: text
            return (await self.vlm.chat(messages, max_tokens=max_tokens, temperature=temperature)).text

    class GeneratorActor:
        def __init__(self) -> None:
            self.generator = zero_cost.InstantGenerator()

        async def generate(self, image: Any, caption: str, seeds: Any, settings: Any, mask: Any = None) -> Any:
            return await self.generator.generate(image, caption, seeds, settings, mask=mask)

    _start_ray()
    started = time.monotonic()
    config = zero_cost.config()
    parsed = read_manifest(Path(manifest), None, config)
    out_folder = runner.OutputFolder(Path(out), parsed)
    work = runner.plan_items(parsed.items, out_folder, config, max_retries=2)
    resources = runner.Resources.for_cluster(0)
    vlm = ray.remote(VLMActor).options(num_cpus=resources.actor_cpus, max_concurrency=16).remote()
    generator = ray.remote(GeneratorActor).options(num_cpus=resources.actor_cpus, max_concurrency=1).remote()
    ray.get([vlm.__ray_ready__.remote(), generator.__ray_ready__.remote()])
    models = Models(runner.PooledVLM([vlm]), runner.PooledGenerator([generator]))
    edits = runner.run_items(work, out_folder, config, models, 2 * resources.generators, lambda *_: None)
    stats = asyncio.run(edits)
    command._write_reports(out_folder, parsed, config, time.monotonic() - started, stats)
    _finish(started, stats.succeeded, stats.failed)


def _tiny(manifest: str, out: str, generators: int) -> None:
    """`f2f bulk` itself (whichever tree is on PYTHONPATH), on the Ray started here."""
    from f2f.bulk.command import main

    _start_ray()
    started = time.monotonic()
    args = ["run", manifest, "--out", out, "--profile", "tiny", "--generators", str(generators), "--max-retries", "0"]
    main.main(args, standalone_mode=False)
    by_status = json.loads(Path(out, "summary.json").read_text())["by_status"]
    _finish(started, by_status.get("succeeded", 0), by_status.get("failed", 0))


def driver(argv: Sequence[str]) -> None:
    kind, manifest, out, number = argv
    print(f"driver {kind}: f2f from {_f2f_folder()}", file=sys.stderr, flush=True)
    if kind == "new-zero":
        _new_zero(manifest, out, int(number))
    elif kind == "old-zero":
        _old_zero(manifest, out)
    else:
        _tiny(manifest, out, int(number))


# --- the parent ------------------------------------------------------------------------------------


def run_driver(kind: str, tree: Path, manifest: Path, out: Path, number: int, work: Path) -> dict[str, Any]:
    """One configuration in its own process and its own Ray; its result line, parsed."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # short: Ray's socket paths are bounded
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {
        "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT / "tests" / "bulk")]),
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    command = [sys.executable, str(Path(__file__).resolve()), "_driver", kind, str(manifest), str(out), str(number)]
    log = work / f"{out.name}.log"
    print(f"  {out.name}: ", end="", file=sys.stderr, flush=True)
    try:
        with log.open("w") as stderr:
            # cwd: Ray's workers put the driver's folder first on sys.path, so `f2f` is that tree's there too
            done = subprocess.run(
                command, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=DRIVER_TIMEOUT_S
            )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    if done.returncode != 0 or "{" not in done.stdout:
        raise SystemExit(f"{kind}: the driver exited with {done.returncode}; its log:\n{log.read_text()[-4000:]}")
    sys.path.insert(0, str(ROOT / "tests" / "bulk"))
    import zero_cost

    result = zero_cost.result_of(done.stdout)
    print(f"{result['seconds']:.1f} s", file=sys.stderr, flush=True)
    return result


def median_run(repeat: int, *args: Any) -> dict[str, Any]:
    """`repeat` runs of one configuration: the median run by seconds (another job on the machine slows some)."""
    runs = sorted((run_driver(*args) for _ in range(repeat)), key=lambda r: r["seconds"])
    return runs[len(runs) // 2]


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().split()
    mem_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2
    import ray

    load = Path("/proc/loadavg").read_text().split()[0]
    return (
        f"{model}, {os.cpu_count()} cores, {mem_gib:.0f} GiB (load average {load} at start); {datetime.date.today()}; "
        f"Python {platform.python_version()}, ray {ray.__version__}"
    )


def old_worktree(ref: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref], check=True, capture_output=True)
    return where


def zero_cost_rows(args: argparse.Namespace, old: Path, work: Path) -> list[str]:
    sys.path.insert(0, str(ROOT / "tests" / "bulk"))
    import zero_cost

    rows = []
    for size in args.sizes:
        manifest = zero_cost.write_manifest(work / f"zero-{size}" / "manifest.jsonl", size)
        old_run = median_run(args.repeat, "old-zero", old, manifest, work / f"out-old-{size}", 0, work)
        new_run = median_run(args.repeat, "new-zero", ROOT, manifest, work / f"out-new-{size}", args.block_rows, work)
        cells = [f"{size:,}"]
        cells += [f"{r['succeeded'] / r['seconds']:.1f}" for r in (old_run, new_run)]
        cells += [f"{r['peak_rss_mb']:.0f}" for r in (old_run, new_run)]
        cells += [str(r["failed"]) for r in (old_run, new_run)]
        rows.append("| " + " | ".join(cells) + " |")
    return [
        f"Zero-cost models (new: --block-rows {args.block_rows}; old: 2 items in flight):",
        "",
        "| items | old items/s | new items/s | old driver peak RSS MB | new driver peak RSS MB | old failed | new failed |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def tiny_rows(args: argparse.Namespace, old: Path, work: Path) -> list[str]:
    folder = work / "tiny"
    folder.mkdir()
    manifest = folder / "manifest.jsonl"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "f2f.bulk", "from-posedit", str(POSEDIT), "--out", str(manifest)], env=env, check=True)
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[: args.tiny_items]))  # absolute image paths
    rows = []
    for count in args.generators:
        old_run = median_run(args.repeat, "tiny", old, manifest, work / f"out-tiny-old-{count}", count, work)
        new_run = median_run(args.repeat, "tiny", ROOT, manifest, work / f"out-tiny-new-{count}", count, work)
        cells = [str(count), str(args.tiny_items)]
        cells += [f"{60 * (r['succeeded'] + r['failed']) / r['seconds']:.1f}" for r in (old_run, new_run)]
        cells += [f"{r['seconds']:.0f}" for r in (old_run, new_run)]
        cells += [str(r["failed"]) for r in (old_run, new_run)]
        rows.append("| " + " | ".join(cells) + " |")
    return [
        "Tiny profile, PosEdit sources (the whole command, its actors' model loads included):",
        "",
        "| generator actors | items | old items/min | new items/min | old s | new s | old failed | new failed |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def numbers(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=numbers, default=[1000, 10000, 100000], help="zero-cost manifest sizes, comma-separated")
    parser.add_argument("--block-rows", type=int, default=256, help="the new runner's items a block, zero-cost runs")
    parser.add_argument("--tiny-items", type=int, default=16, help="PosEdit items per tiny-profile run")
    parser.add_argument("--generators", type=numbers, default=[1, 2], help="tiny-profile generator actor counts")
    parser.add_argument("--old-ref", default="66dfd01", help="the git ref of the old runner (f2f/bulk/runner.py)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration; the median is shown")
    parser.add_argument("--skip-tiny", action="store_true", help="zero-cost runs only")
    args = parser.parse_args()

    lines = [f"machine: {machine()}; old: {args.old_ref}, new: {_head()}; median of {args.repeat} run(s) each", ""]
    with tempfile.TemporaryDirectory(prefix="f2f-bench-bulk-") as tmp:
        work = Path(tmp)
        old = old_worktree(args.old_ref, work / "old")
        try:
            if args.sizes:
                lines += [*zero_cost_rows(args, old, work), ""]
            if not args.skip_tiny:
                lines += tiny_rows(args, old, work)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    print("\n".join(lines))


def _head() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() + (" (dirty)" if _dirty() else "")


def _dirty() -> bool:
    done = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "f2f"], capture_output=True, text=True)
    return bool(done.stdout.strip())


if __name__ == "__main__":
    if sys.argv[1:2] == ["_driver"]:
        driver(sys.argv[2:])
    else:
        main()
