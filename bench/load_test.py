"""A bounded load test of the service on 127.0.0.1 with the tiny profile, in three scenarios.

    python bench/load_test.py [--clients 4] [--minutes 1] [--poll-interval 0.2]      # ledger (default)
    python bench/load_test.py --scenario held [--streams 0,10,50,200] [--sync 0,5,20] [--probes 20]
    python bench/load_test.py --scenario backlog [--jobs 24]

Each starts its own Ray and the application on loopback (no other Ray may run).

`held`: one long edit keeps the one worker busy; for each count of event
streams (on that edit) and synchronous edits (queued behind it) held open,
it times `/healthz`, `GET /v1/edits/{id}` and `POST /v1/edits` (`--probes`
each, a 5 s cap: a probe that gets no answer counts as 5 s and a timeout)
and prints p50/p99, timeouts and 503s per route. Run it from an older
checkout (`PYTHONPATH=<that tree>`) for the figures before a change: it
passes only args every version takes.

`backlog`: workers autoscale on the queue (1..4, one job each), generators on
their calls (1..2); `--jobs` edits are submitted at once and the replica
counts are printed every 2 s while the backlog drains.

`ledger`: `--clients` threads, each: `POST /v1/edits`, then `GET /v1/edits/{id}`
every `--poll-interval` s until the job finished, again and again until
`--minutes` have passed (every loop is bounded in count and time). Then it
waits for every accepted job and checks the ledger: no job lost (every 202
ends succeeded, failed or cancelled within 5 minutes), none duplicated (ids unique, as many
job folders in the store as 202 answers). Prints a table: accepted, refused
(503 with Retry-After: backpressure, by design), other errors (the error
budget), lost, duplicated, edits per minute, p50/p95 of the polls.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
SAMPLE = Path(__file__).resolve().parents[1] / "f2f" / "data" / "sample.png"
FINISHED = {"succeeded", "failed", "cancelled"}
JOB_WAIT_S = 300.0  # a job not finished this long after it was accepted counts as lost


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: list[str] = []
        self.refused = 0
        self.errors: list[int] = []
        self.polls: list[float] = []
        self.final: dict[str, str] = {}

    def add(self, field: str, value: Any) -> None:
        with self.lock:
            target = getattr(self, field)
            if isinstance(target, list):
                target.append(value)
            else:
                setattr(self, field, target + value)


def client(base_url: str, deadline: float, poll_s: float, ledger: Ledger) -> None:
    import httpx

    files = {"image": ("sample.png", SAMPLE.read_bytes(), "image/png")}
    with httpx.Client(base_url=base_url, timeout=60) as http:
        while time.monotonic() < deadline:
            response = http.post("/v1/edits", data={"prompt": "make the sun set"}, files=files)
            if response.status_code == 503:
                ledger.add("refused", 1)
                time.sleep(min(float(response.headers.get("retry-after", 1)), 2.0))
                continue
            if response.status_code != 202:
                ledger.add("errors", response.status_code)
                continue
            job_id = response.json()["id"]
            ledger.add("accepted", job_id)
            give_up = time.monotonic() + JOB_WAIT_S
            while time.monotonic() < give_up:
                started = time.perf_counter()
                polled = http.get(f"/v1/edits/{job_id}")
                ledger.add("polls", time.perf_counter() - started)
                if polled.status_code != 200:
                    ledger.add("errors", polled.status_code)
                    break
                if polled.json()["status"] in FINISHED:
                    with ledger.lock:
                        ledger.final[job_id] = polled.json()["status"]
                    break
                time.sleep(poll_s)


@contextlib.contextmanager
def running_app(app_args: dict[str, Any]) -> Iterator[str]:
    """The application on its own loopback Ray; its base URL."""
    os.environ.update(LOOPBACK_ENV)
    import ray
    from ray import serve

    from f2f.serving.app import build_app

    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, _temp_dir=ray_tmp, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(app_args), name="f2f")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def machine() -> str:
    import ray

    return f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, ray {ray.__version__}"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


PROBE_CAP_S = 5.0


def _probe_once(http: Any, route: str, job_id: str, files: dict[str, Any]) -> tuple[float, int | None]:
    """One probe's seconds and status (None: no answer within the cap)."""
    started = time.perf_counter()
    try:
        if route == "/healthz":
            status = http.get("/healthz", timeout=PROBE_CAP_S).status_code
        elif route == "GET job":
            status = http.get(f"/v1/edits/{job_id}", timeout=PROBE_CAP_S).status_code
        else:
            answer = http.post("/v1/edits", data={"prompt": "probe"}, files=files, timeout=PROBE_CAP_S)
            status = answer.status_code
            if status == 202:
                http.delete(f"/v1/edits/{answer.json()['id']}", timeout=PROBE_CAP_S)
    except Exception:
        return PROBE_CAP_S, None
    return time.perf_counter() - started, status


