"""The edit worker: consumes job ids from the queue and runs each edit against the model deployments.

Rules:

- The class is made a Ray Serve task consumer by the app builder
  (`task_consumer(task_processor_config=...)`); Celery calls `run_job` on one
  of its threads, which hands the job to the replica's event loop and waits.
  Jobs run at once per replica: the deployment's `max_ongoing_requests`.
- A job runs only if this worker claims it in the job store (queued, or
  running under a lost worker's stale lease): a message delivered twice, or
  a job already finished or cancelled, is skipped, never run twice.
- Fencing: the claim's attempt is the lease (`f2f.serving.jobs.Lease`) that
  every write of the attempt carries: heartbeats and progress, the outputs
  (written into the attempt's own folder), a retry's next attempt, a
  hand-back and the finish, which alone makes the outputs the job's. Once
  the job is no longer the attempt's (this replica was paused or cut off
  past `lease_s` and the job was queued again or taken over), the store
  refuses them (`LeaseLost`): the watcher stops the edit as a cancel
  request does, the attempt ends without touching the job, and
  `f2f_leases_lost_total` counts it.
- The replica touches its file in the store (`workers/<id>`) every
  `heartbeat_s`; once it has been silent for `lease_s`, the ingress sends
  every waiting job again (a message it took but never claimed is not lost).
- Scaling: each replica reports the jobs it holds (`record_autoscaling_stats`:
  `running_jobs`); the replica count follows the broker's queue plus those
  (`f2f.serving.scaling.JobQueuePolicy`).
- Health: Serve asks every `HEALTH_CHECK_PERIOD_S`; a replica whose consumer
  thread died, or that took no message for `jobs.stalled_after_s` with a free
  slot while messages waited on the broker at every look (`ConsumerWatch`),
  fails it and Serve replaces it.
- Stopping (a rollout, a downscale, a drained node): `consumer_class`'s
  `__del__` hands every running job back to the queue (queued again, its
  attempt not counted, its message sent again) before the consumer stops,
  and sends back any message that arrives meanwhile; a job waiting to be
  tried again goes back too. A replica killed outright still has the lease.
- Every change of a job record this worker writes wakes the requests
  waiting for it (`f2f.serving.jobs.events`): pushed to the events hub with the
  file store, published by the Redis store itself.
- The stored source was checked by the ingress: it is loaded and run as it
  is (`CheckedEdit.of_record`, `f2f.pipeline.run_edit`), never checked again.
- While it runs: stage and denoising progress go to the job record, the
  lease is refreshed every `heartbeat_s`, and a cancel request (DELETE) is
  noticed within `poll_interval_s` and stops the edit (a running video at
  its next denoising step). A heartbeat or read that fails (a full,
  read-only or failing volume) is logged and tried again at the next poll;
  the watcher never ends before the edit.
- A model replica lost mid-job (Ray actor errors, or a split generator
  that lost a rank) is retried after a back-off (5 s, then doubling), up to
  `max_attempts` tries in all; bad input is `failed` with the
  field named; an error f2f names (`F2FError`: the video ran out of
  accelerator memory, the job volume is full, the VLM endpoint failed) is
  `failed` with its code and message; anything else is `failed` with a
  generic message (logged).
- Previews (a job that asked, `previews`): the generator's latest preview is
  written as the job's `preview.png` and recorded on its record (`preview`:
  step, total, count; fenced by the lease like progress), at most one every
  `PREVIEW_MIN_S` (a fast loop does not flood the store), and the latest one
  not yet written once the edit is done, before its finish.
- Outputs are written as `f2f edit` writes them (edited.png, collage.png,
  result.json, candidates/ always: the caller may select another frame of
  the path, `f2f.serving.api.candidates`; video.mp4 with `return_video`;
  ranked/<k>.png, the k-th best seed's edit, with several seeds) into the
  attempt's folder, and made the job's by the finish that says
  `succeeded`. If the volume fills up meanwhile, the outputs written so far
  are removed and the job fails with `storage_full`. A finish the store
  cannot write is tried again every `heartbeat_s` for `lease_s`; after
  that the job stays running, its lease lapses and it is queued again.
"""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from f2f.config import F2FConfig
from f2f.errors import EditCancelled, F2FError, InvalidInput, ReplicaLost, unwrap
from f2f.pipeline import run_edit
from f2f.protocols import CancelToken, Progress
from f2f.request import CheckedEdit
from f2f.result import EditResult, write_atomic, write_outputs
from f2f.serving import logs, metrics
from f2f.serving.api.candidates import frame_links
from f2f.serving.api.errors import job_error
from f2f.serving.api.wire import AlignmentView, JobError, JobPreview, JobResult, RankingView
from f2f.serving.deployments.args import AppArgs, actor_options, replica_options
from f2f.serving.deployments.remote import remote_models, with_previews
from f2f.serving.jobs import (
    MASK,
    SOURCE,
    JobNotFound,
    JobRecord,
    Lease,
    LeaseLost,
    StorageFull,
    StoreBase,
    StoreUnavailable,
    no_space_as_storage_full,
    open_store,
    send,
)
from f2f.serving.jobs.events import EventsClient
from f2f.serving.jobs.queue import TASK_NAME, BrokerQueue, JobQueue, JobsArgs
from f2f.serving.jobs.record import PREVIEW, hold
from f2f.serving.scaling import POLICY_PATH, RUNNING_JOBS

