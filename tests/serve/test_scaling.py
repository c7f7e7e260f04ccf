"""The GPUs follow the queue, a consumer that stops taking jobs is replaced, and a rollout loses and delays nothing
(real Ray Serve, real HTTP on 127.0.0.1, the file-system broker).

Edit workers run one job each and autoscale on the broker's queue (`f2f.serving.scaling.JobQueuePolicy`) from 1
to 3; generators autoscale on their calls from 0 to 2. Leases are ten minutes long: a job that waited for one
would time the tests out, so every job here that finishes was handed on without a lease running out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")

from harness import running_app, submit, tiny_config, wait_for  # noqa: E402

LEASE_S = 600.0
Paths = tuple[Path, Path, Path]  # the tiny models, the cache, the jobs


def _args(paths: Paths, **changes: Any) -> dict[str, Any]:
    models, cache, jobs_dir = paths
    return {
        "config": tiny_config(models, cache),
        "worker_max_concurrent_jobs": 1,
        "worker_autoscaling": {"min_replicas": 1, "max_replicas": 3, "upscale_delay_s": 0, "downscale_delay_s": 4},
        "generator_autoscaling": {
            "min_replicas": 0,
            "max_replicas": 2,
            "target_ongoing_requests": 1,
            "upscale_delay_s": 0,
            "downscale_delay_s": 4,
        },
        "worker_graceful_shutdown_timeout_s": 30,
        "auth": {"required": False},
        "jobs": {
            "dir": str(jobs_dir),
            "lease_s": LEASE_S,
            "heartbeat_s": 1,
            "sweep_interval_s": 1,
            "poll_interval_s": 0.1,
            "stalled_after_s": 3,
        },
        **changes,
    }


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Paths:
    return tiny_models, tmp_path_factory.mktemp("f2f-cache"), tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def base_url(paths: Paths) -> Iterator[str]:
    with running_app(_args(paths)) as url:
        yield url


def _replicas(deployment: str) -> int:
    """Running replicas of `deployment`, as Serve counts them."""
    from ray import serve

    status = serve.status().applications["f2f"].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


class ReplicaLog:
    """The replica counts of the worker and generator deployments, sampled every half second while the `with` block
    runs."""

    every_s = 0.5

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int]] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append((time.monotonic() - self.started, _replicas("EditWorker"), _replicas("Generator")))

    def most(self, column: int) -> int:
        return max((sample[column] for sample in self.samples), default=0)

    def __enter__(self) -> ReplicaLog:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(10)


def _eventually(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_workers_and_generators_follow_the_backlog_and_generators_scale_to_zero(base_url: str) -> None:
    with ReplicaLog() as log:
        ids = [submit(base_url, {"prompt": f"backlog {i}", "steps": "150"}).json()["id"] for i in range(8)]
        jobs = [wait_for(base_url, job_id, timeout_s=300) for job_id in ids]
        assert [job["status"] for job in jobs] == ["succeeded"] * len(ids)
        _eventually(lambda: _replicas("Generator") == 0, 120, "the generators to scale to zero")
    print(f"\nreplicas (seconds, workers, generators): {log.samples[::4]}")
    assert log.most(1) >= 2, "the workers never scaled past one with 8 jobs waiting"
    assert log.most(2) >= 2, "the generators never followed the workers"
    # From zero, the next edit starts a generator (a cold start) and succeeds.
    job = wait_for(base_url, submit(base_url, {"prompt": "from zero", "steps": "2"}).json()["id"], timeout_s=180)
    assert job["status"] == "succeeded"


def _celery_control(paths: Paths) -> Any:
    """A Celery app on the service's broker, for its control commands (as an operator's `celery control` would)."""
    from celery import Celery

    from f2f.serving.jobs.queue import JobsArgs, broker_settings

    url, options = broker_settings(JobsArgs(dir=paths[2]), paths[2])
    app = Celery("control", broker=url, backend="disabled://")
    app.conf.broker_transport_options = options
    return app


def _worker_actors() -> set[str]:
    from ray._private import state

    return {a["Name"] for a in state.actors().values() if "#EditWorker#" in a["Name"] and a["State"] == "ALIVE"}


def test_a_consumer_that_stops_taking_jobs_is_replaced_and_its_waiting_job_runs(base_url: str, paths: Paths) -> None:
    before = _worker_actors()
    # Every consumer stops taking messages from the job queue: alive, but taking nothing.
    _celery_control(paths).control.cancel_consumer("f2f-edits", reply=False)
    time.sleep(2)
    job_id = submit(base_url, {"prompt": "waits for a live consumer", "steps": "2"}).json()["id"]
    job = wait_for(base_url, job_id, timeout_s=180)
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert _worker_actors() - before, "no worker replica was replaced"


def test_a_rollout_hands_running_jobs_back_and_loses_delays_or_repeats_nothing(base_url: str, paths: Paths) -> None:
    from ray import serve

    from f2f.serving.app import build_app
    from f2f.serving.jobs import JobStore

    store = JobStore(paths[2], ttl_s=3600, lease_s=LEASE_S)  # the service's own job files, read from here
    # A changed worker config, built before any job runs: the rollout replaces every worker replica the moment
    # the first job is seen running (Serve stops the outdated replicas at once), whatever this machine's speed.
    changed = build_app(_args(paths, worker_max_concurrent_jobs=2))
    ids = [submit(base_url, {"prompt": f"across a rollout {i}", "steps": "1000"}).json()["id"] for i in range(3)]
    wait_for(base_url, ids[0], lambda job: job["status"] == "running" and (job.get("progress") or {}).get("step", 0) > 3)
    first_worker = store.get(ids[0]).worker  # its old replica's (a finish keeps it; a hand-back clears it)
    before, started = _worker_actors(), time.monotonic()
    serve.run(changed, name="f2f")
    jobs = [wait_for(base_url, job_id, timeout_s=240) for job_id in ids]
    took_s = time.monotonic() - started
    finished_by = {job_id: store.get(job_id).worker for job_id in ids}
    print(f"\nthe first job's worker: {first_worker}, the workers that finished each: {finished_by}; {jobs[0]['timings_s']}")
    assert not (_worker_actors() & before), "the rollout replaced no worker"
    assert [job["status"] for job in jobs] == ["succeeded"] * len(ids)
    # The first job was running on an old replica and finished on a new one, and no job's attempt was counted:
    # handed back, neither failed nor run twice (a lease that lapsed would have taken LEASE_S, below)
    assert first_worker is not None and finished_by[ids[0]] != first_worker, "the running job was not handed back"
    assert [job["attempts"] for job in jobs] == [1] * len(ids)
    # Relative to the lease, not a machine's speed: a job that waited out its lease took at least LEASE_S (600 s).
    assert took_s < LEASE_S / 2
