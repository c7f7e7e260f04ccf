"""The edit worker: consumes job ids from the queue and runs each edit against the model deployments.

Rules:

- The class is made a Ray Serve task consumer by the app builder
  (`task_consumer(task_processor_config=...)`); Celery calls `run_job` on one
  of its threads, which hands the job to the replica's event loop and waits.
  Jobs run at once per replica: the deployment's `max_ongoing_requests`.
- A job runs only if this worker claims it in the job store (queued, or
  running under a lost worker's stale lease): a message delivered twice, or
  a job already finished or cancelled, is skipped, never run twice.
- The replica touches its file in the store (`workers/<id>`) every
  `heartbeat_s`; once it has been silent for `lease_s`, the ingress sends
  every waiting job again (a message it took but never claimed is not lost).
- Every change of a job record this worker writes is pushed to the events
  hub (`f2f.serving.events`), which wakes the requests waiting for it.
- The stored source was checked by the ingress: it is loaded and run as it
  is (`CheckedEdit.of_record`, `f2f.pipeline.run_edit`), never checked again.
- While it runs: stage and denoising progress go to the job record, the
  lease is refreshed every `heartbeat_s`, and a cancel request (DELETE) is
  noticed within `poll_interval_s` and stops the edit (a running video at
  its next denoising step).
- A model replica lost mid-job (Ray actor errors, or a split generator
  that lost a rank) is retried after a back-off (5 s, then doubling), up to
  `max_attempts` tries in all; bad input is `failed` with the
  field named; an error f2f names (`F2FError`: the video ran out of
  accelerator memory, the job volume is full, the VLM endpoint failed) is
  `failed` with its code and message; anything else is `failed` with a
  generic message (logged).
- Outputs are written as `f2f edit` writes them (edited.png, collage.png,
  result.json, candidates/ always: the caller may select another frame of
  the path, `f2f.serving.frames`; video.mp4 with `return_video`;
  ranked/<k>.png, the k-th best seed's edit, with several seeds), before
  the record says `succeeded`. If the volume fills
  up meanwhile, the outputs written so far are removed and the job fails
  with `storage_full`; if not even the record can be written, the job stays
  running, its lease lapses and it is queued again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from f2f.config import F2FConfig
from f2f.errors import EditCancelled, F2FError, InvalidInput, ReplicaLost, unwrap
from f2f.pipeline import run_edit
from f2f.protocols import CancelToken, Progress
from f2f.request import CheckedEdit
from f2f.result import EditResult, write_atomic, write_outputs
from f2f.serving import metrics
from f2f.serving.args import AppArgs, replica_options
from f2f.serving.broker import TASK_NAME, JobsArgs
from f2f.serving.events import EventsClient
from f2f.serving.frames import frame_links
from f2f.serving.jobs import JobRecord, JobStore, StorageFull, no_space_as_storage_full
from f2f.serving.protocol import AlignmentView, JobError, JobResult, RankingView
from f2f.serving.remote import RemoteGenerator, RemoteVLM

logger = logging.getLogger("f2f.serving")
# After a lost replica, the first retry waits this long (then twice as long each time): longer than Serve takes
# to take a broken replica out of routing (the generator's health check every 2 s: f2f.serving.generator_deployment).
LOST_REPLICA_BACKOFF_S = 5.0
FAST_PNG = 1  # zlib level of the outputs: a caller waits for them (f2f.result.write_outputs)


def _lost_replica_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean a model replica died or vanished mid-call: worth another try."""
    from ray import exceptions as ray_errors
    from ray.serve import exceptions as serve_errors

    kinds = [ray_errors.RayActorError, ray_errors.ActorUnavailableError, ReplicaLost]
    kinds += [getattr(serve_errors, name) for name in ("DeploymentUnavailableError",) if hasattr(serve_errors, name)]
    return tuple(kinds)


def _task_handler(name: str) -> Any:
    from ray.serve.task_consumer import task_handler

    return task_handler(name=name)