logger = logging.getLogger("f2f.serving")
# After a lost replica, the first retry waits this long (then twice as long each time): longer than Serve takes
# to take a broken replica out of routing (the generator's health check every 2 s: f2f.serving.deployments.generator).
LOST_REPLICA_BACKOFF_S = 5.0
FAST_PNG = 1  # zlib level of the outputs: a caller waits for them (f2f.result.write_outputs)
PREVIEW_MIN_S = 0.5  # a job's previews are written at most this often
HEALTH_CHECK_PERIOD_S = 5.0  # how often Serve asks a worker replica whether its consumer still takes jobs
HANDED_BACK = "handed back"
T = TypeVar("T")
LEASE_LOST = "lease lost"


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

    def __init__(
        self, vlm: Any, generator: Any, events: Any, config: F2FConfig, jobs: JobsArgs, max_concurrent_jobs: int = 1
    ) -> None:
        self.loop = asyncio.get_running_loop()  # Serve runs constructors on the replica's event loop
        logs.log_to_serve()
        self.models = remote_models(vlm, generator)
        self.config, self.jobs = config, jobs
        self.jobs_max_concurrent = max_concurrent_jobs
        self.store = open_store(jobs, config.cache_dir)
        if events is not None:
            self.store.on_change = EventsClient(events, self.loop).publish_record
        self.worker_id = uuid.uuid4().hex[:12]
        self.lost_replica = _lost_replica_errors()
        store_dir = jobs.store_dir(config.cache_dir)
        self.queue, self.broker = JobQueue(jobs, store_dir), BrokerQueue.of(jobs, store_dir)
        self.running: dict[str, tuple[asyncio.Task[EditResult], CancelToken]] = {}  # job id -> its edit, while it runs
        self.handing_back: set[str] = set()
        self.draining = False
        self.busy = 0  # jobs taken from the queue and not done (running, or waiting to try again)
        self.watch = ConsumerWatch(jobs.stalled_after_s)
        self._gauges = self.loop.create_task(_running_gauge_forever())  # kept: the loop holds tasks weakly
        self._alive = self.loop.create_task(self._alive_forever())

    async def _alive_forever(self) -> None:
        """Touch this worker's file in the store every `heartbeat_s`: silent for `lease_s`, it counts as lost."""
        while True:
            try:
                await asyncio.to_thread(self.store.worker_alive, self.worker_id)
            except (OSError, StoreUnavailable) as exc:
                logger.warning("could not record that this worker is alive (%s)", exc)
            await asyncio.sleep(self.jobs.heartbeat_s)

    @classmethod
    def deployment_options(cls, args: AppArgs, broker: tuple[str, dict[str, Any] | None]) -> dict[str, Any]:
        """Its concurrency is the queue consumer's; autoscaled on the job queue (`f2f.serving.scaling`); a stopping
        replica hands its jobs back at once, and is killed after `worker_graceful_shutdown_timeout_s`."""
        replicas = replica_options(args.worker_autoscaling)
        if "autoscaling_config" in replicas:
            url, options = broker
            kwargs = {"broker_url": url, "transport_options": options, "queue_name": args.jobs.queue_name}
            kwargs["jobs_per_replica"] = args.worker_max_concurrent_jobs
            replicas["autoscaling_config"]["policy"] = {"policy_function": POLICY_PATH, "policy_kwargs": kwargs}
        return {
            "name": "EditWorker",
            "max_ongoing_requests": args.worker_max_concurrent_jobs,
            "ray_actor_options": actor_options(args.worker_num_cpus, 0, args.worker_resources),
            "health_check_period_s": HEALTH_CHECK_PERIOD_S,
            "graceful_shutdown_timeout_s": args.worker_graceful_shutdown_timeout_s,
            "graceful_shutdown_wait_loop_s": 1.0,
            **replicas,
        }

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom autoscaling metric: the jobs this replica runs (`JobQueuePolicy` adds the waiting ones)."""
        return {RUNNING_JOBS: float(self.busy)}

    @_task_handler(TASK_NAME)
    def run_job(self, job_id: str) -> str:
        """Celery's entry (a worker thread): run the job on the replica's event loop; its final status."""
        return asyncio.run_coroutine_threadsafe(logs.in_job(job_id, self.run(job_id)), self.loop).result()

    async def check_health(self) -> None:
        """Serve's replica health check: raise if the queue consumer stopped, or if it takes no job while it has a
        free slot and messages wait on the broker (for `jobs.stalled_after_s`); Serve then replaces the replica."""
        thread = getattr(getattr(self, "_adapter", None), "_worker_thread", None)  # set by Ray's Celery adapter
        if thread is not None and not thread.is_alive():
            raise RuntimeError("the job queue consumer has stopped")
        if self.draining or self.busy >= self.jobs_max_concurrent:
            self.watch.observe(0)
            return
        try:
            waiting = await asyncio.to_thread(self.broker.length)
        except Exception as exc:  # the broker's own outage is not this replica's fault: the job store keeps the jobs
            logger.warning("the job queue's length could not be read (%s: %s)", type(exc).__name__, exc)
            return
        stalled_s = self.watch.observe(waiting)
        if stalled_s is not None:
            raise RuntimeError(
                f"the job queue consumer took no job for {stalled_s:.0f} s with a free slot while {waiting} "
                f"messages wait on the broker (jobs.stalled_after_s {self.jobs.stalled_after_s:g})"
            )

    async def hand_back_all(self) -> None:
        """This replica is stopping (a rollout, a downscale, a drained node): hand every running job back to the
        queue now, its attempt not counted, so that another replica starts it at once instead of after its lease.
        A message that arrives from now on is sent back untouched."""
        self.draining = True
        jobs = list(self.running)
        for job_id in jobs:
            self.handing_back.add(job_id)
            task, cancel = self.running[job_id]
            cancel.cancel()  # a running video stops at its next denoising step
            task.cancel()
        while self.running:
            await asyncio.sleep(0.05)
        if jobs:
            logger.info("stopping: handed %d running job(s) back to the queue: %s", len(jobs), ", ".join(jobs))

    async def run(self, job_id: str) -> str:
        """Claim and run one job; the job's status afterwards (or why it was skipped)."""
        self.watch.took()
        self.busy += 1
        try:
            return await self._run(job_id)
        finally:
            self.busy -= 1

    async def _run(self, job_id: str) -> str:
        if self.draining:  # this replica is stopping: the message goes back to the broker for another one
            await send(self.store, self.queue, job_id)
            return HANDED_BACK
        record = await asyncio.to_thread(self.store.claim, job_id, self.worker_id, self.jobs.max_attempts)
        if record is None:
            current = await asyncio.to_thread(self.store.cancel_if_requested, job_id)
            return f"skipped ({current.status})"
        lease = Lease.of(record)
        try:
            while True:
                status = await self._attempt(record, lease)
                if status != "retry":
                    return status
                await asyncio.sleep(min(LOST_REPLICA_BACKOFF_S * 2.0 ** (record.attempts - 1), 30.0))
                if self.draining:  # stopping while it waited to try again: another replica tries
                    return await self._hand_back(lease)
                record = await asyncio.to_thread(self.store.next_attempt, lease)
                lease = Lease.of(record)
        except LeaseLost as exc:
            return _lease_lost(exc)

    async def _attempt(self, record: JobRecord, lease: Lease) -> str:
        """One try at the job: 'succeeded', 'failed', 'cancelled', 'retry', or LEASE_LOST (nothing written)."""
        job_id, cancel = record.id, CancelToken()
        watcher = _JobWatcher(self.store, lease, cancel, self.jobs)
        task = asyncio.create_task(self._edit(record, watcher, cancel))
        self.running[job_id] = (task, cancel)
        watch = asyncio.create_task(watcher.watch(task))
        try:
            try:
                with metrics.in_flight():
                    result = await task
            finally:
                await asyncio.wait({watch})  # it ends once the task is done: no heartbeat of this attempt comes later
            if watcher.lost is not None:
                raise watcher.lost
            write = partial(self._keep_outputs, lease, record, result)
            kept = await self._retried(write, "its outputs", job_id, retry_full=False)
        except LeaseLost:
            raise
        except (EditCancelled, asyncio.CancelledError):
            if watcher.lost is not None:
                raise watcher.lost from None
            if job_id in self.handing_back:
                return await self._hand_back(lease)
            if not cancel.cancelled:
                raise  # the replica is stopping without a drain: the lease runs out and the job is queued again
            return await self._finish(lease, "cancelled", job_error(EditCancelled("the edit was cancelled by request")))
        except self.lost_replica as exc:
            if record.attempts < self.jobs.max_attempts:
                logger.warning("job %s: a model replica was lost (%s); trying again", job_id, type(unwrap(exc)).__name__)
                return "retry"
            metrics.record_error()
            message = f"a model replica was lost in each of {record.attempts} tries ({type(unwrap(exc)).__name__})"
            return await self._finish(lease, "failed", job_error(ReplicaLost(message)))
        except InvalidInput as exc:
            return await self._finish(lease, "failed", job_error(exc))
        except F2FError as exc:
            if isinstance(exc, StoreUnavailable) and not isinstance(exc, StorageFull):
                raise  # the store stayed away for a whole lease: the lease lapses and the job is queued again
            logger.warning("job %s failed: %s", job_id, unwrap(exc))
            metrics.record_error()
            return await self._finish(lease, "failed", job_error(exc))
        except Exception as exc:
            logger.exception("job %s failed", job_id)
            metrics.record_error()
            return await self._finish(lease, "failed", job_error(exc))
        finally:
            self.running.pop(job_id, None)
        metrics.record_edit(result)
        return await self._finish(lease, "succeeded", None, result, kept)

    async def _hand_back(self, lease: Lease) -> str:
        """Put a job this stopping replica was running back in the queue (its attempt not counted), and send it."""
        self.handing_back.discard(lease.job_id)
        await asyncio.to_thread(self.store.hand_back, lease)
        await send(self.store, self.queue, lease.job_id)  # if the broker is down, the ingress's sweep sends it
        return HANDED_BACK

    async def _edit(self, record: JobRecord, watcher: _JobWatcher, cancel: CancelToken) -> EditResult:
        checked = await asyncio.to_thread(self._checked_request, record)
        models = with_previews(self.models, self.config.generator.preview_every) if record.request.previews else self.models
        return await run_edit(
            checked,
            models,
            progress=watcher.on_progress,
            cancel=cancel,
            keep_frames=record.request.return_video,
        )

    def _checked_request(self, record: JobRecord) -> CheckedEdit:
        """The job's request as the ingress checked it: its stored source (RGB PNG), mask ("L" PNG) and settings."""
        started = time.perf_counter()
        request, mask = record.request, None
        with Image.open(io.BytesIO(self.store.read(record.id, SOURCE))) as stored:
            source = stored.copy()  # stored as checked: RGB
        if request.mask:
            with Image.open(io.BytesIO(self.store.read(record.id, MASK))) as stored:
                mask = stored.copy()  # stored as checked: "L"
        load_s = time.perf_counter() - started
        return CheckedEdit.of_record(source, request.prompt, request.seeds, request.settings(), self.config, load_s, mask)

    def _keep_outputs(self, lease: Lease, record: JobRecord, result: EditResult) -> JobResult:
        """The attempt's outputs, written into a local folder (the store's `outputs_dir`) and kept under the
        attempt's prefix (`keep_outputs`); the job's result that names them."""
        folder = self.store.outputs_dir(lease)
        fps = self.config.video.fps if record.request.return_video else None
        try:
            with no_space_as_storage_full(f"the outputs of job {record.id}"):
                write_outputs(result, folder, save_frames=True, video_fps=fps, png_level=FAST_PNG)
                _write_ranked(result, folder)
            kept = _job_result(lease.job_id, result, folder)
            self.store.keep_outputs(lease, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # no half-written result, and the space back for the record
        return kept

    async def _finish(
        self, lease: Lease, status: str, error: JobError | None, result: EditResult | None = None, kept: JobResult | None = None
    ) -> str:
        """End the attempt (a succeeded one with its kept outputs' result), its store errors tried again (`_retried`)."""
        timings = None if result is None else result.timings_s
        end = partial(self.store.finish, lease, status, error, kept, timings)
        return (await self._retried(end, f"its end ({status})", lease.job_id)).status

    async def _retried(self, call: Callable[[], T], what: str, job_id: str, retry_full: bool = True) -> T:
        """`call` on a thread, tried again every `heartbeat_s` for `lease_s` while the store is away (StoreUnavailable:
        Redis restarting, a volume read-only for a while; a full one only if `retry_full`), then its error raised: the
        job stays running, its lease lapses, and it is queued again. Never a job failed for a store's hiccup."""
        give_up_at = time.monotonic() + self.jobs.lease_s
        while True:
            try:
                return await asyncio.to_thread(call)
            except StoreUnavailable as exc:
                if (isinstance(exc, StorageFull) and not retry_full) or time.monotonic() >= give_up_at:
                    raise
                logger.warning("job %s: %s could not be written (%s); trying again", job_id, what, exc)
                await asyncio.sleep(self.jobs.heartbeat_s)


def consumer_class(queue: Any) -> type:
    """`EditWorker` as a Ray Serve task consumer of the job queue (`TaskProcessorConfig`) whose stop hands its
    running jobs back before the consumer stops.

    Ray's consumer wrapper stops the Celery consumer first, in a synchronous `__del__` on the replica's event
    loop: Celery's warm shutdown then waits for the running jobs, which need that loop, until its 10 s join
    gives up. This `__del__` (Serve awaits it at a graceful stop) hands the jobs back first, then stops the
    consumer on a thread.
    """
    from ray.serve.task_consumer import task_consumer

    consumer: Any = task_consumer(task_processor_config=queue)(EditWorker)

    class DrainingConsumer(consumer):
        async def __del__(self) -> None:
            await self.hand_back_all()
            adapter = getattr(self, "_adapter", None)
            if adapter is not None:
                await asyncio.to_thread(adapter.stop_consumer)

    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        setattr(DrainingConsumer, attr, getattr(EditWorker, attr))
    return DrainingConsumer


class ConsumerWatch:
    """Whether a queue consumer stalled: messages waited on the broker at every look for `stalled_after_s`, while
    it had a free slot, and it took none of them meanwhile. A look with nothing waiting (or no free slot) resets it."""

    def __init__(self, stalled_after_s: float, clock: Any = time.monotonic) -> None:
        self.stalled_after_s, self.clock = stalled_after_s, clock
        self.taken_at = clock()
        self.waiting_since: float | None = None

    def took(self) -> None:
        self.taken_at = self.clock()

    def observe(self, waiting: int) -> float | None:
        """Seconds stalled, once that is `stalled_after_s` or more; else None."""
        now = self.clock()
        if waiting <= 0:
            self.waiting_since = None
            return None
        if self.waiting_since is None or self.taken_at >= self.waiting_since:
            self.waiting_since = now
            return None
        stalled_s = now - self.waiting_since
        return stalled_s if stalled_s >= self.stalled_after_s else None


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
        usage=data["usage"],
        has_video=(folder / "video.mp4").is_file(),
        has_frames=(folder / "candidates").is_dir(),
        frames=frame_links(job_id, data["candidate_frames"]),
    )


