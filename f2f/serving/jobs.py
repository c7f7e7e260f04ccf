"""The job store: edit jobs and their results in a directory (a shared volume in Kubernetes).

Layout under `root` (every file written atomically: a temporary file, then a rename):

    jobs/<id>/job.json        the record (`JobRecord`), rewritten on each change
    jobs/<id>/source.png      the validated source, written before the job is queued
    jobs/<id>/mask.png        the validated mask ("L", 255 = edit here), when the caller sent one
    jobs/<id>/edited.png, collage.png, video.mp4, candidates/frame_NNN.png   outputs
                              (candidates/: every tile of the chosen clip, at the source's size)
    jobs/<id>/attempts/<n>-<worker>/   what attempt n (by that worker) writes, until its finish promotes it
    queued/<id>, running/<id> empty markers: queue depth and age without reading records
    workers/<worker id>       empty, touched by each edit-worker replica while it lives
    keys/<sha256 of Idempotency-Key>   the id of the job that key created
    owners/<sha256 of owner>/<created µs>-<id>   empty: each owner's jobs, newest last by name

Rules:

- A job id is 32 hex digits; anything else is "unknown job" before any path
  is built from it.
- Status moves queued -> running -> succeeded | failed | cancelled, or
  queued -> cancelled; a finished job never changes again, so a message
  delivered twice cannot complete a job twice. The one exception is
  `selection` (`select`): the caller's choice of another candidate frame of a
  succeeded job; it changes which file `/image` serves, never the status, the
  result or any output file.
- Record changes are read-modify-write under an exclusive `flock` on
  `jobs/<id>/.lock` (ingress and worker replicas share the directory).
- A worker holds a running job by a lease: it claims the job (queued, or
  running with a heartbeat older than `lease_s`) and refreshes the heartbeat
  while it works. A running job whose heartbeat went stale lost its worker:
  `stale_running` finds it, and the service queues it again.
- Fencing: a claim's record names the attempt (`attempts`), the token of
  that try (`Lease.of`). Every write of the attempt carries its lease
  (`heartbeat` and its progress, `outputs_dir`, `next_attempt`, `hand_back`,
  `finish`) and is refused with `LeaseLost`, changing nothing, unless the
  job is still running, by that worker, at that attempt: a worker paused
  past its lease, whose job was queued again or taken over (attempt n + 1),
  or finished, can no longer change it. The worker is part of the token
  because a hand-back does not count its attempt: the next claim reuses the
  number. A Redis store checks the same three fields in one script.
- Outputs are written per attempt (`outputs_dir`: attempts/<n>-<worker>/)
  and become the job's only by its fenced `finish`: under the job's lock,
  what earlier attempts left in the job's folder is removed, a succeeded
  attempt's files are moved in (renames; moved back if the record cannot
  be written) and the record is written; then the attempts/ folder goes.
  `path` and `output` answer the promoted files; a stale attempt's files
  never become the job's.
- Unreadable records: one this version cannot parse (an unknown field,
  written by a newer version during a rolling upgrade, or a damaged file)
  is `JobUnreadable` (logged with the job id, counted in
  `f2f_job_records_unreadable_total`); the sweep and its queries skip it,
  the routes answer a typed 503 with Retry-After (the job exists, it is not
  unknown: a newer replica can read it).
- A read-only or failing volume: a write that fails with an OSError is
  `StoreUnavailable` (a full one `StorageFull`), a typed 503 with
  Retry-After (`retry_after_s`), never an internal error.
- Expiry: a finished job expires `ttl_s` after it finished. An expired job
  answers "unknown or expired" at once and is deleted by `sweep`.
- Idempotency: the first request with a key creates the job and the key
  file; a later one with the same key gets that job, if the request is the
  same (same fingerprint), else `IdempotencyConflict`. Keys are per owner
  (API key): two callers' keys never meet.
- Ownership: a job belongs to the API key that made it (`owner`);
  `get_for` answers JobNotFound for anyone else's job. `list_for` pages
  through one owner's jobs, newest first, from that owner's index: it reads
  that owner's records only, never every job.
- Sending: `sent_at` is when the job's message last went to the queue (None:
  never, the broker was down). `unsent` lists queued jobs never sent or sent
  longer ago than a given time: the service sends them again, since a broker
  that restarted without its data lost their messages. A duplicate message
  is harmless: only one claim runs a job.
- Workers: each edit-worker replica touches `workers/<id>` every
  heartbeat; `lost_workers` lists (once) those silent for `lease_s`. A lost
  worker may have taken waiting jobs' messages with it (between taking a
  message and claiming its job): the service sends every queued job again.
- A full volume: `create` raises StorageFull and leaves nothing behind.
- A finished job's record never changes again but for `selection`
  (`update` refuses any other change).
- Admission: `create` runs the caller's check (the queue bound, a key's job
  cap) and queues the job under one exclusive `flock` on `.queue.lock`, so
  concurrent requests, from one ingress replica or several, never pass a
  bound together.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from f2f.errors import F2FError
from f2f.request import WIRE_NAME, CheckedEdit, EditSettings
from f2f.result import write_atomic
from f2f.serving.logs import job_fields
from f2f.serving.protocol import JobError, JobProgress, JobResult, Selection

logger = logging.getLogger("f2f.serving")
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
WORKER_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")  # a worker id names its attempts' folders
ATTEMPTS = "attempts"
RETRY_AFTER_S = 10  # Retry-After of a store error, unless the store is told the app's (`jobs.retry_after_s`)
# the store's own files in a job's folder, and the attempts' folders; the rest are the job's outputs
_JOB_FILES = ("job.json", ".lock", "source.png", "mask.png", ATTEMPTS)


class JobNotFound(F2FError):
    """No job has this id, or it expired."""

    code = "job_not_found"


class IdempotencyConflict(F2FError):
    """An Idempotency-Key was used before with a different request."""

    code = "idempotency_key_reused"


class LeaseLost(F2FError):
    """A write of an attempt at a job that is no longer that attempt's: the job was queued again, taken over by a
    newer attempt, or finished. Nothing was changed."""

    code = "lease_lost"


class StoreUnavailable(F2FError):
    """The job store cannot be written or read now (a read-only or failing volume); worth a retry later."""

    code = "store_unavailable"

    def __init__(self, message: str, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageFull(StoreUnavailable):
    """The job store's volume has no space (or quota) left."""

    code = "storage_full"


