"""What the Ray Serve application adds on this machine, with the tiny profile on CPU.

    python bench/serve_overhead.py [--repeats 5] [--clients 2] [--seconds 5]

(a) Edit overhead: the median wall time of `--repeats` edits of the bundled
sample image, in-process (`f2f.pipeline.edit` over the loaded backends, then
writing the files every job keeps: the edit, the collage, the candidate
frames), as
the synchronous `POST /v1/images/edits`, and as a job (`POST /v1/edits`, then
its event stream `GET /v1/edits/{id}/events` until `done`), on 127.0.0.1
(same config, seed 0, one seed), each after one warm-up edit. The difference
is what the service adds: HTTP, multipart, the job store and the queue (the
file-system broker's polling, `jobs.broker_poll_s`), the wait for the job
to finish (pushed by the events hub), pickling images between replicas, the
handle calls. The in-process edit runs torch on one thread, as the replicas
do (Ray sets OMP_NUM_THREADS=1 for fractional CPUs). Two CPUs shared by five
replicas and the proxy make an edit inside the service run at another speed
than in-process, so the job's own times separate the service from the edit:
"around the worker's run" is the client's wall time less the worker's run
(claim to finish, its files written), i.e. upload, checks, the job store, the
queue, the wait for the result and the answer.
(b) Read throughput: `--clients` concurrent clients calling
`GET /v1/edits/{id}` (one finished job) and then `GET /healthz`, each in a loop
for `--seconds`.

Starts its own Ray on loopback only (no other Ray may be running: two
clusters do not fit two cores) and shuts it down at the end. Random weights:
the numbers time the plumbing, not a useful edit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "f2f" / "data" / "sample.png"
PROMPT = "make the sun set"
APP_ARGS: dict[str, Any] = {
    "config": {"profile": "tiny"},
    "vlm_num_cpus": 0.5,
    "generator_num_cpus": 0.5,
    "ingress_num_cpus": 0.25,
    "worker_num_cpus": 0.25,
    "auth": {"required": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def in_process_seconds(repeats: int) -> list[float]:
    """Wall seconds of `repeats` in-process edits after one warm-up, all in one event loop, each with the files a job
    writes (the edit, the collage and every candidate frame, PNGs at the service's level)."""
    import torch

    from f2f import edit, open_image
    from f2f.backends import build_backends, prepare_models
    from f2f.config import config_from_dict
    from f2f.result import write_outputs
    from f2f.serving.deployments.worker import FAST_PNG

    torch.set_num_threads(1)  # as in the replicas: the comparison holds the service, not the thread count
    config = config_from_dict({**APP_ARGS["config"], "seed": 0})
    prepare_models(config)  # builds the tiny checkpoints on first use; not timed
    image = open_image(SAMPLE, config.input)
    with build_backends(config) as backends:
        times = []
        for i in range(repeats + 1):
            start = time.perf_counter()
            result = await edit(image, PROMPT, vlm=backends.vlm, generator=backends.generator, config=config)
            with tempfile.TemporaryDirectory() as out:
                await asyncio.to_thread(write_outputs, result, out, save_frames=True, png_level=FAST_PNG)
            if i:
                times.append(time.perf_counter() - start)
    return times


def sync_edit(client: Any) -> str:
    """One `POST /v1/images/edits`; the job's id."""
    files = {"image": ("sample.png", SAMPLE.read_bytes(), "image/png")}
    response = client.post("/v1/images/edits", data={"prompt": PROMPT, "seed": "0", "n": "1"}, files=files)
    response.raise_for_status()
    return response.json()["f2f"]["id"]


def job_edit(client: Any) -> str:
    """One `POST /v1/edits` followed by its event stream until `done`; the job's id."""
    import json

    files = {"image": ("sample.png", SAMPLE.read_bytes(), "image/png")}
    response = client.post("/v1/edits", data={"prompt": PROMPT, "seed": "0", "n": "1"}, files=files)
    response.raise_for_status()
    job, event = response.json(), None
    with client.stream("GET", f"/v1/edits/{job['id']}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif event == "done" and line.startswith("data: "):
                job = json.loads(line[len("data: ") :])
    assert job["status"] == "succeeded", job["error"]
    return job["id"]


def http_seconds(base_url: str, repeats: int, edit_once: Any) -> dict[str, list[float]]:
    """`repeats` HTTP edits after one warm-up, each as a client sees it (`wall`) and by the job's own times: the edit
    (`inside`, its timings_s.total), waiting for a worker (`queued`: created -> started) and all the service did
    around the worker's run of it (`service`: wall less started -> finished, that run writing the job's files)."""
    import httpx

    found: dict[str, list[float]] = {"wall": [], "inside": [], "queued": [], "service": []}
    with httpx.Client(base_url=base_url, timeout=300) as client:
        for i in range(repeats + 1):
            start = time.perf_counter()
            job_id = edit_once(client)
            wall = time.perf_counter() - start
            job = client.get(f"/v1/edits/{job_id}").json()
            if i:
                found["wall"].append(wall)
                found["inside"].append(job["timings_s"]["total"])
                found["queued"].append(job["started_at"] - job["created_at"])
                found["service"].append(wall - (job["finished_at"] - job["started_at"]))
    return found


async def read_rate(base_url: str, path: str, clients: int, seconds: float) -> tuple[float, float]:
    """Successful `GET path` per second, and their median latency in ms, from `clients` concurrent loops."""
    import httpx

    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            if (await client.get(path)).status_code == 200:
                latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(loop(client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, 1000 * statistics.median(latencies)


def served(args: argparse.Namespace) -> dict[str, Any]:
    """Start Ray and the app on loopback, measure, and shut everything down."""
    os.environ.update(LOOPBACK_ENV)  # before Ray is imported: every Ray process inherits them
    import ray
    from ray import serve

    from f2f.serving.app import build_app

    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket paths must stay short
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, _temp_dir=ray_tmp, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(APP_ARGS), name="f2f")
        base_url = f"http://127.0.0.1:{port}"
        found = {"sync": http_seconds(base_url, args.repeats, sync_edit), "job": http_seconds(base_url, args.repeats, job_edit)}
        import httpx

        files = {"image": ("sample.png", SAMPLE.read_bytes(), "image/png")}
        job_id = httpx.post(f"{base_url}/v1/edits", data={"prompt": PROMPT}, files=files, timeout=60).json()["id"]
        found["get_job"] = asyncio.run(read_rate(base_url, f"/v1/edits/{job_id}", args.clients, args.seconds))
        found["healthz"] = asyncio.run(read_rate(base_url, "/healthz", args.clients, args.seconds))
        return found
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def machine() -> str:
    import ray
    import torch

    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed edits per path (median), after one warm-up")
    parser.add_argument("--clients", type=int, default=2, help="concurrent GET loops")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each GET loop runs")
    args = parser.parse_args()
    local = statistics.median(asyncio.run(in_process_seconds(args.repeats)))
    with tempfile.TemporaryDirectory(prefix="f2f-bench-jobs") as jobs_dir:
        APP_ARGS["jobs"] = {"dir": jobs_dir}
        found = served(args)
    print(f"machine: {machine()}")
    print("| measure | value |")
    print("|---|---|")
    print(f"| in-process edit, median s | {local:.2f} |")
    for name, label in (("sync", "POST /v1/images/edits (synchronous)"), ("job", "POST /v1/edits + its event stream")):
        median = {key: statistics.median(values) for key, values in found[name].items()}
        remote = median["wall"]
        print(f"| {label}, median s | {remote:.2f} |")
        print(f"| added by the service ({name}), s | {remote - local:+.2f} ({100 * (remote - local) / local:+.0f} %) |")
        print(f"| the edit inside the service ({name}, its timings_s.total), median s | {median['inside']:.2f} |")
        print(
            f"| around the worker's run ({name}: upload, checks, store, queue, the wait, the answer), median s | "
            f"{median['service']:.3f} (waiting for a worker {median['queued']:.3f}) |"
        )
    for name, label in (("get_job", "GET /v1/edits/{id}"), ("healthz", "GET /healthz")):
        rate, latency = found[name]
        print(f"| {label} with {args.clients} clients, req/s | {rate:.0f} (median {latency:.1f} ms) |")


if __name__ == "__main__":
    main()
