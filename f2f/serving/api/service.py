"""Submit and wait: what every edit route does, in one object over the job store, the queue and the job events.

Rules:

- `submit` checks the request (`f2f.request.check_edit`, in a thread) before
  any job exists, then creates the job under the store's queue lock, where
  the queue bound (`jobs.max_queued`: 503 with Retry-After) and a key's job
  cap (`auth.max_active_jobs_per_key`: 429) are checked, so concurrent
  requests never pass them together; a full volume is a 503 and nothing is
  stored, as is a read-only or failing one (`StoreUnavailable`: 503 with
  Retry-After, `f2f.serving.api.errors`). The job is then sent to the queue; if the broker is down it is
  still accepted, and the sweep sends it.
- The source is stored as it was checked (RGB, PNG at compression level 1:
  lossless and quick), and a mask beside it ("L", 255 = edit here); the
  worker loads them without checking them again.
- `changed`, `finished` and `events` wait for a job's next change: pushed
  (`f2f.serving.jobs.events`: the hub, or the Redis store's channel) when there
  is a push, else (and at the latest) after
  `jobs.poll_interval_s`, and then read from the store, which is the record.
  The requests of one replica waiting on the same job share that wait and
  that read (200 streams on one job: one wait and one read per change).
  A stream goes on waiting through a record it cannot read (a store error,
  or a record from a newer version): its headers are sent, so a 503 can no
  longer be answered.
- `run_background` runs, per ingress replica, the store's sweep every
  `jobs.sweep_interval_s` and the queue gauges every few seconds.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from f2f.config import F2FConfig
from f2f.request import CheckedEdit, RequestLimits, check_edit
from f2f.serving import metrics
from f2f.serving.api.admission import WaitSlots
from f2f.serving.api.auth import AuthArgs, KeyRing, TooManyJobs
from f2f.serving.api.errors import ClientGone, RetryLater
from f2f.serving.api.wire import EditOptions, JobView, preview_url
from f2f.serving.deployments.ingress_args import IngressArgs
from f2f.serving.jobs import (
    EditRequest,
    JobNotFound,
    JobRecord,
    StorageFull,
    StoreBase,
    StoreUnavailable,
    fingerprint,
    send,
    sweep_forever,
)
from f2f.serving.jobs.events import EventsClient, RedisEvents
from f2f.serving.jobs.queue import BrokerQueue, JobsArgs

logger = logging.getLogger("f2f.serving")
SOURCE_PNG_LEVEL = 1
Check = Callable[[CheckedEdit], None]
Mask = tuple[bytes, bool]  # a caller's mask file, and whether its area is in the alpha channel (OpenAI's format)
Gone = Callable[[], Awaitable[bool]]  # whether the request's client has disconnected (Starlette's is_disconnected)


class EditService:
    """The edit jobs of one ingress replica: submit, wait, stream."""

    def __init__(
        self,
        store: StoreBase,
        queue: Any,
        config: F2FConfig,
        jobs: JobsArgs,
        limits: RequestLimits,
        auth: AuthArgs,
        events: EventsClient | RedisEvents | None = None,
        http: IngressArgs | None = None,
        broker: BrokerQueue | None = None,
    ) -> None:
        self.store, self.queue, self.config, self.jobs, self.limits, self.auth = store, queue, config, jobs, limits, auth
        self.events, self.broker = events, broker
        self.http = http or IngressArgs(retry_after_s=jobs.retry_after_s)  # the ingress's HTTP args, bounds included
        self.waits = WaitSlots(self.http, per_key=auth.required)
        self._waits: dict[tuple[str, float], asyncio.Future[JobRecord]] = {}  # (job, version) -> its next version
        self.ring = KeyRing(auth.keys_file) if auth.required and auth.keys_file else None
        store.retry_after_s = jobs.retry_after_s  # of a store error's 503
        if events is not None:
            store.on_change = events.publish_record

    async def submit(
        self,
        raw_image: bytes,
        options: EditOptions,
        key: str | None,
        owner: str,
        route_check: Check | None = None,
        mask: Mask | None = None,
        gone: Gone | None = None,
    ) -> tuple[JobRecord, bool]:
        """The job of this request (new, or the one its idempotency key made) and whether it is new.

        `route_check` checks more of the checked request before the job exists (a route's own fields, e.g. OpenAI's `size`).
        `mask` is the caller's mask file and whether its API carries the area in alpha (OpenAI's).
        `gone` tells whether the client has left: then no job is created (ClientGone).
        """
        stored = await asyncio.to_thread(checked_job, raw_image, options, self.config, self.limits, route_check, mask)
        source_png, mask_png, request = stored
        if gone is not None and await gone():
            raise ClientGone("the client disconnected before its job was created; none was")

        def admit() -> None:  # under the store's queue lock: concurrent requests never pass these bounds together
            depth, _ = self.store.queue_stats()
            if depth >= self.jobs.max_queued:
                raise RetryLater(f"{depth} edits are waiting, the most this server queues; retry later", self.jobs.retry_after_s)
            if self.ring is not None and self.store.active_jobs(owner) >= self.auth.max_active_jobs_per_key:
                rule = (
                    f"this API key has {self.auth.max_active_jobs_per_key} edits queued or running, the most it may; retry later"
                )
                raise TooManyJobs(rule, self.auth.retry_after_s)

        same_request = fingerprint(raw_image, options.model_dump(), *([mask[0]] if mask else []))
        create = partial(self.store.create, source_png, request, same_request, key, owner, admit, mask_png=mask_png)
        try:
            record, created = await asyncio.to_thread(create)
        except StorageFull as exc:
            logger.error("%s", exc)
            raise RetryLater(f"{exc}; retry later", self.jobs.retry_after_s, code=exc.code) from None
        if created:
            await send(self.store, self.queue, record.id)  # if the broker is down, the sweep sends it later
        return record, created

    async def changed(self, record: JobRecord) -> JobRecord:
        """The job once it changed after `record` (or `jobs.poll_interval_s` passed); JobNotFound once it is gone.

        Requests of this replica that wait on the same version of the same job share one wait and one read.
        """
        key = (record.id, record.updated_at)
        shared = self._waits.get(key)
        if shared is None:
            shared = self._waits[key] = asyncio.ensure_future(self._next_version(key))
        return await asyncio.shield(shared)  # one waiter that goes away does not cancel the others' wait

    async def _next_version(self, key: tuple[str, float]) -> JobRecord:
        job_id, version = key
        try:
            if self.events is not None:
                await self.events.wait(job_id, version, self.jobs.poll_interval_s)
            else:
                await asyncio.sleep(self.jobs.poll_interval_s)
            return await asyncio.to_thread(self.store.get, job_id)
        finally:
            # Forgotten before the result is handed out: a waiter that gets the same version back (nothing changed
            # within poll_interval_s) must start a new wait, never find this finished one and spin on it.
            del self._waits[key]

    async def finished(self, record: JobRecord) -> JobRecord:
        """The job once it finished."""
        while not record.finished:
            record = await self.changed(record)
        return record

    async def versions(self, record: JobRecord, waiter: str) -> AsyncIterator[JobRecord]:
        """`record`, then each version of the job as it changes, the last one finished; JobNotFound once it is gone.
        A store error is waited through, logged as `waiter`'s: the job goes on, and so does the wait."""
        yield record
        while not record.finished:
            try:
                record = await self.changed(record)
            except StoreUnavailable as exc:
                logger.warning("job %s: %s waits through a store error (%s)", record.id, waiter, exc)
                continue
            yield record

    async def events_of(self, record: JobRecord) -> AsyncIterator[bytes]:
        """Server-sent `status` / `stage` / `progress` / `preview` events as the job changes, then `done` with the whole
        job. A `preview` event (a job that asked for them) carries the latest preview's URL, never the image."""
        last: dict[str, Any] = {}
        try:
            async for version in self.versions(record, "its event stream"):
                now = {
                    "status": version.status,
                    "stage": version.stage,
                    "progress": version.progress.model_dump() if version.progress else None,
                    "preview": version.preview.model_dump() if version.preview else None,
                }
                for key in ("preview",) if version.finished else ("status", "stage", "progress", "preview"):
                    if now[key] != last.get(key, object()) and now[key] is not None:
                        data = {"id": version.id, key: now[key]}
                        if key == "progress":
                            data = {"id": version.id, "stage": version.stage, **now[key]}
                        elif key == "preview":
                            data = {"id": version.id, **now[key], "url": preview_url(version)}
                        yield sse(key, data)
                last = now
        except JobNotFound:
            return
        yield sse("done", JobView.of(version).model_dump(mode="json"))

    def run_background(self) -> list[asyncio.Task[None]]:
        """The sweep and the queue gauges, as tasks of the running loop (the caller cancels them)."""
        sweep = sweep_forever(self.store, self.queue, self.jobs.sweep_interval_s, self.jobs.resend_after_s)
        return [asyncio.create_task(sweep), asyncio.create_task(_queue_gauges_forever(self.store, self.broker))]


