"""Shared by the serve-tier modules: one Ray on loopback with the f2f application, and HTTP helpers.

One cluster at a time (two would not fit two cores): each module starts one
in a module-scoped fixture through `running_app`, and stops it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "f2f" / "data" / "sample.png"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
ERROR_KEYS = {"message", "type", "param", "code"}
FINISHED = {"succeeded", "failed", "cancelled"}


RAY_DEFAULT_PORTS = {6379, 8265, 10001, 52365}  # a Ray started after the pick takes these (52365: its dashboard agent)


def free_port() -> int:
    """A free loopback port that is none of Ray's defaults: the Ray the app starts on would take it first."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in RAY_DEFAULT_PORTS:
            return port


@contextlib.contextmanager
def running_app(
    args: dict[str, Any],
    metrics_port: int | None = None,
    system_config: dict[str, Any] | None = None,
    logging_config: dict[str, Any] | None = None,
) -> Iterator[str]:
    """The application built from `args` at http://127.0.0.1:<port>, on a Ray started with the loopback settings
    (and `system_config`, Ray's `_system_config`); `logging_config`: the application's, as a Serve config gives it."""
    pytest.importorskip("ray")
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket paths must stay short
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        for key, value in LOOPBACK_ENV.items():
            env.setenv(key, value)
        import ray
        from ray import serve

        from f2f.serving.app import build_app

        extra: dict[str, Any] = {"_metrics_export_port": metrics_port} if metrics_port else {}
        if system_config:
            extra["_system_config"] = system_config
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, _temp_dir=ray_tmp, **extra)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            started = time.perf_counter()
            serve.run(build_app(args), name="f2f", logging_config=logging_config)
            print(f"\nserve.run (tiny checkpoints built, replicas loaded): {time.perf_counter() - started:.1f} s")
            yield f"http://127.0.0.1:{port}"
        finally:
            # The cluster just goes: Serve's graceful stop (test_serve_stop's subject) stops the deployments one
            # after another, each in Serve's 2 s graceful_shutdown_wait_loop_s, 6 to 8 s a module here.
            ray.shutdown()
            shutil.rmtree(ray_tmp, ignore_errors=True)


def tiny_config(models: Path, cache: Path, **more: Any) -> dict[str, Any]:
    """The tiny profile's config for a test's application: its checkpoints in the session's `models` folder (the
    `tiny_models` fixture: each profile's built once, on first use), its cache in a folder of the module's own."""
    return {"profile": "tiny", "models_dir": str(models), "cache_dir": str(cache), "seed": 3, **more}


def error_of(response: Any) -> dict[str, Any]:
    """The typed error body's `error`, checked for shape and for the absence of a traceback."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert "Traceback" not in body["error"]["message"]
    return body["error"]


def submit(base_url: str, data: dict[str, Any] | None = None, image: bytes | None = None, **kwargs: Any) -> Any:
    """POST /v1/edits as multipart."""
    import httpx

    files = {"image": ("source.png", image if image is not None else SAMPLE.read_bytes(), "image/png")}
    return httpx.post(f"{base_url}/v1/edits", data=data or {}, files=files, timeout=60, **kwargs)


def wait_for(
    base_url: str, job_id: str, until: Any = None, timeout_s: float = 120, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Poll the job until `until(job)` holds (default: it finished); the job."""
    import httpx

    until = until or (lambda job: job["status"] in FINISHED)
    deadline = time.monotonic() + timeout_s
    while True:
        job = httpx.get(f"{base_url}/v1/edits/{job_id}", timeout=30, headers=headers).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} did not get there in {timeout_s} s: {job}"
        time.sleep(0.1)


def replica_pid(deployment: str) -> int:
    """The process id of the one live replica of `deployment`, from Ray's actor table (this cluster's only)."""
    from ray._private import state

    actors = state.actors().values()
    pids = [a["Pid"] for a in actors if f"#{deployment}#" in a["Name"] and a["State"] == "ALIVE"]
    assert len(pids) == 1, f"not one live replica of {deployment}: {pids}"
    return pids[0]


def replica_memory(deployment: str) -> dict[str, int]:
    """Resident memory of the one live replica of `deployment`, read from its process: `rss` (shared pages
    included: Ray's object store is mapped into every worker) and `private` (its own anonymous memory)."""
    import psutil

    process = psutil.Process(replica_pid(deployment))
    status = Path(f"/proc/{process.pid}/status").read_text()
    anon = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("RssAnon:"))
    return {"rss": process.memory_info().rss, "private": anon * 1024}


def kill_replica(deployment: str) -> None:
    """Kill one replica actor of `deployment`, as kill -9 would (Serve starts another)."""
    import ray

    names = [a for a in ray.util.list_named_actors(all_namespaces=True) if f"#{deployment}#" in a["name"]]
    assert names, f"no replica of {deployment}"
    ray.kill(ray.get_actor(names[0]["name"], namespace=names[0]["namespace"]), no_restart=True)