def _lease_lost(exc: LeaseLost) -> str:
    """Log and count an attempt stopped because its job is no longer its worker's."""
    logger.warning("%s; this worker stopped its attempt and leaves the job as it is", exc)
    metrics.record_lease_lost()
    return LEASE_LOST


class _JobWatcher:
    """Carries progress to the job record, refreshes the lease, notices a cancel request, and stops the edit once
    the lease is lost (`lost`: why)."""

    def __init__(self, store: StoreBase, lease: Lease, cancel: CancelToken, jobs: JobsArgs) -> None:
        self.store, self.lease, self.cancel, self.jobs = store, lease, cancel, jobs
        self.latest: Progress | None = None
        self.changed = asyncio.Event()
        self.lost: LeaseLost | None = None
        self.preview: Progress | None = None  # the latest preview not written yet
        self.preview_at = -PREVIEW_MIN_S  # when the last was written (monotonic)

    def on_progress(self, event: Progress) -> None:
        """The pipeline's progress callback (event loop thread): keep the latest (and the latest preview), wake the writer."""
        self.latest = event
        if event.preview is not None:
            self.preview = event
        self.changed.set()

    async def watch(self, task: asyncio.Task[Any]) -> None:
        """Until `task` is done: write progress as it comes, a heartbeat at least every heartbeat_s, stop `task` on
        cancel or once the lease is lost. A store error is logged and the write tried again at the next poll.

        It ends by itself (no `wait_for`: on Python 3.11 that can swallow a cancellation).
        """
        since_beat = 0.0
        while not task.done():
            waiter = asyncio.ensure_future(self.changed.wait())
            await asyncio.wait({waiter, task}, timeout=self.jobs.poll_interval_s)
            waiter.cancel()
            self.changed.clear()
            since_beat += self.jobs.poll_interval_s
            if task.done():
                break
            event = self.latest
            beat = event is not None or since_beat >= self.jobs.heartbeat_s
            try:
                record = await asyncio.to_thread(self._with_preview, partial(self._beat, event) if beat else self._read)
            except (LeaseLost, JobNotFound) as exc:
                self.lost = exc if isinstance(exc, LeaseLost) else LeaseLost(f"job {self.lease.job_id}: {exc}")
                self._stop(task)
                return
            except (StoreUnavailable, OSError) as exc:  # a full, read-only or failing volume: tried again at the next poll
                logger.warning("job %s: its record could not be written or read (%s); trying again", self.lease.job_id, exc)
                continue
            except Exception:
                logger.exception("job %s: its record could not be written or read; trying again", self.lease.job_id)
                continue
            if beat:
                since_beat = 0.0
                if self.latest is event:
                    self.latest = None  # written; an event that came meanwhile is written at the next poll
            if record.cancel_requested and not self.cancel.cancelled:
                self._stop(task)
        await self._last_preview(task)

    async def _last_preview(self, task: asyncio.Task[Any]) -> None:
        """Write the preview not yet written of an edit that is done (the finish follows, so it comes before it)."""
        if self.preview is None or task.cancelled() or task.exception() is not None:
            return
        try:
            await asyncio.to_thread(self._write_preview, self.preview)
        except (LeaseLost, JobNotFound, StoreUnavailable, OSError) as exc:  # the finish meets a lost lease, if it is
            logger.warning("job %s: its last preview could not be written (%s)", self.lease.job_id, exc)

    def _with_preview(self, call: Callable[[], JobRecord]) -> JobRecord:
        """`call`'s record (a thread), after it the preview not yet written, if one is and `PREVIEW_MIN_S` passed."""
        record = call()
        preview = self.preview
        if preview is None or time.monotonic() - self.preview_at < PREVIEW_MIN_S:
            return record
        return self._write_preview(preview)

    def _write_preview(self, event: Progress) -> JobRecord:
        """The job's `preview.png` and the record that names it (a thread); LeaseLost if the job is not the attempt's."""
        assert event.preview is not None and event.step is not None and event.total is not None
        buffer = io.BytesIO()
        event.preview.save(buffer, format="PNG", compress_level=FAST_PNG)
        job_id = self.lease.job_id
        self.store.objects.put(self.store.key(job_id, PREVIEW), buffer.getvalue(), "image/png")

        def record_it(record: JobRecord) -> None:
            hold(record, self.lease)
            count = 1 + (record.preview.count if record.preview else 0)  # on from an earlier attempt's
            record.preview = JobPreview(step=event.step, total=event.total, count=count)

        record = self.store.update(job_id, record_it)
        self.preview_at = time.monotonic()
        if self.preview is event:
            self.preview = None
        return record

    def _beat(self, event: Progress | None) -> JobRecord:
        """Refresh the lease, with the latest progress if any (a thread)."""
        stage, step, total = (event.stage, event.step, event.total) if event is not None else (None, None, None)
        return self.store.heartbeat(self.lease, stage, step, total)

    def _read(self) -> JobRecord:
        """The record, if the job is still the attempt's (a thread); LeaseLost if not."""
        record = self.store.get(self.lease.job_id)
        if not self.lease.holds(record):
            raise LeaseLost(f"job {self.lease.job_id} is {record.status} at attempt {record.attempts}: not this attempt's")
        return record

    def _stop(self, task: asyncio.Task[Any]) -> None:
        self.cancel.cancel()
        task.cancel()