class EditWorker:
    """Serve deployment body (made a task consumer by the app builder)."""

    def __init__(self, vlm: Any, generator: Any, events: Any, config: F2FConfig, jobs: JobsArgs) -> None:
        self.loop = asyncio.get_running_loop()  # Serve runs constructors on the replica's event loop
        self.vlm, self.generator = RemoteVLM(vlm), RemoteGenerator(generator)
        self.config, self.jobs = config, jobs
        self.store = JobStore(jobs.store_dir(config.cache_dir), jobs.ttl_s, jobs.lease_s)
        if events is not None:
            self.store.on_change = EventsClient(events, self.loop).publish_record
        self.worker_id = uuid.uuid4().hex[:12]
        self.lost_replica = _lost_replica_errors()
        self._gauges = self.loop.create_task(_running_gauge_forever())  # kept: the loop holds tasks weakly
        self._alive = self.loop.create_task(self._alive_forever())

    async def _alive_forever(self) -> None:
        """Touch this worker's file in the store every `heartbeat_s`: silent for `lease_s`, it counts as lost."""
        while True:
            try:
                await asyncio.to_thread(self.store.worker_alive, self.worker_id)
            except OSError as exc:
                logger.warning("could not record that this worker is alive (%s)", exc)
            await asyncio.sleep(self.jobs.heartbeat_s)

    @classmethod
    def deployment_options(cls, args: AppArgs) -> dict[str, Any]:
        """Its concurrency is the queue consumer's."""
        return {
            "name": "EditWorker",
            "max_ongoing_requests": args.worker_max_concurrent_jobs,
            "ray_actor_options": {"num_cpus": args.worker_num_cpus},
            **replica_options(args.worker_autoscaling),
        }

    @_task_handler(TASK_NAME)
    def run_job(self, job_id: str) -> str:
        """Celery's entry (a worker thread): run the job on the replica's event loop; its final status."""
        return asyncio.run_coroutine_threadsafe(self.run(job_id), self.loop).result()

    async def check_health(self) -> None:
        """Raise if the queue consumer stopped (also Serve's replica health check)."""
        thread = getattr(getattr(self, "_adapter", None), "_worker_thread", None)  # set by Ray's Celery adapter
        if thread is not None and not thread.is_alive():
            raise RuntimeError("the job queue consumer has stopped")

    async def run(self, job_id: str) -> str:
        """Claim and run one job; the job's status afterwards (or why it was skipped)."""
        record = await asyncio.to_thread(self.store.claim, job_id, self.worker_id, self.jobs.max_attempts)
        if record is None:
            current = await asyncio.to_thread(self.store.cancel_if_requested, job_id)
            return f"skipped ({current.status})"
        while True:
            status = await self._attempt(record)
            if status != "retry":
                return status
            await asyncio.sleep(min(LOST_REPLICA_BACKOFF_S * 2.0 ** (record.attempts - 1), 30.0))
            record = await asyncio.to_thread(self.store.next_attempt, job_id)

    async def _attempt(self, record: JobRecord) -> str:
        """One try at the job: 'succeeded', 'failed', 'cancelled', or 'retry'."""
        job_id, cancel = record.id, CancelToken()
        watcher = _JobWatcher(self.store, job_id, cancel, self.jobs)
        task = asyncio.create_task(self._edit(record, watcher, cancel))
        watch = asyncio.create_task(watcher.watch(task))
        try:
            with metrics.in_flight():
                result = await task
            await asyncio.to_thread(self._write_outputs, record, result)
        except (EditCancelled, asyncio.CancelledError):
            if not cancel.cancelled:
                raise  # the replica is stopping: the lease runs out and the job is queued again
            cancelled = JobError(message="the edit was cancelled by request", code="cancelled")
            return await self._finish(job_id, "cancelled", cancelled)
        except self.lost_replica as exc:
            if record.attempts < self.jobs.max_attempts:
                logger.warning("job %s: a model replica was lost (%s); trying again", job_id, type(unwrap(exc)).__name__)
                return "retry"
            metrics.record_error()
            message = f"a model replica was lost in each of {record.attempts} tries ({type(unwrap(exc)).__name__})"
            return await self._finish(job_id, "failed", JobError(message=message, code="replica_lost"))
        except InvalidInput as exc:
            message = str(unwrap(exc))
            return await self._finish(job_id, "failed", JobError(message=message, type="invalid_request_error", code=exc.code))
        except F2FError as exc:
            message = str(unwrap(exc))
            logger.warning("job %s failed: %s", job_id, message)
            metrics.record_error()
            return await self._finish(job_id, "failed", JobError(message=message, code=exc.code))
        except Exception:
            logger.exception("job %s failed", job_id)
            metrics.record_error()
            return await self._finish(
                job_id, "failed", JobError(message="the edit failed; see the server log", code="edit_failed")
            )
        finally:
            await asyncio.wait({watch})  # it ends once the task is done
        metrics.record_edit(result)
        return await self._finish(job_id, "succeeded", None, result)

    async def _edit(self, record: JobRecord, watcher: _JobWatcher, cancel: CancelToken) -> EditResult:
        checked = await asyncio.to_thread(self._checked_request, record)
        return await run_edit(
            checked,
            vlm=self.vlm,
            generator=self.generator,
            progress=watcher.on_progress,
            cancel=cancel,
            keep_frames=record.request.return_video,
        )

    def _checked_request(self, record: JobRecord) -> CheckedEdit:
        """The job's request as the ingress checked it: its stored source (RGB PNG), mask ("L" PNG) and settings."""
        started = time.perf_counter()
        request, mask = record.request, None
        with Image.open(self.store.path(record.id, "source.png")) as stored:
            source = stored.convert("RGB")
        if request.mask:
            with Image.open(self.store.path(record.id, "mask.png")) as stored:
                mask = stored.convert("L")
        load_s = time.perf_counter() - started
        return CheckedEdit.of_record(source, request.prompt, request.seeds, request.settings(), self.config, load_s, mask)

    def _write_outputs(self, record: JobRecord, result: EditResult) -> None:
        request, folder = record.request, self.store.job_dir(record.id)
        fps = self.config.video.fps if request.return_video else None
        try:
            with no_space_as_storage_full(f"the outputs of job {record.id}"):
                write_outputs(result, folder, save_frames=True, video_fps=fps, png_level=FAST_PNG)
                _write_ranked(result, folder)
        except StorageFull:
            self.store.remove_outputs(record.id)  # no half-written result, and the space back for the record
            raise

    async def _finish(self, job_id: str, status: str, error: JobError | None, result: EditResult | None = None) -> str:
        job_result = None if result is None else _job_result(job_id, result, self.store.job_dir(job_id))
        timings = None if result is None else result.timings_s
        return (await asyncio.to_thread(self.store.finish, job_id, status, error, job_result, timings)).status  # type: ignore[arg-type]


