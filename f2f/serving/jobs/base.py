"""What every job store does the same way, on top of each store's own reads and writes: the record's moves
(claim, heartbeat, finish, cancel, requeue, ...) as changes under the job's lock, fenced by the attempt's lease, and
the job's objects (`objects`: a local folder, or a bucket).

A job's objects are keyed by its id: `<id>/source.png` and `<id>/mask.png` (written by `create`), each attempt's
outputs under `<id>/attempts/<attempt>-<worker>/` (written from the worker's local folder by `keep_outputs`, fenced
by its lease), and the conversions the API made under `<id>/cache/`. The attempt whose outputs are the job's is named
in the record (`outputs_attempt`) by its fenced `finish`: that record write is the one commit, so a stale attempt's
objects are never the job's, and a finished job's outputs never change. `finish` removes the other attempts' objects;
the sweep removes a job's objects with its record (and a bucket's lifecycle rule at the same TTL, `expire_after`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from f2f.serving.jobs.objects import LocalObjects, Objects
from f2f.serving.jobs.record import (
    JOB_ID,
    RETRY_AFTER_S,
    WORKER_ID,
    EditRequest,
    IdempotencyConflict,
    JobError,
    JobNotFound,
    JobProgress,
    JobRecord,
    JobResult,
    JobStatus,
    Lease,
    Selection,
    StoreUnavailable,
    hold,
    no_space_as_storage_full,
    unreadable,
)
from f2f.serving.logs import job_fields

logger = logging.getLogger("f2f.serving")
ATTEMPTS = "attempts"
SOURCE, MASK = "source.png", "mask.png"  # the job's own objects; the rest are an attempt's outputs
SCRATCH = "scratch"  # in `root`: the attempts' local folders, until their outputs are kept
Save = Callable[[JobRecord, JobStatus], None]


class StoreBase:
    """The record's moves and the job's objects; a store adds `create`, `get`, `_locked` and its queries."""

    def __init__(
        self,
        root: str | Path,
        ttl_s: float,
        lease_s: float = 120.0,
        on_change: Callable[[JobRecord], None] | None = None,
        objects: Objects | None = None,
    ) -> None:
        self.root = Path(root)
        self.ttl_s = ttl_s
        self.lease_s = lease_s
        self.on_change = on_change  # told of every record change once it is written (the service pushes it to waiters)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self.objects: Objects = objects if objects is not None else LocalObjects(self.root / "jobs")
        self.retry_after_s = RETRY_AFTER_S

    @property
    def retry_after_s(self) -> int:
        """Retry-After of the store's and its objects' StoreUnavailable (`open_store`: the app's `jobs.retry_after_s`)."""
        return self._retry_after_s

    @retry_after_s.setter
    def retry_after_s(self, value: int) -> None:
        self._retry_after_s = self.objects.retry_after_s = value

    # --- what each store implements: the service and the worker use only these and the moves below -----

    def create(
        self,
        source_png: bytes,
        request: EditRequest,
        fingerprint: str,
        idempotency_key: str | None = None,
        owner: str = "anonymous",
        admit: Callable[[], None] | None = None,
        mask_png: bytes | None = None,
    ) -> tuple[JobRecord, bool]:
        """A new queued job of `owner` holding the source, or the job this owner's idempotency key made; True if new.
        `admit` (the queue bound, a key's cap) passes for no two creates together; what it raises leaves nothing."""
        raise NotImplementedError

    def get(self, job_id: str) -> JobRecord:
        """The record; JobNotFound if unknown or expired, JobUnreadable (reported) if this version cannot parse it."""
        raise NotImplementedError

    def list_for(
        self, owner: str, status: JobStatus | None = None, after: str | None = None, limit: int = 20
    ) -> tuple[list[JobRecord], bool]:
        """A page of `owner`'s live jobs, newest first, and whether more follow."""
        raise NotImplementedError

    def active_jobs(self, owner: str) -> int:
        """Jobs of `owner` queued or running."""
        raise NotImplementedError

    def queue_stats(self) -> tuple[int, float]:
        """Jobs waiting for a worker, and the age in seconds of the oldest (0 when none)."""
        raise NotImplementedError

    def unsent(self, resend_after_s: float, grace_s: float = 5.0) -> list[str]:
        """Queued jobs never sent (after `grace_s`), or last sent over `resend_after_s` ago."""
        raise NotImplementedError

    def queued(self) -> list[str]:
        """The ids of the jobs waiting for a worker."""
        raise NotImplementedError

    def worker_alive(self, worker: str) -> None:
        """Record that the edit worker `worker` is alive now."""
        raise NotImplementedError

    def lost_workers(self) -> list[str]:
        """Workers not heard from for `lease_s`; each listed once, by one caller only."""
        raise NotImplementedError

    def stale_running(self) -> list[str]:
        """Running jobs whose worker stopped refreshing its lease."""
        raise NotImplementedError

    def sweep(self) -> int:
        """Delete the expired jobs; how many."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _locked(self, job_id: str) -> Iterator[tuple[JobRecord, Save]]:
        """The record under the job's lock, and how to save it (the new record, and the status it had)."""
        raise NotImplementedError
        yield

    def change_events(self) -> Any:
        """What wakes a replica's waits on this store's changes, if the store publishes them itself (a
        `f2f.serving.jobs.events.RedisEvents`); None: the changes go through the JobEvents hub."""
        return None

    def _stale(self, job_ids: Iterable[str]) -> list[str]:
        """Of `job_ids` (running, by the store's index), those still running whose lease lapsed."""
        stale = []
        for job_id in job_ids:
            try:
                record = self.get(job_id)
            except (JobNotFound, StoreUnavailable):  # an unreadable record is reported by `get` and skipped
                continue
            heartbeat = record.heartbeat_at or record.updated_at
            if record.status == "running" and time.time() - heartbeat >= self.lease_s:
                stale.append(record.id)
        return stale

    @staticmethod
    def _replayed(existing: JobRecord, fingerprint: str) -> tuple[JobRecord, bool]:
        """The job an idempotency key made, for the same request; IdempotencyConflict for another."""
        if existing.fingerprint != fingerprint:
            raise IdempotencyConflict(
                f"Idempotency-Key was already used for job {existing.id} with a different request; use a new key"
            )
        return existing, False

    def _parse(self, job_id: str, data: bytes) -> JobRecord:
        """A stored record; JobUnreadable (reported) if this version cannot parse it, JobNotFound once it expired."""
        try:
            record = JobRecord.model_validate_json(data)
        except ValueError as exc:
            raise unreadable(job_id, exc, self.retry_after_s) from None
        if record.expires_at is not None and record.expires_at <= time.time():
            raise JobNotFound(f"unknown or expired job id {job_id!r}")
        return record

    # --- the record's moves and the job's files, the same in every store --------------------------------

    def key(self, job_id: str, name: str) -> str:
        """The object key of the job's `name` (`source.png`, `cache/...`); JobNotFound for an id that is no job's."""
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFound(f"unknown or expired job id {job_id[:64]!r}")
        return f"{job_id}/{name}"

    def output_key(self, record: JobRecord, name: str) -> str | None:
        """The key of a file the job's record names (`source.png`, `edited.png`, `candidates/frame_003.png`, ...):
        the source and mask are the job's own, the rest its kept attempt's; None before an attempt's were kept."""
        if name in (SOURCE, MASK):
            return self.key(record.id, name)
        if record.outputs_attempt is None:
            return None
        return self.key(record.id, f"{ATTEMPTS}/{record.outputs_attempt}/{name}")

    def has_output(self, record: JobRecord, name: str) -> bool:
        key = self.output_key(record, name)
        return key is not None and self.objects.exists(key)

    def read(self, job_id: str, name: str) -> bytes:
        """The bytes of the job's own object `name` (its source, its mask)."""
        return self.objects.get(self.key(job_id, name))

    def get_for(self, job_id: str, owner: str) -> JobRecord:
        """The record if `owner` made the job; JobNotFound otherwise (another key's job looks unknown)."""
        record = self.get(job_id)
        if record.owner != owner:
            raise JobNotFound(f"unknown or expired job id {job_id!r}")
        return record

    def _put_inputs(self, job_id: str, source_png: bytes, mask_png: bytes | None) -> None:
        """Write a new job's source (and mask) before its record exists; `create` removes them if it fails."""
        self.objects.put(self.key(job_id, SOURCE), source_png, "image/png")
        if mask_png is not None:
            self.objects.put(self.key(job_id, MASK), mask_png, "image/png")

    def outputs_dir(self, lease: Lease) -> Path:
        """A local folder (made, empty) for the attempt to write its outputs into; LeaseLost if the job is not its.

        `keep_outputs` stores them under the attempt's prefix; its `finish` makes them the job's.
        """
        with self._storage(f"the outputs folder of job {lease.job_id}"):
            hold(self.get(lease.job_id), lease)
            folder = self.root / SCRATCH / f"{lease.job_id}-{_attempt_name(lease)}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        return folder

    def keep_outputs(self, lease: Lease, folder: Path) -> None:
        """Store the attempt's outputs (the files of `folder`, then removed) under its own prefix; LeaseLost, and
        nothing stored, if the job is no longer the attempt's."""
        hold(self.get(lease.job_id), lease)
        self.objects.put_folder(self.key(lease.job_id, f"{ATTEMPTS}/{_attempt_name(lease)}"), folder)
        shutil.rmtree(folder, ignore_errors=True)

    def _drop_attempts(self, job_id: str, keep: str | None) -> None:
        """Remove the objects of the job's attempts but `keep` (best effort: the sweep removes what is left)."""
        prefix = self.key(job_id, ATTEMPTS)
        try:
            names = {key.removeprefix(prefix + "/").partition("/")[0] for key in self.objects.keys(prefix)}
            for name in names - {keep}:
                self.objects.delete_prefix(f"{prefix}/{name}")
        except StoreUnavailable as exc:
            logger.warning("job %s: its other attempts' outputs stay until it expires (%s)", job_id, exc)

    def _sweep_scratch(self) -> None:
        """Remove the local folders of attempts that ended without keeping them (a worker killed mid-write)."""
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root / SCRATCH):
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat().st_mtime > self.ttl_s:
                        _remove(Path(entry.path))

    @contextlib.contextmanager
    def _storage(self, what: str) -> Iterator[None]:
        """Raise StorageFull for a full volume and StoreUnavailable for any other OSError (read-only, I/O error)."""
        try:
            with no_space_as_storage_full(what, self.retry_after_s):
                yield
        except OSError as exc:
            raise StoreUnavailable(
                f"the job store cannot write {what} ({exc.strerror or exc}); retry later", self.retry_after_s
            ) from exc

    def update(self, job_id: str, change: Callable[[JobRecord], bool | None]) -> JobRecord:
        """Apply `change` to the record under the job's lock; it returns False to leave the record as it was.

        A finished job's record may change only in `selection`; an OSError writing it is StoreUnavailable.
        """
        with self._storage(f"job {job_id}"):
            return self._update(job_id, change)

    def _update(self, job_id: str, change: Callable[[JobRecord], bool | None]) -> JobRecord:
        with self._locked(job_id) as (record, save):
            before = record.status
            final = record.model_dump(exclude={"selection", "updated_at"}) if record.finished else None
            if change(record) is False:
                return record
            if final is not None and record.model_dump(exclude={"selection", "updated_at"}) != final:
                raise RuntimeError(f"job {job_id} finished ({before}); its record changes only in `selection`")
            record.updated_at = time.time()
            if record.finished and record.finished_at is None:
                record.finished_at = record.updated_at
                record.expires_at = record.finished_at + self.ttl_s
            save(record, before)
        if self.on_change is not None:
            self.on_change(record)
        return record

    def claim(self, job_id: str, worker: str, max_attempts: int | None = None) -> JobRecord | None:
        """Start (or take over) the job for `worker`; None if it finished or another live worker holds it.

        A job already tried `max_attempts` times (its workers were lost each time) fails instead. The record
        returned is the attempt's: `Lease.of(record)` is its fencing token.
        """
        if not WORKER_ID.fullmatch(worker):
            raise ValueError(f"worker id {worker[:64]!r} must be 1 to 64 letters, digits, '_' or '-'")
        taken = False

        def take(record: JobRecord) -> bool:
            nonlocal taken
            now = time.time()
            if record.finished or record.cancel_requested:
                return False
            if record.status == "running" and record.heartbeat_at and now - record.heartbeat_at < self.lease_s:
                return False
            if max_attempts is not None and record.attempts >= max_attempts:
                record.status, record.stage, record.heartbeat_at = "failed", None, None
                message = f"gave up after {record.attempts} tries: its worker was lost each time"
                record.error = JobError(message=message, code="too_many_attempts")
                return True
            record.status, record.worker, record.heartbeat_at = "running", worker, now
            record.attempts += 1
            record.started_at = record.started_at or now
            taken = True
            return True

        record = self.update(job_id, take)
        if taken:
            logger.info("job %s claimed by worker %s (try %d)", job_id, worker, record.attempts, extra=job_fields(job_id))
        return record if taken else None

    def request_cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job now; ask a running one to stop (its worker finishes the cancel)."""

        def cancel(record: JobRecord) -> bool:
            if record.finished:
                return False
            record.cancel_requested = True
            if record.status == "queued":
                record.status = "cancelled"
                record.error = JobError(message="the edit was cancelled before it started", code="cancelled")
            return True

        return self.update(job_id, cancel)

    def requeue(self, job_id: str) -> JobRecord:
        """Put a running job whose worker was lost back in the queue (its attempts are kept)."""

        def back(record: JobRecord) -> bool:
            if record.status != "running":
                return False
            record.status, record.worker, record.heartbeat_at, record.stage, record.progress = "queued", None, None, None, None
            record.sent_at = None  # to be sent again
            return True

        return self.update(job_id, back)

    def hand_back(self, lease: Lease) -> JobRecord:
        """Put the attempt's job back in the queue, its attempt not counted: the worker is stopping, the edit did
        not fail. LeaseLost if the job is no longer the attempt's (queued again, taken over or finished)."""

        def back(record: JobRecord) -> None:
            hold(record, lease)
            record.status, record.worker, record.heartbeat_at, record.stage, record.progress = "queued", None, None, None, None
            record.attempts, record.sent_at = max(0, record.attempts - 1), None

        return self.update(lease.job_id, back)

    def next_attempt(self, lease: Lease) -> JobRecord:
        """Count another try of the attempt's job (its model replica was lost), from the start: the record returned
        is the new attempt's (`Lease.of`). LeaseLost if the job is no longer the attempt's."""

        def again(record: JobRecord) -> None:
            hold(record, lease)
            record.attempts += 1
            record.stage, record.progress = None, None

        return self.update(lease.job_id, again)

    def cancel_if_requested(self, job_id: str) -> JobRecord:
        """Finish a job whose cancel came while no worker held it."""

        def cancel(record: JobRecord) -> bool:
            if record.finished or not record.cancel_requested or record.status == "running":
                return False
            record.status = "cancelled"
            record.error = JobError(message="the edit was cancelled", code="cancelled")
            return True

        return self.update(job_id, cancel)

    def heartbeat(self, lease: Lease, stage: str | None = None, step: int | None = None, total: int | None = None) -> JobRecord:
        """Refresh the attempt's lease, with the stage (and denoising step of all steps) it reached; LeaseLost, and
        nothing written, if the job is no longer the attempt's."""

        def beat(record: JobRecord) -> None:
            hold(record, lease)
            record.heartbeat_at = time.time()
            if stage is not None:
                record.stage = stage
                if step is not None and total is not None:
                    record.progress = JobProgress(step=step, total=total)

        return self.update(lease.job_id, beat)

    def finish(
        self,
        lease: Lease,
        status: JobStatus,
        error: JobError | None,
        result: JobResult | None = None,
        timings_s: dict[str, float] | None = None,
    ) -> JobRecord:
        """End the attempt's job (succeeded with its result and timings, its kept outputs made the job's; failed or
        cancelled with its error); LeaseLost, and nothing changed, if the job is no longer the attempt's (it may
        have finished already). The other attempts' outputs are removed."""
        job_id = lease.job_id

        def end(record: JobRecord) -> None:
            hold(record, lease)
            record.status, record.error, record.stage, record.heartbeat_at = status, error, None, None
            if status == "succeeded":
                record.outputs_attempt = _attempt_name(lease)
            if result is not None:
                record.result = result
                record.timings_s = {k: round(v, 4) for k, v in (timings_s or {}).items()}
                if record.progress is not None:  # the latest step written; a finished video did all
                    record.progress = JobProgress(step=record.progress.total, total=record.progress.total)

        record = self.update(job_id, end)
        self._drop_attempts(job_id, keep=record.outputs_attempt)
        code = f" ({record.error.code})" if record.error is not None else ""
        logger.info("job %s %s%s", job_id, status, code, extra=job_fields(job_id))
        return record

    def select(self, job_id: str, selection: Selection) -> JobRecord:
        """Record `selection` as the job's result frame; choosing the label already chosen changes nothing.

        The caller has checked that the job succeeded and that the label names a kept frame (both final).
        """

        def choose(record: JobRecord) -> bool:
            if record.selection is not None and record.selection.label == selection.label:
                return False
            record.selection = selection
            return True

        return self.update(job_id, choose)

    def mark_sent(self, job_id: str) -> JobRecord:
        """Record that the job's message went to the queue now."""

        def sent(record: JobRecord) -> bool:
            if record.status != "queued":
                return False
            record.sent_at = time.time()
            return True

        return self.update(job_id, sent)


def _attempt_name(lease: Lease) -> str:
    return f"{lease.attempt}-{lease.worker}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
