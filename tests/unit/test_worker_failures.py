"""The edit worker's failures that need no model: a volume filling up mid-outputs, a replica's error wrapped by Ray,
a store that fails under the job watcher, and a lease lost mid-edit (the job store on a tmp dir, a fake edit)."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from f2f.config import F2FConfig
from f2f.errors import F2FError, GeneratorOutOfMemory, unwrap
from f2f.protocols import CancelToken, Progress
from f2f.serving.api.wire import JobError
from f2f.serving.deployments import worker as worker_deployment
from f2f.serving.deployments.worker import LEASE_LOST, ConsumerWatch, EditWorker, _JobWatcher
from f2f.serving.jobs import EditRequest, JobRecord, JobStore, Lease, LeaseLost, StorageFull, StoreUnavailable
from f2f.serving.jobs import file_store as jobs
from f2f.serving.jobs.queue import JobsArgs


@pytest.fixture
def worker(tmp_path: Path) -> EditWorker:
    """A worker with a job store and a config, and no model handles (only its output writing is used)."""
    worker = object.__new__(EditWorker)
    worker.store, worker.config = JobStore(tmp_path / "store", ttl_s=60), F2FConfig()
    return worker


def _claimed(store: JobStore, request: EditRequest | None = None, worker_id: str = "w1") -> tuple[JobRecord, Lease]:
    record, _ = store.create(b"source", request or EditRequest(prompt="p", seeds=[1]), "fp")
    claimed = store.claim(record.id, worker_id)
    assert claimed is not None
    return claimed, Lease.of(claimed)


def test_a_volume_that_fills_up_mid_outputs_is_storage_full_and_the_outputs_are_removed(
    worker: EditWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, lease = _claimed(worker.store, EditRequest(prompt="p", seeds=[1], return_frames=True))
    folder = worker.store.job_dir(record.id)
    scratch = worker.store.outputs_dir(lease)

    def fills_up(result: Any, out: Path, **_: Any) -> None:
        (out / "edited.png").write_bytes(b"edited")
        (out / "candidates").mkdir()
        (out / "candidates" / "frame_004.png").write_bytes(b"frame")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "collage.png"))

    monkeypatch.setattr(worker_deployment, "write_outputs", fills_up)
    with pytest.raises(StorageFull, match=f"the outputs of job {record.id} could not be written"):
        worker._keep_outputs(lease, record, None)  # type: ignore[arg-type]
    assert sorted(os.listdir(folder)) == [".lock", "job.json", "source.png"]  # nothing was kept
    assert not scratch.exists()  # and the attempt's local files are gone
    assert worker.store.get(record.id).status == "running"  # the worker ends it as failed (storage_full)


def test_another_write_error_keeps_its_kind(worker: EditWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    record, lease = _claimed(worker.store)

    def denied(result: Any, out: Path, **_: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(out))

    monkeypatch.setattr(worker_deployment, "write_outputs", denied)
    with pytest.raises(PermissionError):
        worker._keep_outputs(lease, record, None)  # type: ignore[arg-type]


def test_a_replica_error_wrapped_by_ray_is_still_f2f_error_and_its_message_is_the_replicas() -> None:
    from ray.exceptions import RayTaskError

    original = GeneratorOutOfMemory("the video did not fit in cuda:0 memory")
    wrapped = RayTaskError("generate_stream", "Traceback (most recent call last): ...", original).as_instanceof_cause()
    assert isinstance(wrapped, F2FError) and wrapped.code == "out_of_memory"  # the worker's `except F2FError` sees it
    assert str(wrapped) != str(original)  # Ray's text: the process, not the replica's message
    assert unwrap(wrapped) is original and unwrap(original) is original


# --- the job watcher and lost leases ---------------------------------------------------------------

FAST = JobsArgs(lease_s=60.0, heartbeat_s=0.05, poll_interval_s=0.01)  # polls often; the lease never lapses by itself
TAKES_TOO_LONG_S = 30.0  # an edit that would run this long is stopped by the watcher long before


def _take_over(store: JobStore, job_id: str) -> JobRecord:
    """What the sweep and another worker do to a job whose worker went silent: queue it again, claim it (attempt 2)."""
    store.requeue(job_id)
    taken = store.claim(job_id, "w2")
    assert taken is not None and taken.attempts == 2
    return taken


def test_the_watcher_keeps_the_lease_through_failing_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A volume failing for a few writes: each failed heartbeat is logged and tried again, the edit runs on."""
    store = JobStore(tmp_path, ttl_s=60, lease_s=FAST.lease_s)
    record, lease = _claimed(store)
    real_write, writes = jobs._atomic_write, {"failed": 0, "written": 0}

    def flaky(path: Path, data: bytes) -> None:
        if writes["failed"] < 3:
            writes["failed"] += 1
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        real_write(path, data)
        writes["written"] += 1

    monkeypatch.setattr(jobs, "_atomic_write", flaky)

    async def edit() -> None:  # runs until two heartbeats got through after the failures
        while writes["written"] < 2:
            await asyncio.sleep(0.01)

    async def run() -> _JobWatcher:
        cancel = CancelToken()
        watcher = _JobWatcher(store, lease, cancel, FAST)
        task = asyncio.create_task(edit())
        watch = asyncio.create_task(watcher.watch(task))
        await asyncio.wait_for(task, TAKES_TOO_LONG_S)  # a watcher that died at the first error never gets here
        await watch
        assert not cancel.cancelled
        return watcher

    watcher = asyncio.run(run())
    assert watcher.lost is None and writes == {"failed": 3, "written": 2}
    beaten = store.get(record.id)
    assert beaten.heartbeat_at is not None and record.heartbeat_at is not None and beaten.heartbeat_at > record.heartbeat_at


