"""A bounded load test of the service on 127.0.0.1 with the tiny profile: clients submit edits and poll them.

    python bench/load_test.py [--clients 4] [--minutes 1] [--poll-interval 0.2]

Starts its own Ray and the application on loopback (no other Ray may run),
then `--clients` threads, each: `POST /v1/edits`, then `GET /v1/edits/{id}`
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
import os
import platform
import shutil
import socket
import statistics
import tempfile
import threading
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (1..32)", choices=range(1, 33))
    parser.add_argument("--minutes", type=float, default=1.0, help="how long clients submit (at most 30)")
    parser.add_argument("--poll-interval", type=float, default=0.2, help="seconds between polls of one job")
    args = parser.parse_args()
    minutes = min(args.minutes, 30.0)
    os.environ.update(LOOPBACK_ENV)
    import ray
    from ray import serve

    from f2f.serving.app import build_app

    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    jobs_dir = tempfile.mkdtemp(prefix="f2f-load-jobs")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app_args = {
        "config": {"profile": "tiny", "seed": 0},
        "vlm_num_cpus": 0.5,
        "generator_num_cpus": 0.5,
        "auth": {"required": False},
        "jobs": {"dir": jobs_dir, "max_queued": 8, "retry_after_s": 1},
    }
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, _temp_dir=ray_tmp, log_to_driver=False)
    ledger = Ledger()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(app_args), name="f2f")
        base_url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        deadline = started + 60 * minutes
        threads = [
            threading.Thread(target=client, args=(base_url, deadline, args.poll_interval, ledger)) for _ in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60 * minutes + 600)
        elapsed = time.monotonic() - started
        stored = len(list((Path(jobs_dir) / "jobs").iterdir()))
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(jobs_dir, ignore_errors=True)

    accepted = ledger.accepted
    lost = [job for job in accepted if job not in ledger.final]
    duplicated = len(accepted) - len(set(accepted)) + max(0, stored - len(accepted))
    succeeded = sum(status == "succeeded" for status in ledger.final.values())
    polls = sorted(ledger.polls)
    p95 = polls[int(0.95 * (len(polls) - 1))] if polls else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, ray {ray.__version__}")
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
