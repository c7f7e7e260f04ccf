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

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from f2f.errors import InvalidConfig
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

if TYPE_CHECKING:
    from f2f.serving.broker import JobsArgs


def open_store(jobs: JobsArgs, cache_dir: Path) -> StoreBase:
    """The job store `jobs.store` names, its files in `jobs.dir`; its errors' Retry-After is `jobs.retry_after_s`."""
    root = jobs.store_dir(cache_dir)
    store: StoreBase
    if jobs.store == "redis":
        from f2f.serving.broker import expand_url
        from f2f.serving.jobs.redis_store import RedisJobStore

        url = expand_url(jobs.redis_url or "", "jobs.redis_url")
        store = RedisJobStore(url, root, jobs.ttl_s, jobs.lease_s, prefix=jobs.redis_prefix)
    else:
        store = JobStore(root, jobs.ttl_s, jobs.lease_s)
    store.retry_after_s = jobs.retry_after_s
    return store


def check_store(jobs: JobsArgs) -> None:
    """At start: the Redis of a redis store answers; else one InvalidConfig naming the field and the URL."""
    if jobs.store != "redis":
        return
    import redis

    from f2f.serving.broker import expand_url

    try:
        redis.Redis.from_url(expand_url(jobs.redis_url or "", "jobs.redis_url"), socket_connect_timeout=5).ping()
    except (redis.RedisError, ValueError) as exc:  # the URL as given: a `${NAME}` reference is never expanded here
        raise InvalidConfig(
            "jobs.redis_url", jobs.redis_url, f"Redis does not answer there ({type(exc).__name__}: {exc})"
        ) from None


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
    "check_store",
    "fingerprint",
    "no_space_as_storage_full",
    "open_store",
    "send",
    "sweep_forever",
    "sweep_once",
]