def _hold(
    base_url: str, job_id: str, streams: int, sync: int, stop: threading.Event, opened: list[int]
) -> list[threading.Thread]:
    """Threads holding `streams` event streams and `sync` synchronous edits; each stream's status goes to `opened`."""
    import httpx

    def stream() -> None:
        with contextlib.suppress(Exception), httpx.stream("GET", f"{base_url}/v1/edits/{job_id}/events", timeout=600) as r:
            opened.append(r.status_code)
            for _ in r.iter_lines():
                if stop.is_set():
                    return

    def edit() -> None:
        files = {"image": ("sample.png", SAMPLE.read_bytes(), "image/png")}
        with contextlib.suppress(Exception):
            httpx.post(f"{base_url}/v1/images/edits", data={"prompt": "held"}, files=files, timeout=600)

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(streams)]
    threads += [threading.Thread(target=edit, daemon=True) for _ in range(sync)]
    for thread in threads:
        thread.start()
    return threads


def held(stream_counts: list[int], sync_counts: list[int], probes: int) -> None:
    import httpx

    jobs_dir = Path(tempfile.mkdtemp(prefix="f2f-held-jobs"))
    app_args = {
        "config": {"profile": "tiny", "seed": 0},
        "worker_max_concurrent_jobs": 1,
        "auth": {"required": False},
        "jobs": {"dir": str(jobs_dir), "max_queued": 256, "poll_interval_s": 0.25},
    }
    from f2f.serving.deployments.args import AppArgs

    if "max_waiting_requests" in AppArgs.model_fields:  # this version bounds long waits: room for every held one
        app_args["max_waiting_requests"] = max(stream_counts) + max(sync_counts) + 10
    files = {"image": ("sample.png", SAMPLE.read_bytes(), "image/png")}
    rows = []
    with running_app(app_args) as base_url, httpx.Client(base_url=base_url) as http:
        for streams in stream_counts:
            for sync in sync_counts:
                long_job = http.post("/v1/edits", data={"prompt": "long", "steps": "1000"}, files=files, timeout=60).json()["id"]
                stop, opened = threading.Event(), []
                threads = _hold(base_url, long_job, streams, sync, stop, opened)
                time.sleep(3 + streams / 50)  # the held requests reach the ingress
                for route in ("/healthz", "GET job", "POST job"):
                    seconds, statuses = zip(*(_probe_once(http, route, long_job, files) for _ in range(probes)), strict=True)
                    rows.append((streams, sync, opened.count(200), route, list(seconds), list(statuses)))
                stop.set()
                for entry in (jobs_dir / "jobs").iterdir():  # cancel everything: the held requests end
                    with contextlib.suppress(Exception):
                        http.delete(f"/v1/edits/{entry.name}", timeout=30)
                for thread in threads:
                    thread.join(30)
                time.sleep(2)
    shutil.rmtree(jobs_dir, ignore_errors=True)
    print(machine())
    print("| streams held (opened) | sync edits held | route | p50 | p99 | no answer in 5 s | 503 |")
    print("|---|---|---|---|---|---|---|")
    for streams, sync, opened_ok, route, seconds, statuses in rows:
        p50, p99 = 1000 * statistics.median(seconds), 1000 * percentile(seconds, 0.99)
        timeouts, refused = statuses.count(None), statuses.count(503)
        held_streams = f"{streams} ({opened_ok})"
        print(f"| {held_streams} | {sync} | {route} | {p50:.0f} ms | {p99:.0f} ms | {timeouts}/{len(statuses)} | {refused} |")


