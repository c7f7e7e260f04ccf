"""A job's record and what every job store shares: its statuses, its errors, the lease that fences an attempt."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from f2f.errors import F2FError
from f2f.request import WIRE_NAME, CheckedEdit, EditSettings
from f2f.serving.api.wire import JobError, JobPreview, JobProgress, JobResult, Selection
from f2f.serving.logs import job_fields

logger = logging.getLogger("f2f.serving")
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
WORKER_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")  # a worker id names its attempts' folders
PREVIEW = "preview.png"  # a job's latest preview, while it runs (written by its worker; the job's own object)
RETRY_AFTER_S = 10  # Retry-After of a store error, unless the store is told the app's (`jobs.retry_after_s`)


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
    previews: bool = Field(False, description="The caller asked for previews as the edit forms (`preview`).")

    @classmethod
    def of(
        cls, checked: CheckedEdit, return_video: bool = False, return_frames: bool = False, previews: bool = False
    ) -> EditRequest:
        video = checked.settings.video()
        asked = {"return_video": return_video, "return_frames": return_frames, "mask_mode": checked.settings.mask_mode}
        asked["previews"] = previews
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
    preview: JobPreview | None = Field(None, description="The latest preview (`<id>/preview.png`), if the job asked.")
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
    outputs_attempt: str | None = Field(None, description="The attempt whose outputs are the job's (set by its finish).")

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def fingerprint(*parts: bytes | str | dict[str, Any]) -> str:
    """A hash of a request's content, to tell a repeated request from a different one."""
    digest = hashlib.sha256()
    for part in parts:
        data = json.dumps(part, sort_keys=True).encode() if isinstance(part, dict) else part
        data = data.encode() if isinstance(data, str) else data
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def dump(record: JobRecord) -> bytes:
    return record.model_dump_json(indent=1).encode()


def hold(record: JobRecord, lease: Lease) -> None:
    """Raise LeaseLost unless the job is still the attempt's (`Lease.holds`)."""
    if not lease.holds(record):
        raise LeaseLost(
            f"job {lease.job_id}: attempt {lease.attempt} of worker {lease.worker} lost its lease (the job is "
            f"{record.status}, attempt {record.attempts} of worker {record.worker})"
        )


def unreadable(job_id: str, exc: ValueError, retry_after_s: int) -> JobUnreadable:
    """Report a record this version cannot parse (log, metric); the error to raise for it."""
    from f2f.serving import metrics

    first = str(exc).splitlines()[:3]
    logger.error("job %s: its record cannot be read by this version: %s", job_id, " ".join(first), extra=job_fields(job_id))
    metrics.record_unreadable_record()
    message = (
        f"job {job_id}'s record cannot be read by this server's version (another version wrote it, or it is damaged); retry later"
    )
    return JobUnreadable(message, retry_after_s)
