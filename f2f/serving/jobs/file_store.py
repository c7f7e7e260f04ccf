"""The file job store: edit jobs in a directory on one machine (the embedded default: no server needed).

Layout under `root` (every file written atomically: a temporary file, then a rename):

    jobs/<id>/job.json        the record (`JobRecord`), rewritten on each change
    jobs/<id>/.lock           the job's lock
    jobs/<id>/source.png, mask.png, attempts/<n>-<worker>/..., cache/...   the job's objects, when they are kept
                              in the default local folder (`jobs/`; `f2f.serving.jobs.base` says what they are)
    scratch/<id>-<n>-<worker>/  an attempt's outputs while it writes them
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
- Outputs are written per attempt (`keep_outputs`: attempts/<n>-<worker>/)
  and become the job's only by its fenced `finish`, which names the attempt
  in the record; a stale attempt's files never become the job's.
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

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from f2f.result import write_atomic
from f2f.serving.jobs.base import Save, StoreBase
from f2f.serving.jobs.objects import Objects
from f2f.serving.jobs.record import (
    EditRequest,
    JobNotFound,
    JobRecord,
    JobStatus,
    StoreUnavailable,
    dump,
    unreadable,
)
from f2f.serving.logs import job_fields

logger = logging.getLogger("f2f.serving")


class JobStore(StoreBase):
    """Edit jobs in a directory; safe to share between processes on one file system."""

    def __init__(
        self,
        root: str | Path,
        ttl_s: float,
        lease_s: float = 120.0,
        on_change: Callable[[JobRecord], None] | None = None,
        objects: Objects | None = None,
    ) -> None:
        super().__init__(root, ttl_s, lease_s, on_change, objects)
        for sub in ("jobs", "queued", "running", "keys", "workers"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if not (self.root / "owners").is_dir():
            self._index_owners()

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
        folder = self.job_dir(record.id)
        try:
            with self._storage("a new job"):
                self._put_inputs(record.id, source_png, mask_png)
                folder.mkdir(exist_ok=True)  # where the default local objects are
                _atomic_write(folder / "job.json", dump(record))
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
            self._delete(record.id)
            raise
        self._delete(record.id)
        return self._replayed(existing, fingerprint)

    def job_dir(self, job_id: str) -> Path:
        """The job's folder (its record); JobNotFound for an id that is no job's."""
        return self.root / "jobs" / self.key(job_id, "")[:-1]

    def _delete(self, job_id: str) -> None:
        """The job's objects and folder, whatever is left of them."""
        with contextlib.suppress(StoreUnavailable):
            self.objects.delete_prefix(job_id)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

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
        return self._parse(job_id, data)

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

    @contextlib.contextmanager
    def _locked(self, job_id: str) -> Iterator[tuple[JobRecord, Save]]:
        """The record under an exclusive `flock` on the job's `.lock`; saving rewrites job.json and the markers."""
        folder = self.job_dir(job_id)
        try:
            lock = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            raise JobNotFound(f"unknown or expired job id {job_id!r}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self.get(job_id), self._save
        finally:
            os.close(lock)

    def _save(self, record: JobRecord, before: JobStatus) -> None:
        _atomic_write(self.job_dir(record.id) / "job.json", dump(record))
        if record.status != before:
            self._mark(record.id, record.status)

    def _mark(self, job_id: str, status: JobStatus) -> None:
        """Keep the queued/ and running/ markers in step with the status."""
        for sub in ("queued", "running"):
            marker = self.root / sub / job_id
            if sub == status:
                _touch(marker)
            else:
                marker.unlink(missing_ok=True)

    def queue_stats(self) -> tuple[int, float]:
        """Jobs waiting for a worker, and the age in seconds of the oldest (0 when none)."""
        now, oldest, count = time.time(), 0.0, 0
        for entry in os.scandir(self.root / "queued"):
            with contextlib.suppress(FileNotFoundError):
                oldest = max(oldest, now - entry.stat().st_mtime)
                count += 1
        return count, oldest

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
        return self._stale(entry.name for entry in os.scandir(self.root / "running"))

    def sweep(self) -> int:
        """Delete expired jobs and the keys that name them; the number of jobs deleted."""
        now, removed = time.time(), 0
        for entry in os.scandir(self.root / "jobs"):
            try:
                record = JobRecord.model_validate_json(Path(entry.path, "job.json").read_bytes())
            except OSError:
                continue
            except ValueError as exc:
                unreadable(entry.name, exc, self.retry_after_s)  # reported; the sweep goes on
                continue
            if record.expires_at is not None and record.expires_at <= now:
                self._delete(record.id)
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
        self._sweep_scratch()
        return removed


def _owner_entry(record: JobRecord) -> str:
    """The name of the job's entry in its owner's index: sorts by creation time."""
    return f"{round(record.created_at * 1e6):020d}-{record.id}"


def _atomic_write(path: Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def _unlink_if_same(path: Path, content: bytes) -> None:
    """Remove a key file that names an expired job, unless another request replaced it meanwhile."""
    with contextlib.suppress(OSError):
        if path.read_bytes() == content:
            path.unlink()


def _touch(path: Path) -> None:
    path.touch(exist_ok=True)
