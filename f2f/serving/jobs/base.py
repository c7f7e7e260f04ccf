"""What every job store does the same way, on top of each store's own reads and writes: the record's moves
(claim, heartbeat, finish, cancel, requeue, ...) as changes under the job's lock, fenced by the attempt's lease, and
the job's files (source, mask, each attempt's outputs, the promoted outputs) in a folder."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

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
# the store's own files in a job's folder, and the attempts' folders; the rest are the job's outputs
JOB_FILES = ("job.json", ".lock", "source.png", "mask.png", ATTEMPTS)
Save = Callable[[JobRecord, JobStatus], None]


class StoreBase:
    """The record's moves and the job's files; a store adds `create`, `get`, `_locked` and its queries."""

    def __init__(
        self, root: str | Path, ttl_s: float, lease_s: float = 120.0, on_change: Callable[[JobRecord], None] | None = None
    ) -> None:
        self.root = Path(root)
        self.ttl_s = ttl_s
        self.lease_s = lease_s
        self.retry_after_s = RETRY_AFTER_S  # of StoreUnavailable (the service sets the app's `jobs.retry_after_s`)
        self.on_change = on_change  # told of every record change once it is written (the service pushes it to waiters)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)

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

    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFound(f"unknown or expired job id {job_id[:64]!r}")
        return self.root / "jobs" / job_id

    def path(self, job_id: str, name: str) -> Path:
        """A file of the job (`source.png`, `edited.png`, `candidates/frame_003.png`, ...)."""
        return self.job_dir(job_id) / name

    def get_for(self, job_id: str, owner: str) -> JobRecord:
        """The record if `owner` made the job; JobNotFound otherwise (another key's job looks unknown)."""
        record = self.get(job_id)
        if record.owner != owner:
            raise JobNotFound(f"unknown or expired job id {job_id!r}")
        return record

    def outputs_dir(self, lease: Lease) -> Path:
        """The folder the attempt writes its outputs into (made, empty at first); LeaseLost if the job is not its.

        Its files become the job's only by the attempt's `finish`.
        """
        with self._storage(f"the outputs folder of job {lease.job_id}"), self._locked(lease.job_id) as (record, _):
            hold(record, lease)
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
        """End the attempt's job (succeeded with its result and timings, failed or cancelled with its error) and
        make a succeeded attempt's outputs the job's (`_promote`); LeaseLost, and nothing changed, if the job is no
        longer the attempt's (it may have finished already)."""
        job_id, moved = lease.job_id, []

        def end(record: JobRecord) -> None:
            hold(record, lease)
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
            if entry.name not in JOB_FILES:
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

    def mark_sent(self, job_id: str) -> JobRecord:
        """Record that the job's message went to the queue now."""

        def sent(record: JobRecord) -> bool:
            if record.status != "queued":
                return False
            record.sent_at = time.time()
            return True

        return self.update(job_id, sent)


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