def backlog(jobs: int) -> None:
    import httpx
    from ray import serve

    jobs_dir = Path(tempfile.mkdtemp(prefix="f2f-backlog-jobs"))
    app_args = {
        "config": {"profile": "tiny", "seed": 0},
        "worker_max_concurrent_jobs": 1,
        "worker_autoscaling": {"min_replicas": 1, "max_replicas": 4, "upscale_delay_s": 0, "downscale_delay_s": 10},
        "generator_autoscaling": {"min_replicas": 1, "max_replicas": 2, "upscale_delay_s": 0, "downscale_delay_s": 10},
        "auth": {"required": False},
        "jobs": {"dir": str(jobs_dir), "max_queued": 256},
    }
    files = {"image": ("sample.png", SAMPLE.read_bytes(), "image/png")}
    samples = []
    with running_app(app_args) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        ids = [
            http.post("/v1/edits", data={"prompt": f"backlog {i}", "steps": "30"}, files=files).json()["id"] for i in range(jobs)
        ]
        started, deadline = time.monotonic(), time.monotonic() + 900
        while time.monotonic() < deadline:
            done = sum(http.get(f"/v1/edits/{job_id}").json()["status"] in FINISHED for job_id in ids)
            deployments = serve.status().applications["f2f"].deployments
            replicas = {name: d.replica_states.get("RUNNING", 0) for name, d in deployments.items()}
            samples.append((time.monotonic() - started, jobs - done, replicas["EditWorker"], replicas["Generator"]))
            if done == jobs:
                break
            time.sleep(2)
    shutil.rmtree(jobs_dir, ignore_errors=True)
    print(machine())
    print(f"| seconds | jobs not finished (of {jobs}) | worker replicas | generator replicas |")
    print("|---|---|---|---|")
    for seconds, left, workers, generators in samples:
        print(f"| {seconds:.0f} | {left} | {workers} | {generators} |")


def _counts(text: str) -> list[int]:
    values = [int(part) for part in text.split(",")]
    if any(not 0 <= value <= 500 for value in values):
        raise argparse.ArgumentTypeError("counts from 0 to 500, comma-separated")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("ledger", "held", "backlog"), default="ledger")
    parser.add_argument("--streams", type=_counts, default=[0, 10, 50, 200], help="held: event streams held open")
    parser.add_argument("--sync", type=_counts, default=[0, 5, 20], help="held: synchronous edits held open")
    parser.add_argument("--probes", type=int, default=20, choices=range(1, 201), help="held: probes per route")
    parser.add_argument("--jobs", type=int, default=24, choices=range(1, 201), help="backlog: edits submitted at once")
    parser.add_argument("--clients", type=int, default=4, help="ledger: concurrent clients (1..32)", choices=range(1, 33))
    parser.add_argument("--minutes", type=float, default=1.0, help="ledger: how long clients submit (at most 30)")
    parser.add_argument("--poll-interval", type=float, default=0.2, help="ledger: seconds between polls of one job")
    args = parser.parse_args()
    if args.scenario == "held":
        return held(args.streams, args.sync, args.probes)
    if args.scenario == "backlog":
        return backlog(args.jobs)
    return ledger(args)


def ledger(args: argparse.Namespace) -> None:
    minutes = min(args.minutes, 30.0)
    jobs_dir = tempfile.mkdtemp(prefix="f2f-load-jobs")
    app_args = {
        "config": {"profile": "tiny", "seed": 0},
        "vlm_num_cpus": 0.5,
        "generator_num_cpus": 0.5,
        "auth": {"required": False},
        "jobs": {"dir": jobs_dir, "max_queued": 8, "retry_after_s": 1},
    }
    ledger = Ledger()
    try:
        with running_app(app_args) as base_url:
            started = time.monotonic()
            deadline = started + 60 * minutes
            threads = [
                threading.Thread(target=client, args=(base_url, deadline, args.poll_interval, ledger))
                for _ in range(args.clients)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60 * minutes + 600)
            elapsed = time.monotonic() - started
            stored = len(list((Path(jobs_dir) / "jobs").iterdir()))
    finally:
        shutil.rmtree(jobs_dir, ignore_errors=True)

    accepted = ledger.accepted
    lost = [job for job in accepted if job not in ledger.final]
    duplicated = len(accepted) - len(set(accepted)) + max(0, stored - len(accepted))
    succeeded = sum(status == "succeeded" for status in ledger.final.values())
    polls = sorted(ledger.polls)
    p95 = polls[int(0.95 * (len(polls) - 1))] if polls else float("nan")
    print(machine())
    print(f"| {args.clients} clients, {minutes:g} min, tiny profile | value |")
    print("|---|---|")
    print(f"| edits accepted (202) | {len(accepted)} |")
    print(f"| succeeded / failed or cancelled | {succeeded} / {len(ledger.final) - succeeded} |")
    print(f"| refused with 503 + Retry-After (backpressure) | {ledger.refused} |")
    print(f"| other errors (error budget used) | {len(ledger.errors)} {sorted(set(ledger.errors))} |")
    print(f"| lost jobs / duplicated jobs | {len(lost)} / {duplicated} |")
    print(f"| edits per minute | {60 * succeeded / elapsed:.1f} |")
    p50_ms, p95_ms = 1000 * statistics.median(polls), 1000 * p95
    print(f"| GET /v1/edits/{{id}} p50 / p95 | {p50_ms:.1f} ms / {p95_ms:.1f} ms ({len(polls)} polls) |")


if __name__ == "__main__":
    main()