class JobUnreadable(StoreUnavailable):
    """A job record this version cannot parse: written by another (newer) version, or damaged."""

    code = "job_unreadable"


class Lease(NamedTuple):
    """A worker's hold on one attempt at a running job: the fencing token every write of that attempt carries."""

    job_id: str
    worker: str
    attempt: int

    @classmethod
    def of(cls, record: JobRecord) -> Lease:
        """The lease of the record that `claim` or `next_attempt` returned."""
        if record.worker is None:
            raise ValueError(f"job {record.id} is not held by a worker ({record.status})")
        return cls(record.id, record.worker, record.attempts)

    def holds(self, record: JobRecord) -> bool:
        """Whether the job is still this attempt's: running, by this worker, at this attempt."""
        return record.status == "running" and record.worker == self.worker and record.attempts == self.attempt


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def no_space_as_storage_full(what: str, retry_after_s: int = RETRY_AFTER_S) -> Iterator[None]:
    """Raise StorageFull, naming `what` could not be written, for an OSError that means the volume is full."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        message = f"the job volume is full: {what} could not be written ({os.strerror(exc.errno)})"
        raise StorageFull(message, retry_after_s) from exc


class EditRequest(BaseModel):
    """What the caller asked for, checked (`f2f.request.check_edit`): the prompt, the seeds and the settings that
    differ from the server's (stored under their config names, as job records have always held them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    seeds: list[int] = Field(description="Seeds of the videos, in order (one video each).")
    num_frames: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    return_video: bool = False
    return_frames: bool = False
    mask: bool = Field(False, description="The caller sent a mask (stored as mask.png beside the source).")
    mask_mode: Literal["latent", "composite"] | None = None

    @classmethod
    def of(cls, checked: CheckedEdit, return_video: bool = False, return_frames: bool = False) -> EditRequest:
        video = checked.settings.video()
        asked = {"return_video": return_video, "return_frames": return_frames, "mask_mode": checked.settings.mask_mode}
        return cls(prompt=checked.text, seeds=checked.seeds, mask=checked.mask is not None, **asked, **video)

    def settings(self) -> EditSettings:
        """The settings as the caller set them (wire names)."""
        asked = {"video." + name: getattr(self, name) for name in ("num_frames", "num_inference_steps", "guidance_scale")}
        asked["mask.mode"] = self.mask_mode
        return EditSettings(**{WIRE_NAME[field]: value for field, value in asked.items() if value is not None})


