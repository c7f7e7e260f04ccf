"""The Redis job store: records and every index in Redis (redis-py), the job's objects in `objects` (a bucket).

For a cluster: admission, claims and the sweep's queries are a few Redis commands each, whatever the number of jobs
kept, and nothing needs `flock` on a shared file system. The job's objects (source, mask, outputs) are in the object
store (`jobs.objects`: an S3 bucket, so that no node mounts a shared volume); `root` is each node's local scratch.

Keys, under a prefix (`jobs.redis_prefix`, one per deployment):

    job:<id>          the record (JSON); once finished, Redis drops it a day after it expires (the sweep first)
    lock:<id>         the job's lock while a record changes (redis-py's Lock, expires after LOCK_S)
    queued            sorted set: queued jobs, by when they were queued (depth and oldest age)
    unsent, sent      sorted sets of queued jobs: never sent, by when they were queued; sent, by when
    running           sorted set: running jobs, by their last heartbeat (stale leases are a range query)
    expiry            sorted set: finished jobs, by when they expire (the sweep reads only the due ones)
    active:<owner>    set: the owner's queued and running jobs (a key's job cap)
    owner:<owner>     sorted set: the owner's jobs, by when they were made (`list_for`)
    key:<owner, key>  the id of the job an idempotency key made (SET in the create's transaction; once the job
                      finished, it expires with the record); keyof: hash job id -> that key
    workers           sorted set: edit-worker replicas, by when each was last heard from
    events            the channel each change is published on, in its transaction (f2f.serving.jobs.events)

(<owner> and <owner, key> are SHA-256 digests.)

Rules, beyond the file store's (`f2f.serving.jobs.file_store`), which hold here too:

- A record changes under the job's lock, and only if it did not change
  since it was read (WATCH): a writer that lost its lock while paused writes
  nothing (StoreUnavailable), and fencing holds as in every store.
- Every index follows the record in the same transaction (MULTI/EXEC).
- Admission: `create` runs the caller's check and queues the job in one
  optimistic transaction over the queue and the owner's active set (and the
  idempotency key): two creates never pass a bound together; the loser runs
  its check again on what the winner wrote.
- Redis unreachable, read-only or loading: StoreUnavailable (a typed 503
  with Retry-After); a job id that is not 32 hex digits never reaches a key.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from f2f.serving.jobs.base import Save, StoreBase
from f2f.serving.jobs.objects import Objects
from f2f.serving.jobs.record import (
    FINISHED,
    EditRequest,
    JobNotFound,
    JobRecord,
    JobStatus,
    StoreUnavailable,
    dump,
)
from f2f.serving.logs import job_fields

logger = logging.getLogger("f2f.serving")
LOCK_S = 30.0  # a job's lock lapses after this (a holder that died); a change takes milliseconds
LOCK_WAIT_S = 10.0  # how long a change waits for the job's lock before StoreUnavailable
KEEP_EXPIRED_S = 86400.0  # Redis drops a finished record this long after it expired, if no sweep did first
PAGE = 100  # records read at once by `list_for`


class RedisJobStore(StoreBase):
    """Edit jobs in Redis at `url`, under `prefix`; their files under `root`."""

    def __init__(
        self,
        url: str,
        root: str | Path,
        ttl_s: float,
        lease_s: float = 120.0,
        on_change: Callable[[JobRecord], None] | None = None,
        prefix: str = "f2f",
        objects: Objects | None = None,
    ) -> None:
        import redis

        super().__init__(root, ttl_s, lease_s, on_change, objects)
        self.redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
        self.prefix, self.url = prefix, url
        self.events_channel = self._key("events")  # each change, published with it: `<job id> <updated_at>`

    def change_events(self) -> Any:
        """This store's channel, to which each change is published in its transaction (`RedisEvents`)."""
        from f2f.serving.jobs.events import RedisEvents

        return RedisEvents(self.url, self.events_channel)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _job_key(self, job_id: str) -> str:
        return self._key("job", self.key(job_id, "")[:-1])  # a malformed id never reaches a key

    def _owner(self, kind: str, owner: str) -> str:
        return self._key(kind, hashlib.sha256(owner.encode()).hexdigest())

    @contextlib.contextmanager
    def _storage(self, what: str) -> Iterator[None]:
        """Redis's failures (unreachable, read-only, loading, a timeout) and the folder's, as StoreUnavailable."""
        import redis

        try:
            with super()._storage(what):
                yield
        except redis.RedisError as exc:
            message = f"the job store (Redis) failed on {what} ({type(exc).__name__}: {exc}); retry later"
            raise StoreUnavailable(message, self.retry_after_s) from exc

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

        `admit` (e.g. the queue bound) runs in the transaction that queues the job: no two creates pass it together;
        what it raises leaves nothing behind.
        """
        import redis

        now = time.time()
        record = JobRecord(
            id=uuid.uuid4().hex, owner=owner, request=request, fingerprint=fingerprint, created_at=now, updated_at=now
        )
        key = None if idempotency_key is None else self._owner("key", f"{owner}\n{idempotency_key}")  # per owner
        watched = [self._key("queued"), self._owner("active", owner), *([key] if key else [])]
        existing = None
        try:
            with self._storage("a new job"):
                self._put_inputs(record.id, source_png, mask_png)
                with self.redis.pipeline() as pipe:
                    while True:
                        try:
                            pipe.watch(*watched)
                            named = pipe.get(key) if key else None
                            if named is not None:
                                with contextlib.suppress(JobNotFound):
                                    existing = self.get(named.decode())
                            if existing is not None:
                                break
                            if admit is not None:
                                admit()
                            pipe.multi()
                            self._index(pipe, record, None)
                            pipe.sadd(self._owner("active", owner), record.id)
                            pipe.zadd(self._owner("owner", owner), {record.id: record.created_at})
                            if key:
                                pipe.set(key, record.id)
                                pipe.hset(self._key("keyof"), record.id, key)
                            pipe.execute()
                            logger.info("job %s created", record.id, extra=job_fields(record.id))
                            return record, True
                        except redis.WatchError:
                            continue  # another create queued a job, or took the key: check again
        except BaseException:
            self._delete_objects(record.id)
            raise
        self._delete_objects(record.id)
        return self._replayed(existing, fingerprint)

    def _delete_objects(self, job_id: str) -> None:
        with contextlib.suppress(StoreUnavailable):
            self.objects.delete_prefix(job_id)

    def get(self, job_id: str) -> JobRecord:
        """The record; JobNotFound if unknown or expired, JobUnreadable (reported) if this version cannot parse it."""
        with self._storage(f"job {job_id}"):
            data = self.redis.get(self._job_key(job_id))
        if data is None:
            raise JobNotFound(f"unknown or expired job id {job_id!r}")
        return self._parse(job_id, data)

    def list_for(
        self, owner: str, status: JobStatus | None = None, after: str | None = None, limit: int = 20
    ) -> tuple[list[JobRecord], bool]:
        """Up to `limit` of `owner`'s live jobs, newest first, with `status` if given, and older than job `after`
        (the last of the previous page); and whether there are more. JobNotFound if `after` is no job of `owner`'s."""
        index = self._owner("owner", owner)
        start = 0
        with self._storage(f"the jobs of {owner}"):
            if after is not None:
                self._job_key(after)  # a malformed id never reaches a key
                rank = self.redis.zrevrank(index, after)
                if rank is None:
                    raise JobNotFound(f"unknown or expired job id {after!r}")
                start = rank + 1
            page: list[JobRecord] = []
            while True:
                ids = [i.decode() for i in self.redis.zrevrange(index, start, start + PAGE - 1)]
                if not ids:
                    return page, False
                for job_id, data in zip(ids, self.redis.mget([self._key("job", i) for i in ids]), strict=True):
                    if data is None:
                        continue  # expired and swept meanwhile
                    try:
                        record = self._parse(job_id, data)
                    except JobNotFound:
                        continue  # expired, not yet swept
                    if status is None or record.status == status:
                        if len(page) == limit:
                            return page, True
                        page.append(record)
                start += PAGE

    def active_jobs(self, owner: str) -> int:
        """Jobs of `owner` queued or running."""
        with self._storage(f"the jobs of {owner}"):
            return int(self.redis.scard(self._owner("active", owner)))

    # --- changes --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, job_id: str) -> Iterator[tuple[JobRecord, Save]]:
        """The record under the job's lock, watched: saving writes it and its indexes in one transaction, and fails
        (StoreUnavailable) if the record changed since it was read (this lock lapsed while its holder was paused)."""
        import redis
        from redis.exceptions import LockError

        job_key = self._job_key(job_id)
        lock = self.redis.lock(self._key("lock", job_id), timeout=LOCK_S, blocking_timeout=LOCK_WAIT_S)
        if not lock.acquire():
            raise StoreUnavailable(f"job {job_id} stayed locked for {LOCK_WAIT_S:.0f} s; retry later", self.retry_after_s)
        try:
            with self.redis.pipeline() as pipe:
                pipe.watch(job_key)
                data = pipe.get(job_key)
                if data is None:
                    raise JobNotFound(f"unknown or expired job id {job_id!r}")
                record = self._parse(job_id, data)

                def save(new: JobRecord, before: JobStatus) -> None:
                    ending = new.finished and before not in FINISHED
                    idempotency_key = pipe.hget(self._key("keyof"), job_id) if ending else None
                    pipe.multi()
                    self._index(pipe, new, before)
                    if idempotency_key is not None and new.expires_at is not None:  # it lives as long as its job
                        pipe.expireat(idempotency_key, int(new.expires_at + KEEP_EXPIRED_S))
                    try:
                        pipe.execute()
                    except redis.WatchError:
                        message = f"job {job_id} changed while this change was made (its lock lapsed); retry later"
                        raise StoreUnavailable(message, self.retry_after_s) from None

                yield record, save
        finally:
            with contextlib.suppress(LockError, redis.RedisError):
                lock.release()

    def _index(self, pipe: Any, record: JobRecord, before: JobStatus | None) -> None:
        """Queue the commands that write `record` and bring every index in step with its status."""
        job_id, now = record.id, time.time()
        job_key = self._key("job", job_id)
        pipe.set(job_key, dump(record))
        pipe.publish(self.events_channel, f"{job_id} {record.updated_at!r}")  # every replica's waits (RedisEvents)
        queued = record.status == "queued"
        if queued:
            pipe.zadd(self._key("queued"), {job_id: now}, nx=True)  # kept while it stays queued: the oldest's age
            if record.sent_at is None:
                pipe.zadd(self._key("unsent"), {job_id: record.updated_at})
                pipe.zrem(self._key("sent"), job_id)
            else:
                pipe.zadd(self._key("sent"), {job_id: record.sent_at})
                pipe.zrem(self._key("unsent"), job_id)
        elif before in (None, "queued"):
            for name in ("queued", "unsent", "sent"):
                pipe.zrem(self._key(name), job_id)
        if record.status == "running":
            pipe.zadd(self._key("running"), {job_id: record.heartbeat_at or record.updated_at})
        elif before == "running":
            pipe.zrem(self._key("running"), job_id)
        if record.finished:
            pipe.srem(self._owner("active", record.owner), job_id)
            if record.expires_at is not None:
                pipe.zadd(self._key("expiry"), {job_id: record.expires_at})
                pipe.expireat(job_key, int(record.expires_at + KEEP_EXPIRED_S))
        elif before is not None and before != record.status:
            pipe.sadd(self._owner("active", record.owner), job_id)

    # --- queue and expiry -------------------------------------------------------------------------

    def queue_stats(self) -> tuple[int, float]:
        """Jobs waiting for a worker, and the age in seconds of the oldest (0 when none)."""
        with self._storage("the queue"):
            count = int(self.redis.zcard(self._key("queued")))
            oldest = self.redis.zrange(self._key("queued"), 0, 0, withscores=True)
        return count, max(0.0, time.time() - oldest[0][1]) if oldest else 0.0

    def unsent(self, resend_after_s: float, grace_s: float = 5.0) -> list[str]:
        """Queued jobs never sent to the queue (for `grace_s`: the request that made one sends it), or last sent
        over `resend_after_s` ago (their message may be lost)."""
        now = time.time()
        with self._storage("the queue"):
            never = self.redis.zrangebyscore(self._key("unsent"), "-inf", now - grace_s)
            again = self.redis.zrangebyscore(self._key("sent"), "-inf", now - resend_after_s)
        return [job_id.decode() for job_id in (*never, *again)]

    def queued(self) -> list[str]:
        """The ids of the jobs waiting for a worker."""
        with self._storage("the queue"):
            return [job_id.decode() for job_id in self.redis.zrange(self._key("queued"), 0, -1)]

    def worker_alive(self, worker: str) -> None:
        """Record that the edit worker `worker` is alive now."""
        with self._storage(f"worker {worker}"):
            self.redis.zadd(self._key("workers"), {worker: time.time()})

    def lost_workers(self) -> list[str]:
        """Workers not heard from for `lease_s`; each is listed once (then forgotten), by one caller only."""
        with self._storage("the workers"):
            silent = self.redis.zrangebyscore(self._key("workers"), "-inf", time.time() - self.lease_s)
            return [w.decode() for w in silent if self.redis.zrem(self._key("workers"), w)]  # one caller removes each

    def stale_running(self) -> list[str]:
        """Running jobs whose worker stopped refreshing its lease."""
        with self._storage("the running jobs"):
            due = self.redis.zrangebyscore(self._key("running"), "-inf", time.time() - self.lease_s)
        return self._stale(d.decode() for d in due)

    def sweep(self) -> int:
        """Delete the jobs that expired (only those: a range of `expiry`), their files and index entries, and the
        keys that name them; the number of jobs deleted."""
        removed = 0
        with self._storage("the expired jobs"):
            due = [d.decode() for d in self.redis.zrangebyscore(self._key("expiry"), "-inf", time.time(), start=0, num=1000)]
            for job_id in due:
                data = self.redis.get(self._key("job", job_id))
                owner = None
                with contextlib.suppress(ValueError):
                    owner = None if data is None else JobRecord.model_validate_json(data).owner
                self.objects.delete_prefix(job_id)  # first: an error leaves the job due, for the next pass
                key = self.redis.hget(self._key("keyof"), job_id)
                with self.redis.pipeline() as pipe:
                    pipe.delete(self._key("job", job_id))
                    pipe.zrem(self._key("expiry"), job_id)
                    pipe.hdel(self._key("keyof"), job_id)
                    if owner is not None:
                        pipe.zrem(self._owner("owner", owner), job_id)
                    pipe.execute()
                if key is not None and self.redis.get(key) == job_id.encode():
                    self.redis.delete(key)
                logger.info("job %s expired: deleted", job_id, extra=job_fields(job_id))
                removed += 1
        self._sweep_scratch()
        return removed