def checked_job(
    raw_image: bytes,
    options: EditOptions,
    config: F2FConfig,
    limits: RequestLimits,
    route_check: Check | None = None,
    mask: Mask | None = None,
) -> tuple[bytes, bytes | None, EditRequest]:
    """The source and mask as stored (PNG) and the job's request; InvalidInput names the field (runs in a thread)."""
    raw_mask, needs_alpha = mask if mask is not None else (None, False)
    checked = check_edit(
        raw_image, options.prompt, config, options.settings(), limits, "prompt", mask=raw_mask, mask_needs_alpha=needs_alpha
    )
    if route_check is not None:
        route_check(checked)
    mask_png = None if checked.mask is None else _png(checked.mask)
    request = EditRequest.of(checked, options.return_video, options.return_frames, options.previews)
    return _png(checked.source), mask_png, request


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=SOURCE_PNG_LEVEL)
    return buffer.getvalue()


def sse(event: str, data: Any) -> bytes:
    """One server-sent event: its name and its data as compact JSON."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _queue_gauges_forever(store: StoreBase, broker: BrokerQueue | None) -> None:
    """Set the queue gauges every `metrics.gauge_refresh_s()`, changed or not (Ray drops a gauge not set again):
    the job store's queue, and the messages waiting on the broker (left unset while the broker cannot be read)."""
    every_s = metrics.gauge_refresh_s()
    while True:
        try:
            metrics.record_queue(*await asyncio.to_thread(store.queue_stats))
        except Exception:
            logger.exception("the queue gauges could not be set")
        if broker is not None:
            try:
                metrics.record_broker_queue(await asyncio.to_thread(broker.length))
            except Exception as exc:
                logger.warning("the broker's queue length could not be read (%s: %s)", type(exc).__name__, exc)
        await asyncio.sleep(every_s)
