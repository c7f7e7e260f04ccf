"""The job store's cost as jobs are retained: submissions per second, create/get/claim p50/p99 and the sweep's time
per pass, for each store, with 1k and 10k (and, with --sizes, 100k) finished jobs kept for their TTL.

    python bench/control_plane.py [--sizes 1000,10000,100000] [--ops 300] [--stores file,redis] [--redis-url URL]

Each store is filled afresh in a temporary folder (the file store: on this machine's disk; NFS adds a round trip
per file; the Redis store: a `redis-server` this script starts on loopback, or --redis-url, under a fresh prefix).
A create runs the service's admission (the queue bound and a key's active jobs, `EditService.submit`), so its
cost is what a `POST /v1/edits` pays in the store. A sweep pass is what each ingress replica runs every
`jobs.sweep_interval_s` (`f2f.serving.jobs.sweep_once` without the broker: expiry, stale leases, unsent jobs).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from f2f.serving.jobs import EditRequest, JobStore, StoreBase
from f2f.serving.jobs.redis_store import RedisJobStore

SOURCE = b"\x89PNG\r\n\x1a\n" + bytes(2000)  # a source's bytes: what the store writes, not an image it reads
TTL_S = 86400.0


def fill(store: StoreBase, retained: int) -> list[str]:
    """`retained` finished jobs of 16 owners (cancelled while queued: finished, kept for the TTL)."""
    ids = []
    for i in range(retained):
        record, _ = store.create(SOURCE, EditRequest(prompt="x", seeds=[i]), f"fp{i}", owner=f"key{i % 16}")
        store.request_cancel(record.id)
        ids.append(record.id)
    return ids


def timed(call: Callable[[], object], times: int) -> list[float]:
    seconds = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def measure(store: StoreBase, retained: int, ops: int) -> dict[str, float]:
    ids = fill(store, retained)

    def admit() -> None:  # what EditService.submit asks under the store's queue lock
        store.queue_stats()
        store.active_jobs("key0")

    created: list[str] = []

    def create() -> None:
        record, _ = store.create(SOURCE, EditRequest(prompt="y", seeds=[1]), "fp", owner="key0", admit=admit)
        created.append(record.id)

    create_s = timed(create, ops)
    get_s = timed(lambda: store.get(random.choice(ids)), ops)
    pending = iter(created)
    claim_s = timed(lambda: store.claim(next(pending), "bench-worker"), ops)

    def sweep_pass() -> None:
        store.sweep()
        store.stale_running()
        store.unsent(300.0)

    sweep_s = timed(sweep_pass, 3)
    return {
        "submissions_per_s": ops / sum(create_s),
        **{
            f"{name}_p{q}": pct(values, q)
            for name, values in (("create", create_s), ("get", get_s), ("claim", claim_s))
            for q in (50, 99)
        },
        "sweep": statistics.median(sweep_s),
    }


def pct(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def open_store(kind: str, folder: Path, redis_url: str | None) -> StoreBase:
    if kind == "file":
        return JobStore(folder / "jobs", TTL_S, lease_s=120.0)
    if kind == "redis" and redis_url:
        return RedisJobStore(redis_url, folder / "files", TTL_S, lease_s=120.0, prefix=f"bench-{uuid.uuid4().hex[:8]}")
    raise SystemExit(f"--stores: unknown store {kind!r} (known: file, redis)")


@contextlib.contextmanager
def redis_server(url: str | None, wanted: bool) -> Iterator[str | None]:
    """`url`, or a `redis-server` started here on a free loopback port (no persistence) when Redis is wanted."""
    if url or not wanted:
        yield url
        return
    if shutil.which("redis-server") is None:
        raise SystemExit("--stores redis needs redis-server (apt-get install redis-server) or --redis-url")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="Retained jobs, comma-separated.")
    parser.add_argument("--ops", type=int, default=300, help="Creates, gets and claims timed per size.")
    parser.add_argument("--stores", default="file,redis", help="Stores to measure, comma-separated.")
    parser.add_argument("--redis-url", help="The Redis of the redis store (default: a redis-server started here).")
    args = parser.parse_args()
    stores = args.stores.split(",")
    print(
        "| store | retained jobs | submissions/s | create p50 / p99 ms | get p50 / p99 ms | claim p50 / p99 ms | sweep pass ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    with redis_server(args.redis_url, "redis" in stores) as redis_url:
        for kind in stores:
            for retained in (int(n) for n in args.sizes.split(",")):
                with tempfile.TemporaryDirectory(prefix="f2f-bench-") as folder:
                    row = measure(open_store(kind, Path(folder), redis_url), retained, args.ops)
                ms = {k: v * 1000 for k, v in row.items()}
                pairs = " | ".join(f"{ms[f'{op}_p50']:.2f} / {ms[f'{op}_p99']:.2f}" for op in ("create", "get", "claim"))
                print(f"| {kind} | {retained:,} | {row['submissions_per_s']:.0f} | {pairs} | {ms['sweep']:.1f} |", flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
