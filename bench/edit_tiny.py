"""Per-stage time and peak memory of a tiny-profile edit, for each VLM backend.

    python bench/edit_tiny.py [--backends transformers vllm openai] [--repeats 3]

Each backend runs in a fresh process (so memory figures do not mix): it loads
the tiny profile's models, runs one warm-up edit of the bundled sample image,
then `--repeats` timed edits, and reports the median seconds per stage and
the peak memory (PSS of the process and its children, sampled every 20 ms)
during each stage. For `openai` the VLM is vLLM's own OpenAI-compatible
server on 127.0.0.1, started before the timing (load is then the video model
only), and memory is the edit process plus the server. vLLM runs its engine in-process
(VLLM_ENABLE_V1_MULTIPROCESSING=0), as on a CPU. Random weights: the numbers
time the plumbing and the real code paths, not a useful edit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "f2f" / "data" / "sample.png"
STAGES = ["load", "caption", "generate", "select", "total"]


class PeakSampler:
    """Samples the memory (PSS) of some processes and their children every 20 ms and keeps the peak per current stage."""

    def __init__(self, pids: list[int]):
        import psutil

        self.procs = [psutil.Process(pid) for pid in pids]
        self.stage = "load"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), self._rss())

    def _rss(self) -> int:
        """PSS of the processes and all their children (vLLM runs its engine core in one).

        PSS, not RSS: memory the processes share (vLLM maps its KV cache in
        several) is counted once, split among them, so the sum is honest."""
        import psutil

        total = 0
        for proc in self.procs:
            for p in [proc, *proc.children(recursive=True)]:
                with suppress(psutil.NoSuchProcess):
                    total += p.memory_full_info().pss
        return total

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def vllm_server(model: Path):
    port = free_port()
    # The tiny profile's settings: eager, a 1 GiB KV cache.
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--max-model-len", "8192", "--limit-mm-per-prompt", '{"image": 4}',
           "--enforce-eager", "--kv-cache-memory-bytes", str(2**30)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("the vLLM server did not start")
        yield f"http://127.0.0.1:{port}/v1", proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def worker(backend: str, repeats: int) -> dict:
    """One backend, in this process: load, warm up, time `repeats` edits."""
    from f2f import open_image
    from f2f.backends import ensure_tiny_checkpoints
    from f2f.config import load_config

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    overrides = {"profile": "tiny", "vlm": {"backend": backend}, "seed": 0}
    config = load_config(overrides=overrides)
    ensure_tiny_checkpoints(config.models_dir, "tiny")  # building the checkpoints is not part of the timing
    image, pids = open_image(SAMPLE), [os.getpid()]
    with ExitStack() as stack:
        if backend == "openai":
            base_url, server_pid = stack.enter_context(vllm_server(config.vlm.model_path))
            pids.append(server_pid)
            config = load_config(overrides={**overrides, "vlm": {"backend": "openai", "base_url": base_url}})
        with PeakSampler(pids) as sampler:
            load_s, runs = asyncio.run(timed_edits(config, image, repeats, sampler))
    seconds = {stage: statistics.median(r[stage] for r in runs) for stage in STAGES[1:]}
    return {"backend": backend, "seconds": {"load": load_s, **seconds}, "peak_pss": sampler.peaks}


async def timed_edits(config, image, repeats: int, sampler: PeakSampler) -> tuple[float, list[dict[str, float]]]:
    """Load, then 1 + `repeats` edits, all in ONE event loop (vLLM's AsyncLLM is bound to the loop it first ran in)."""
    from f2f import edit
    from f2f.backends import build_backends

    def progress(event) -> None:
        if event.stage in STAGES:
            sampler.stage = event.stage

    start = time.perf_counter()
    backends = build_backends(config)
    load_s = time.perf_counter() - start
    runs = []
    try:
        for i in range(repeats + 1):
            sampler.stage = "caption"
            result = await edit(
                image, "make the sun set", vlm=backends.vlm, generator=backends.generator, config=config, progress=progress
            )
            if i:  # the first edit warms up
                runs.append(result.timings_s)
    finally:
        backends.close()
    return load_s, runs


def table(rows: list[dict], repeats: int) -> str:
    head = f"| VLM backend | {' | '.join(f'{s} s' for s in STAGES)} | {' | '.join(f'peak {s} MiB' for s in STAGES[:-1])} |"
    lines = [head, "|" + "---|" * (1 + 2 * len(STAGES) - 1)]
    for row in rows:
        secs = " | ".join(f"{row['seconds'][s]:.2f}" for s in STAGES)
        mem = " | ".join(f"{row['peak_pss'].get(s, 0) / 2**20:.0f}" for s in STAGES[:-1])
        lines.append(f"| {row['backend']} | {secs} | {mem} |")
    return "\n".join(lines) + f"\n\nmedian of {repeats} edits after one warm-up; {machine()}"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends", nargs="+", default=["transformers", "vllm", "openai"], choices=["transformers", "vllm", "openai"]
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats)))
        return
    rows = []
    for backend in args.backends:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", backend, "--repeats", str(args.repeats)], capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.exit(f"{backend} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(table(rows, args.repeats))


if __name__ == "__main__":
    main()
