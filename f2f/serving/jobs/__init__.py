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
- `objects`: where a job's source and outputs live: a local folder (the
  default) or an S3-compatible bucket (`jobs.objects`).
- `sweep`: sending a job's message to the queue, and the sweep each ingress
  replica runs (expiry, lost leases, lost workers, unsent messages).

`open_store` builds the store that `jobs.store` names over the objects that `jobs.objects` names; `check_store`
checks at start that both answer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from f2f.errors import InvalidConfig
from f2f.serving.jobs.base import MASK, SOURCE, StoreBase
from f2f.serving.jobs.file_store import JobStore
from f2f.serving.jobs.objects import NoSuchObject, Objects, ObjectStoreUnavailable, open_objects
from f2f.serving.jobs.queue import expand_url
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
    from f2f.serving.jobs.queue import JobsArgs

logger = logging.getLogger("f2f.serving")


def open_store(jobs: JobsArgs, cache_dir: Path) -> StoreBase:
    """The job store `jobs.store` names, over the objects `jobs.objects` names (default: `jobs.dir`/jobs); its
    errors' Retry-After is `jobs.retry_after_s`."""
    root = jobs.store_dir(cache_dir)
    objects = _objects(jobs)
    store: StoreBase
    if jobs.store == "redis":
        from f2f.serving.jobs.redis_store import RedisJobStore

        url = expand_url(jobs.redis_url or "", "jobs.redis_url")
        store = RedisJobStore(url, root, jobs.ttl_s, jobs.lease_s, prefix=jobs.redis_prefix, objects=objects)
    else:
        store = JobStore(root, jobs.ttl_s, jobs.lease_s, objects=objects)
    store.retry_after_s = jobs.retry_after_s
    return store


def _objects(jobs: JobsArgs) -> Objects | None:
    """The object store `jobs.objects` names (None: the store's default folder)."""
    if jobs.objects is None:
        return None
    return open_objects(expand_url(jobs.objects, "jobs.objects"), jobs.objects_endpoint_url, "jobs.objects")


def check_store(jobs: JobsArgs) -> None:
    """At start (once, where the application is built): the Redis of a redis store and the object store answer;
    else one InvalidConfig naming the field and the URL (as given: a `${NAME}` reference is never expanded in the
    message). A bucket gets a lifecycle rule expiring the prefix after `jobs.ttl_s`."""
    objects = _objects(jobs)
    if objects is not None:
        try:
            objects.check("jobs.objects")
        except InvalidConfig as exc:
            raise InvalidConfig("jobs.objects", jobs.objects, exc.rule) from None
        try:
            objects.expire_after(jobs.ttl_s)
        except StoreUnavailable as exc:  # e.g. no permission on the bucket's rules: the sweep still deletes
            logger.warning("jobs.objects: no lifecycle rule set on %s (%s); the sweep deletes expired jobs", objects.url, exc)
    if jobs.store != "redis":
        return
    import redis

    try:
        redis.Redis.from_url(expand_url(jobs.redis_url or "", "jobs.redis_url"), socket_connect_timeout=5).ping()
    except (redis.RedisError, ValueError) as exc:
        raise InvalidConfig(
            "jobs.redis_url", jobs.redis_url, f"Redis does not answer there ({type(exc).__name__}: {exc})"
        ) from None


__all__ = [
    "FINISHED",
    "JOB_ID",
    "MASK",
    "SOURCE",
    "EditRequest",
    "IdempotencyConflict",
    "JobNotFound",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "JobUnreadable",
    "Lease",
    "LeaseLost",
    "NoSuchObject",
    "ObjectStoreUnavailable",
    "Objects",
    "StorageFull",
    "StoreBase",
    "StoreUnavailable",
    "check_store",
    "fingerprint",
    "no_space_as_storage_full",
    "open_objects",
    "open_store",
    "send",
    "sweep_forever",
    "sweep_once",
]
