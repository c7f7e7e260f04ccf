"""Edit jobs: their records, the stores that keep them, and the sweep that keeps them moving.

- `record`: the job record (`JobRecord`), its statuses, its errors, and the
  `Lease` that fences one attempt at a job.
- `base`: what every store does the same way (`StoreBase`): the record's
  moves (claim, heartbeat, finish, cancel, requeue, select) as changes under
  the job's lock, fenced by the attempt's lease, and the job's files.
- `file_store`: `JobStore`, records and indexes in a directory: the embedded
  default (one machine; or a volume that every node mounts).
- `redis_store`: `RedisJobStore`, records and indexes in Redis: for every
  cluster (its module says how).
- `sweep`: sending a job's message to the queue, and the sweep each ingress
  replica runs (expiry, lost leases, lost workers, unsent messages).

`open_store` builds the store that `jobs.store` names.
"""

from f2f.serving.jobs.base import StoreBase
from f2f.serving.jobs.file_store import JobStore
from f2f.serving.jobs.record import (
    FINISHED,
    JOB_ID,
    EditRequest,
    IdempotencyConflict,
    JobNotFound,
    JobRecord,
    JobStatus,
    JobUnreadable,
    Lease,
    LeaseLost,
    StorageFull,
    StoreUnavailable,
    fingerprint,
    no_space_as_storage_full,
)
from f2f.serving.jobs.sweep import send, sweep_forever, sweep_once

__all__ = [
    "FINISHED",
    "JOB_ID",
    "EditRequest",
    "IdempotencyConflict",
    "JobNotFound",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "JobUnreadable",
    "Lease",
    "LeaseLost",
    "StorageFull",
    "StoreBase",
    "StoreUnavailable",
    "fingerprint",
    "no_space_as_storage_full",
    "send",
    "sweep_forever",
    "sweep_once",
]