class JobRecord(BaseModel):
    """One edit job, as stored in job.json."""

    model_config = ConfigDict(extra="forbid")

    id: str
    owner: str = Field("anonymous", description="The API key that made the job; only it may see the job.")
    status: JobStatus = "queued"
    stage: str | None = Field(None, description="The pipeline stage running now: caption, generate, select.")
    progress: JobProgress | None = None
    request: EditRequest
    fingerprint: str = ""
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    attempts: int = 0
    cancel_requested: bool = False
    sent_at: float | None = Field(None, description="When the job's message last went to the queue.")
    worker: str | None = None
    heartbeat_at: float | None = None
    timings_s: dict[str, float] = Field(default_factory=dict)
    result: JobResult | None = None
    error: JobError | None = None
    selection: Selection | None = Field(None, description="The caller's choice of the result frame, if any.")

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class JobStore:
    """Edit jobs in a directory; safe to share between processes on one file system."""

    def __init__(
        self, root: str | Path, ttl_s: float, lease_s: float = 120.0, on_change: Callable[[JobRecord], None] | None = None
    ) -> None:
        self.root = Path(root)
        self.ttl_s = ttl_s
        self.lease_s = lease_s
        self.retry_after_s = RETRY_AFTER_S  # of StoreUnavailable (the service sets the app's `jobs.retry_after_s`)
        self.on_change = on_change  # told of every record change once it is written (the service pushes it to waiters)
        for sub in ("jobs", "queued", "running", "keys", "workers"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if not (self.root / "owners").is_dir():
            self._index_owners()

    # --- paths ----------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFound(f"unknown or expired job id {job_id[:64]!r}")
        return self.root / "jobs" / job_id

    def path(self, job_id: str, name: str) -> Path:
        """A file of the job (`source.png`, `edited.png`, `candidates/frame_003.png`, ...)."""
        return self.job_dir(job_id) / name

    # --- create and read ------------------------------------------------------------------------

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

        `admit` (e.g. the queue bound) runs under the store's queue lock just before the job is queued,
        so no two creates pass it together; what it raises leaves nothing behind.
        """
        now = time.time()
        record = JobRecord(
            id=uuid.uuid4().hex, owner=owner, request=request, fingerprint=fingerprint, created_at=now, updated_at=now
        )
        folder = self.root / "jobs" / record.id
        try:
            with self._storage("a new job"):
                folder.mkdir()
                _atomic_write(folder / "source.png", source_png)
                if mask_png is not None:
                    _atomic_write(folder / "mask.png", mask_png)
                _atomic_write(folder / "job.json", _dump(record))
                with self._queue_lock():
                    if admit is not None:
                        admit()
                    existing = None
                    if idempotency_key is not None:
                        existing = self._claim_key(f"{owner}\n{idempotency_key}", record.id)  # keys are per owner
                    if existing is None:
                        self._owner_dir(owner).mkdir(exist_ok=True)
                        _touch(self._owner_dir(owner) / _owner_entry(record))
                        _touch(self.root / "queued" / record.id)
                        logger.info("job %s created", record.id, extra=job_fields(record.id))
                        return record, True
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        shutil.rmtree(folder, ignore_errors=True)
        if existing.fingerprint != fingerprint:
            raise IdempotencyConflict(
                f"Idempotency-Key was already used for job {existing.id} with a different request; use a new key"
            )
        return existing, False

    @contextlib.contextmanager
    def _queue_lock(self) -> Iterator[None]:
        """An exclusive `flock` on `.queue.lock`: one create at a time passes `admit` and queues its job."""
        lock = os.open(self.root / ".queue.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock)

    def _claim_key(self, key: str, job_id: str) -> JobRecord | None:
        """Link `key` to `job_id`, or return the live job it already names.

        The key file appears whole or not at all (a hard link of a written file), so a
        concurrent request never reads it half-written.
        """
        path = self.root / "keys" / hashlib.sha256(key.encode()).hexdigest()
        written = path.with_name(f".{path.name}.{job_id}")
        _atomic_write(written, job_id.encode())
        try:
            for _ in range(3):
                try:
                    os.link(written, path)
                    return None
                except FileExistsError:
                    try:
                        return self.get(path.read_text().strip())
                    except (JobNotFound, OSError):
                        _unlink_if_same(path, path.read_bytes() if path.exists() else b"")
            raise RuntimeError("could not claim the idempotency key (concurrent expiry)")
        finally:
            written.unlink(missing_ok=True)

    def get(self, job_id: str) -> JobRecord:
        """The record; JobNotFound if unknown or expired, JobUnreadable (reported) if this version cannot parse it."""
        try:
            data = (self.job_dir(job_id) / "job.json").read_bytes()
        except FileNotFoundError:
            raise JobNotFound(f"unknown or expired job id {job_id!r}") from None
        except OSError as exc:
            raise StoreUnavailable(
                f"the job store cannot read job {job_id} ({exc.strerror or exc}); retry later", self.retry_after_s
            ) from exc
        try:
            record = JobRecord.model_validate_json(data)
        except ValueError as exc:
            raise _unreadable(job_id, exc, self.retry_after_s) from None
        if record.expires_at is not None and record.expires_at <= time.time():
            raise JobNotFound(f"unknown or expired job id {job_id!r}")
        return record

    def get_for(self, job_id: str, owner: str) -> JobRecord:
        """The record if `owner` made the job; JobNotFound otherwise (another key's job looks unknown)."""
        record = self.get(job_id)
        if record.owner != owner:
            raise JobNotFound(f"unknown or expired job id {job_id!r}")
        return record

    def list_for(
        self, owner: str, status: JobStatus | None = None, after: str | None = None, limit: int = 20
    ) -> tuple[list[JobRecord], bool]:
        """Up to `limit` of `owner`'s live jobs, newest first, with `status` if given, and older than job `after`
        (the last of the previous page); and whether there are more. JobNotFound if `after` is no job of `owner`'s."""
        folder = self._owner_dir(owner)
        entries = sorted((entry.name for entry in os.scandir(folder)), reverse=True) if folder.is_dir() else []
        if after is not None:
            self.job_dir(after)  # a malformed id never reaches a path
            cursor = next((i for i, name in enumerate(entries) if name.endswith(f"-{after}")), None)
            if cursor is None:
                raise JobNotFound(f"unknown or expired job id {after!r}")
            entries = entries[cursor + 1 :]
        page: list[JobRecord] = []
        for name in entries:
            try:
                record = self.get(name.rpartition("-")[2])
            except JobNotFound:
                continue  # expired, not yet swept
            if status is None or record.status == status:
                if len(page) == limit:
                    return page, True
                page.append(record)
        return page, False

    def _owner_dir(self, owner: str) -> Path:
        return self.root / "owners" / hashlib.sha256(owner.encode()).hexdigest()

    def _index_owners(self) -> None:
        """Index the jobs of a store made before owners/ existed (once, when a new version first opens it)."""
        for entry in os.scandir(self.root / "jobs"):
            with contextlib.suppress(OSError, ValueError):
                record = JobRecord.model_validate_json(Path(entry.path, "job.json").read_bytes())
                self._owner_dir(record.owner).mkdir(parents=True, exist_ok=True)
                _touch(self._owner_dir(record.owner) / _owner_entry(record))
        (self.root / "owners").mkdir(exist_ok=True)

    def active_jobs(self, owner: str) -> int:
        """Jobs of `owner` queued or running."""
        count = 0
        for sub in ("queued", "running"):
            for entry in os.scandir(self.root / sub):
                with contextlib.suppress(JobNotFound, StoreUnavailable):
                    count += self.get(entry.name).owner == owner
        return count

    def outputs_dir(self, lease: Lease) -> Path:
        """The folder the attempt writes its outputs into (made, empty at first); LeaseLost if the job is not its.

        Its files become the job's only by the attempt's `finish`.
        """
        with self._storage(f"the outputs folder of job {lease.job_id}"), self._locked(lease.job_id) as record:
            _hold(record, lease)
            folder = self._attempt_path(lease)
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _attempt_path(self, lease: Lease) -> Path:
        return self.job_dir(lease.job_id) / ATTEMPTS / f"{lease.attempt}-{lease.worker}"

    def output(self, job_id: str, name: str) -> Path | None:
        """The path of an output file of a live job, or None if it has no such file."""
        self.get(job_id)
        path = self.path(job_id, name)
        return path if path.is_file() else None

    # --- changes --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, job_id: str) -> Iterator[JobRecord]:
        folder = self.job_dir(job_id)
        try:
            lock = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            raise JobNotFound(f"unknown or expired job id {job_id!r}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self.get(job_id)
        finally:
            os.close(lock)

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
        with self._locked(job_id) as record:
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
            _atomic_write(self.job_dir(job_id) / "job.json", _dump(record))
            if record.status != before:
                self._mark(job_id, record.status)
        if self.on_change is not None:
            self.on_change(record)
        return record

    def _mark(self, job_id: str, status: JobStatus) -> None:
        """Keep the queued/ and running/ markers in step with the status."""
        for sub in ("queued", "running"):
            marker = self.root / sub / job_id
            if sub == status:
                _touch(marker)
            else:
                marker.unlink(missing_ok=True)

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
            _hold(record, lease)
            record.status, record.worker, record.heartbeat_at, record.stage, record.progress = "queued", None, None, None, None
            record.attempts, record.sent_at = max(0, record.attempts - 1), None

        return self.update(lease.job_id, back)

    def next_attempt(self, lease: Lease) -> JobRecord:
        """Count another try of the attempt's job (its model replica was lost), from the start: the record returned
        is the new attempt's (`Lease.of`). LeaseLost if the job is no longer the attempt's."""

        def again(record: JobRecord) -> None:
            _hold(record, lease)
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
            _hold(record, lease)
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
        """End the attempt's job (succeeded with its result and timings, failed or cancelled with its error) and
        make a succeeded attempt's outputs the job's (`_promote`); LeaseLost, and nothing changed, if the job is no
        longer the attempt's (it may have finished already)."""
        job_id, moved = lease.job_id, []

        def end(record: JobRecord) -> None:
            _hold(record, lease)
            moved.extend(self._promote(lease, status == "succeeded"))
            record.status, record.error, record.stage, record.heartbeat_at = status, error, None, None
            if result is not None:
                record.result = result
                record.timings_s = {k: round(v, 4) for k, v in (timings_s or {}).items()}
                if record.progress is not None:  # the latest step written; a finished video did all
                    record.progress = JobProgress(step=record.progress.total, total=record.progress.total)

        try:
            record = self.update(job_id, end)
        except StoreUnavailable:
            _move_back(moved, self._attempt_path(lease))  # the record still says running: its outputs are the attempt's
            raise
        shutil.rmtree(self.job_dir(job_id) / ATTEMPTS, ignore_errors=True)  # every attempt's folder: none is needed now
        code = f" ({record.error.code})" if record.error is not None else ""
        logger.info("job %s %s%s", job_id, status, code, extra=job_fields(job_id))
        return record

    def _promote(self, lease: Lease, keep: bool) -> list[Path]:
        """Under the job's lock: remove what earlier attempts left in the job's folder and move the attempt's outputs
        in if `keep` (a succeeded attempt); the paths moved in."""
        folder, attempt, moved = self.job_dir(lease.job_id), self._attempt_path(lease), []
        for entry in os.scandir(folder):
            if entry.name not in _JOB_FILES:
                _remove(Path(entry.path))
        try:
            if keep and attempt.is_dir():
                for entry in os.scandir(attempt):
                    os.replace(entry.path, folder / entry.name)
                    moved.append(folder / entry.name)
        except OSError:
            _move_back(moved, attempt)
            raise
        return moved

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

    # --- queue and expiry -------------------------------------------------------------------------

    def queue_stats(self) -> tuple[int, float]:
        """Jobs waiting for a worker, and the age in seconds of the oldest (0 when none)."""
        now, oldest, count = time.time(), 0.0, 0
        for entry in os.scandir(self.root / "queued"):
            with contextlib.suppress(FileNotFoundError):
                oldest = max(oldest, now - entry.stat().st_mtime)
                count += 1
        return count, oldest

    def mark_sent(self, job_id: str) -> JobRecord:
        """Record that the job's message went to the queue now."""

        def sent(record: JobRecord) -> bool:
            if record.status != "queued":
                return False
            record.sent_at = time.time()
            return True

        return self.update(job_id, sent)

    def unsent(self, resend_after_s: float, grace_s: float = 5.0) -> list[str]:
        """Queued jobs never sent to the queue, or last sent over `resend_after_s` ago (their message may be lost).

        A job never sent counts once it is `grace_s` old: the request that made it sends it itself.
        """
        due, now = [], time.time()
        for entry in os.scandir(self.root / "queued"):
            with contextlib.suppress(JobNotFound, StoreUnavailable):
                record = self.get(entry.name)
                if record.status != "queued":
                    continue
                never = record.sent_at is None and now - record.updated_at >= grace_s
                if never or (record.sent_at is not None and now - record.sent_at >= resend_after_s):
                    due.append(record.id)
        return due

    def queued(self) -> list[str]:
        """The ids of the jobs waiting for a worker."""
        return [entry.name for entry in os.scandir(self.root / "queued")]

    def worker_alive(self, worker: str) -> None:
        """Record that the edit worker `worker` is alive now."""
        (self.root / "workers" / worker).touch()

    def lost_workers(self) -> list[str]:
        """Workers not heard from for `lease_s`; each is listed once (then forgotten), by one caller only."""
        lost, now = [], time.time()
        for entry in os.scandir(self.root / "workers"):
            with contextlib.suppress(OSError):  # gone, or a read-only volume: listed once it can be forgotten
                if now - entry.stat().st_mtime >= self.lease_s:
                    os.unlink(entry.path)
                    lost.append(entry.name)
        return lost

    def stale_running(self) -> list[str]:
        """Running jobs whose worker stopped refreshing its lease."""
        stale = []
        for entry in os.scandir(self.root / "running"):
            try:
                record = self.get(entry.name)
            except (JobNotFound, StoreUnavailable):  # an unreadable record is reported by `get` and skipped
                continue
            heartbeat = record.heartbeat_at or record.updated_at
            if record.status == "running" and time.time() - heartbeat >= self.lease_s:
                stale.append(record.id)
        return stale

    def sweep(self) -> int:
        """Delete expired jobs and the keys that name them; the number of jobs deleted."""
        now, removed = time.time(), 0
        for entry in os.scandir(self.root / "jobs"):
            try:
                record = JobRecord.model_validate_json(Path(entry.path, "job.json").read_bytes())
            except OSError:
                continue
            except ValueError as exc:
                _unreadable(entry.name, exc, self.retry_after_s)  # reported; the sweep goes on
                continue
            if record.expires_at is not None and record.expires_at <= now:
                shutil.rmtree(entry.path, ignore_errors=True)
                logger.info("job %s expired: deleted", record.id, extra=job_fields(record.id))
                removed += 1
        for entry in os.scandir(self.root / "keys"):
            with contextlib.suppress(OSError):
                if not (self.root / "jobs" / Path(entry.path).read_text().strip()).exists():
                    os.unlink(entry.path)
        for owner in os.scandir(self.root / "owners"):
            for entry in os.scandir(owner.path):
                if not (self.root / "jobs" / entry.name.rpartition("-")[2]).exists():
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        return removed


# --- the queue side: sending job messages and the sweep ---------------------------------------------------


async def send(store: JobStore, queue: Any, job_id: str) -> bool:
    """Send the job's message to the queue (`queue.send(job_id)`) and record it; False (logged) if the broker refused."""
    try:
        await asyncio.to_thread(queue.send, job_id)
    except Exception as exc:
        refused = (job_id, type(exc).__name__, exc)
        logger.warning("the job queue refused job %s (%s: %s); it is sent again later", *refused, extra=job_fields(job_id))
        return False
    await asyncio.to_thread(store.mark_sent, job_id)
    logger.info("job %s sent to the queue", job_id, extra=job_fields(job_id))
    return True


async def sweep_once(store: JobStore, queue: Any, resend_after_s: float) -> None:
    """Delete expired jobs, queue again the running jobs whose worker was lost, send unsent jobs, and send every
    waiting job again when a worker was lost (it may have taken messages it never claimed)."""
    await asyncio.to_thread(store.sweep)
    for job_id in await asyncio.to_thread(store.stale_running):
        if (await asyncio.to_thread(store.requeue, job_id)).status == "queued":
            logger.warning("job %s lost its worker; queued again", job_id, extra=job_fields(job_id))
            await send(store, queue, job_id)
    lost = await asyncio.to_thread(store.lost_workers)
    due = await asyncio.to_thread(store.queued if lost else partial(store.unsent, resend_after_s))
    if lost:
        logger.warning("edit worker(s) %s lost; sending the %d waiting jobs again", ", ".join(lost), len(due))
    for job_id in due:
        if not await send(store, queue, job_id):
            break  # the broker is still down: try again at the next sweep


async def sweep_forever(store: JobStore, queue: Any, every_s: float, resend_after_s: float) -> None:
    """`sweep_once` every `every_s` (each ingress replica runs one)."""
    while True:
        try:
            await sweep_once(store, queue, resend_after_s)
        except Exception:
            logger.exception("the job store sweep failed")
        await asyncio.sleep(every_s)


def fingerprint(*parts: bytes | str | dict[str, Any]) -> str:
    """A hash of a request's content, to tell a repeated request from a different one."""
    digest = hashlib.sha256()
    for part in parts:
        data = json.dumps(part, sort_keys=True).encode() if isinstance(part, dict) else part
        data = data.encode() if isinstance(data, str) else data
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def _owner_entry(record: JobRecord) -> str:
    """The name of the job's entry in its owner's index: sorts by creation time."""
    return f"{round(record.created_at * 1e6):020d}-{record.id}"


def _dump(record: JobRecord) -> bytes:
    return record.model_dump_json(indent=1).encode()


def _atomic_write(path: Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def _hold(record: JobRecord, lease: Lease) -> None:
    """Raise LeaseLost unless the job is still the attempt's (`Lease.holds`)."""
    if not lease.holds(record):
        raise LeaseLost(
            f"job {lease.job_id}: attempt {lease.attempt} of worker {lease.worker} lost its lease (the job is "
            f"{record.status}, attempt {record.attempts} of worker {record.worker})"
        )


def _unreadable(job_id: str, exc: ValueError, retry_after_s: int) -> JobUnreadable:
    """Report a record this version cannot parse (log, metric); the error to raise for it."""
    from f2f.serving import metrics

    first = str(exc).splitlines()[:3]
    logger.error("job %s: its record cannot be read by this version: %s", job_id, " ".join(first), extra=job_fields(job_id))
    metrics.record_unreadable_record()
    message = (
        f"job {job_id}'s record cannot be read by this server's version (another version wrote it, or it is damaged); retry later"
    )
    return JobUnreadable(message, retry_after_s)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _move_back(moved: list[Path], attempt: Path) -> None:
    """Undo a promotion whose record could not be written: the files go back to the attempt's folder."""
    for path in moved:
        with contextlib.suppress(OSError):
            os.replace(path, attempt / path.name)


def _unlink_if_same(path: Path, content: bytes) -> None:
    """Remove a key file that names an expired job, unless another request replaced it meanwhile."""
    with contextlib.suppress(OSError):
        if path.read_bytes() == content:
            path.unlink()


def _touch(path: Path) -> None:
    path.touch(exist_ok=True)