@pytest.mark.parametrize("with_progress", [False, True], ids=["heartbeat", "progress"])
def test_the_watcher_stops_the_edit_once_the_job_is_anothers(tmp_path: Path, with_progress: bool) -> None:
    store = JobStore(tmp_path, ttl_s=60, lease_s=FAST.lease_s)
    record, lease = _claimed(store)
    taken = _take_over(store, record.id)

    async def run() -> tuple[_JobWatcher, asyncio.Task[None], CancelToken]:
        cancel = CancelToken()
        watcher = _JobWatcher(store, lease, cancel, FAST)
        task = asyncio.create_task(asyncio.sleep(TAKES_TOO_LONG_S))
        if with_progress:
            watcher.on_progress(Progress(stage="generate", step=3, total=10))
        await asyncio.wait_for(watcher.watch(task), TAKES_TOO_LONG_S)
        await asyncio.wait({task})
        return watcher, task, cancel

    watcher, task, cancel = asyncio.run(run())
    assert isinstance(watcher.lost, LeaseLost) and task.cancelled() and cancel.cancelled
    assert store.get(record.id) == taken  # the new attempt's record, untouched: no progress, no heartbeat of attempt 1


def test_the_watcher_writes_previews_throttled_and_the_latest_before_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop faster than `PREVIEW_MIN_S`: one preview written at once, none more while it runs, the latest once done."""
    from PIL import Image

    from f2f.serving.jobs.record import PREVIEW

    monkeypatch.setattr(worker_deployment, "PREVIEW_MIN_S", TAKES_TOO_LONG_S)
    store = JobStore(tmp_path, ttl_s=60, lease_s=FAST.lease_s)
    record, lease = _claimed(store, EditRequest(prompt="p", seeds=[1], previews=True))
    steps = 20

    async def run() -> list[int | None]:
        watcher = _JobWatcher(store, lease, CancelToken(), FAST)
        seen: list[int | None] = []

        async def edit() -> None:  # a preview every step
            for step in range(1, steps + 1):
                watcher.on_progress(Progress("generate", step, steps, Image.new("RGB", (8, 6), (step, 0, 0))))
                await asyncio.sleep(0.02)
                preview = store.get(record.id).preview
                seen.append(None if preview is None else preview.step)

        task = asyncio.create_task(edit())
        await asyncio.wait_for(watcher.watch(task), TAKES_TOO_LONG_S)
        return seen

    seen = asyncio.run(run())
    first = [step for step in seen if step is not None]
    assert first and len(set(first)) == 1 and first[0] < steps  # one written while it ran: the loop did not flood
    written = store.get(record.id).preview
    assert written is not None and (written.step, written.total, written.count) == (steps, steps, 2)  # the latest
    with Image.open(store.job_dir(record.id) / PREVIEW) as image:
        assert image.size == (8, 6) and image.getpixel((0, 0)) == (steps, 0, 0)


def _worker_for_jobs(worker: EditWorker, jobs_args: JobsArgs) -> EditWorker:
    """The worker fixture, able to run a job end to end with a fake edit (`_edit`)."""
    worker.jobs, worker.worker_id, worker.running, worker.handing_back = jobs_args, "w1", {}, set()
    worker.draining, worker.busy, worker.lost_replica = False, 0, ()
    worker.watch = ConsumerWatch(jobs_args.stalled_after_s)
    return worker


@pytest.fixture(params=["file", "redis"])
def any_worker(request: pytest.FixtureRequest, worker: EditWorker, tmp_path: Path) -> EditWorker:
    """The worker on the file store, or on the Redis store with its objects in a bucket (both real, on loopback)."""
    if request.param == "redis":
        import uuid

        from f2f.serving.jobs import open_objects
        from f2f.serving.jobs.redis_store import RedisJobStore

        prefix = f"worker-{uuid.uuid4().hex[:8]}"
        objects = open_objects(f"s3://f2f/{prefix}", endpoint_url=request.getfixturevalue("s3_bucket"))
        worker.store = RedisJobStore(
            request.getfixturevalue("redis_url"), tmp_path / "scratch", 60, prefix=prefix, objects=objects
        )
    return worker


@pytest.mark.parametrize("noticed_by", ["watcher", "outputs"])
def test_a_worker_whose_job_was_taken_over_stops_and_changes_nothing(
    any_worker: EditWorker, monkeypatch: pytest.MonkeyPatch, noticed_by: str
) -> None:
    """Its job queued again and claimed by another worker mid-edit (this one was paused past its lease): the edit is
    stopped by the watcher, or, if it ended first, its outputs are refused; the job stays the other worker's."""
    worker = any_worker
    slow_poll = JobsArgs(lease_s=120.0, heartbeat_s=60.0, poll_interval_s=5.0)  # the watcher does not look in time
    _worker_for_jobs(worker, FAST if noticed_by == "watcher" else slow_poll)
    lost: list[str] = []
    monkeypatch.setattr(worker_deployment.metrics, "record_lease_lost", lambda: lost.append("lost"))
    record, _ = worker.store.create(b"source", EditRequest(prompt="p", seeds=[1]), "fp")
    taken: list[JobRecord] = []

    async def edit(record: JobRecord, watcher: _JobWatcher, cancel: CancelToken) -> Any:
        taken.append(await asyncio.to_thread(_take_over, worker.store, record.id))
        if noticed_by == "watcher":
            await asyncio.sleep(TAKES_TOO_LONG_S)
        return object()  # a result; its outputs are never written

    worker._edit = edit  # type: ignore[method-assign]
    status = asyncio.run(asyncio.wait_for(worker.run(record.id), TAKES_TOO_LONG_S))
    assert (status, lost) == (LEASE_LOST, ["lost"])
    assert worker.store.get(record.id) == taken[0]
    assert [key for key in worker.store.objects.keys(record.id) if key.endswith(".png")] == [f"{record.id}/source.png"]