async def _running_gauge_forever() -> None:
    """Set `f2f_edits_running` every `metrics.gauge_refresh_s()`, 0 included (Ray drops a gauge not set again)."""
    every_s = metrics.gauge_refresh_s()
    while True:
        metrics.refresh_running()
        await asyncio.sleep(every_s)


def _write_ranked(result: EditResult, folder: Path) -> None:
    """ranked/<k>.png: the edit of the k-th best seed (k >= 2; the best is edited.png), the source where it has none."""
    if len(result.ranked) < 2:
        return
    (folder / "ranked").mkdir(exist_ok=True)
    for rank, image in enumerate(result.edits_by_rank()[1:], start=2):
        write_atomic(
            folder / "ranked" / f"{rank}.png", lambda f, image=image: image.save(f, format="PNG", compress_level=FAST_PNG)
        )


def _job_result(job_id: str, result: EditResult, folder: Path) -> JobResult:
    data = result.to_json()
    return JobResult(
        status=result.status,
        caption=result.caption,
        caption_fallback=result.caption_fallback,
        seed=result.seed,
        selected_label=result.outcome.label,
        selected_frame=result.outcome.frame,
        candidate_frames=data["candidate_frames"],
        letterbox_box=data["letterbox_box"],
        source_size=data["source_size"],
        canvas=data["canvas"],
        ranking=RankingView(**data["ranking"]),
        alignment=AlignmentView(**data["alignment"]),
        mask=data["mask"],
        has_video=(folder / "video.mp4").is_file(),
        has_frames=(folder / "candidates").is_dir(),
        frames=frame_links(job_id, data["candidate_frames"]),
    )


class _JobWatcher:
    """Carries progress to the job record, refreshes the lease, and notices a cancel request."""

    def __init__(self, store: JobStore, job_id: str, cancel: CancelToken, jobs: JobsArgs) -> None:
        self.store, self.job_id, self.cancel, self.jobs = store, job_id, cancel, jobs
        self.latest: Progress | None = None
        self.changed = asyncio.Event()

    def on_progress(self, event: Progress) -> None:
        """The pipeline's progress callback (event loop thread): keep the latest, wake the writer."""
        self.latest = event
        self.changed.set()

    async def watch(self, task: asyncio.Task[Any]) -> None:
        """Until `task` is done: write progress as it comes, a heartbeat at least every heartbeat_s, stop `task` on cancel.

        It ends by itself (no `wait_for`: on Python 3.11 that can swallow a cancellation).
        """
        since_beat = 0.0
        while not task.done():
            waiter = asyncio.ensure_future(self.changed.wait())
            await asyncio.wait({waiter, task}, timeout=self.jobs.poll_interval_s)
            waiter.cancel()
            self.changed.clear()
            since_beat += self.jobs.poll_interval_s
            event, self.latest = self.latest, None
            if event is None and since_beat < self.jobs.heartbeat_s:
                record = await asyncio.to_thread(self.store.get, self.job_id)
            else:
                stage, step, total = (event.stage, event.step, event.total) if event is not None else (None, None, None)
                record = await asyncio.to_thread(self.store.heartbeat, self.job_id, stage, step, total)
                since_beat = 0.0
            if record.cancel_requested and not self.cancel.cancelled:
                self.cancel.cancel()
                task.cancel()