def test_a_finish_the_store_cannot_write_is_tried_again(worker: EditWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A volume failing for a moment when the job ends: the end is written once it recovers, not left to the lease."""
    _worker_for_jobs(worker, FAST)
    record, lease = _claimed(worker.store)
    real_write, failed = jobs._atomic_write, []

    def flaky(path: Path, data: bytes) -> None:
        if len(failed) < 2:
            failed.append(path.name)
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        real_write(path, data)

    monkeypatch.setattr(jobs, "_atomic_write", flaky)
    error = JobError(message="the edit failed; see the server log", code="edit_failed")
    assert asyncio.run(worker._finish(lease, "failed", error)) == "failed"
    assert failed == ["job.json", "job.json"] and worker.store.get(record.id).status == "failed"


def test_a_store_away_for_a_moment_is_waited_for_and_one_away_for_a_lease_is_given_up() -> None:
    """The outputs and the end of an edit that ends while the store is away (Redis restarting): tried again every
    heartbeat, so the job is not failed for the store's hiccup (the restart test saw it fail with store_unavailable);
    a full volume is not waited for where it fails the job (the outputs); a store away for a whole lease is raised."""
    worker = _worker_for_jobs(object.__new__(EditWorker), JobsArgs(lease_s=0.5, heartbeat_s=0.05))
    calls: list[int] = []

    def away_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise StoreUnavailable("the job store (Redis) failed on job j (ConnectionError); retry later")
        return "written"

    assert asyncio.run(worker._retried(away_twice, "its outputs", "j")) == "written" and len(calls) == 3

    def full() -> None:
        calls.append(1)
        raise StorageFull("the job volume is full")

    calls.clear()
    with pytest.raises(StorageFull):
        asyncio.run(worker._retried(full, "its outputs", "j", retry_full=False))
    assert len(calls) == 1

    def away() -> None:
        raise StoreUnavailable("away")

    with pytest.raises(StoreUnavailable):
        asyncio.run(worker._retried(away, "its end", "j"))
