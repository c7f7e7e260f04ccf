"""Job changes pushed to the requests that wait for them; the job store stays the record.

Rules:

- A waiting request (a synchronous edit, an event stream) calls
  `wait(job_id, after, timeout_s)` and is answered as soon as a version
  (`updated_at`) newer than `after` is heard of, or at once if one already
  was, or after `timeout_s`; it then reads the store. A change nobody heard
  of is still seen within `timeout_s` (`jobs.poll_interval_s`): push
  shortens the wait, it is never needed for correctness.
- Where the changes come from depends on the store:
  - the Redis store publishes every change on its channel (`<prefix>:events`)
    in the transaction that writes it; each ingress replica subscribes once
    (`RedisEvents`), so a change written on any node wakes the requests
    waiting on every replica, with no deployment in between;
  - the file store (one machine) has `JobEvents`, a Serve deployment of one
    replica: every store given an `EventsClient` (the ingress's and each edit
    worker's) publishes each change it writes to it, fire-and-forget.
- Each keeps the latest `MAX_JOBS` versions (`Versions`; oldest forgotten
  first). When the hub or Redis cannot be reached, waiting falls back to
  sleeping `timeout_s` (logged once until it is back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from f2f.serving.jobs import JobRecord

logger = logging.getLogger("f2f.serving")
MAX_JOBS = 100_000
MAX_WAITERS = 10_000  # requests waiting at once on the hub (its max_ongoing_requests)
RECONNECT_S = 1.0  # between tries to subscribe again after Redis went away


class Versions:
    """The latest version heard of for each job, and the waits for a newer one (on one event loop)."""

    def __init__(self) -> None:
        self._latest: OrderedDict[str, float] = OrderedDict()
        self._waiters: dict[str, set[asyncio.Future[float]]] = {}

    def heard(self, job_id: str, version: float) -> None:
        """A version of the job: kept if newer, and every wait for it answered."""
        if version <= self._latest.get(job_id, float("-inf")):
            return
        self._latest[job_id] = version
        self._latest.move_to_end(job_id)
        while len(self._latest) > MAX_JOBS:
            self._latest.popitem(last=False)
        for waiter in self._waiters.pop(job_id, ()):
            if not waiter.done():
                waiter.set_result(version)

    async def wait(self, job_id: str, after: float, timeout_s: float) -> float | None:
        """The first version of the job newer than `after`; None if none came within `timeout_s`."""
        latest = self._latest.get(job_id)
        if latest is not None and latest > after:
            return latest
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return None
        finally:
            waiting = self._waiters.get(job_id)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._waiters[job_id]


class JobEvents(Versions):
    """Serve deployment body (the file store's hub): the latest version of each job, and the requests waiting."""

    @classmethod
    def deployment_options(cls) -> dict[str, Any]:
        """One replica, no CPU reserved (it only passes versions), many waiters at once."""
        return {"name": "JobEvents", "num_replicas": 1, "max_ongoing_requests": MAX_WAITERS, "ray_actor_options": {"num_cpus": 0}}

    def publish(self, job_id: str, version: float) -> None:
        self.heard(job_id, version)


class EventsClient:
    """A replica's side of the hub: publish from any thread, wait on the replica's event loop."""

    def __init__(self, handle: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.handle, self.loop = handle, loop
        self._pending: set[asyncio.Future[Any]] = set()  # kept: the loop holds tasks weakly
        self._warned = False

    def publish(self, job_id: str, version: float) -> None:
        """Tell the hub of a change (thread-safe, never blocks, never raises)."""
        self.loop.call_soon_threadsafe(self._send, job_id, version)

    def publish_record(self, record: JobRecord) -> None:
        """`publish` a record the job store just wrote (its `on_change`)."""
        self.publish(record.id, record.updated_at)

    def _send(self, job_id: str, version: float) -> None:
        task = asyncio.ensure_future(self._call(self.handle.publish.remote(job_id, version)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _call(self, response: Any) -> Any:
        try:
            return await response
        except Exception as exc:
            if not self._warned:
                self._warned = True
                logger.warning("the job events hub is unreachable (%s); waiting requests poll the store", type(exc).__name__)
            return None

    async def wait(self, job_id: str, after: float, timeout_s: float) -> bool:
        """Until the job has a version newer than `after` (True), or `timeout_s` passed (False; a sleep if the hub fails)."""
        started = self.loop.time()
        if await self._call(self.handle.wait.remote(job_id, after, timeout_s)) is not None:
            return True
        await asyncio.sleep(max(0.0, timeout_s - (self.loop.time() - started)))
        return False


class RedisEvents:
    """A replica's side of the Redis store's channel: one subscription (redis-py's asyncio client), started by the
    first wait on the replica's event loop, kept up (subscribed again after Redis went away)."""

    def __init__(self, url: str, channel: str) -> None:
        self.url, self.channel = url, channel
        self.versions = Versions()
        self._listener: asyncio.Task[None] | None = None

    def publish_record(self, record: JobRecord) -> None:
        """A change this replica wrote (its store's `on_change`): the store published it; its own waits wake now."""
        loop = self._listener.get_loop() if self._listener is not None else None
        if loop is not None:
            loop.call_soon_threadsafe(self.versions.heard, record.id, record.updated_at)

    async def wait(self, job_id: str, after: float, timeout_s: float) -> bool:
        """Until the job has a version newer than `after` (True), or `timeout_s` passed (False)."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.ensure_future(self._listen())
        return await self.versions.wait(job_id, after, timeout_s) is not None

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        warned = False
        while True:
            client = aioredis.Redis.from_url(self.url, socket_connect_timeout=5, health_check_interval=30)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    if warned:
                        logger.info("job events: subscribed to %s again", self.channel)
                        warned = False
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            job_id, _, version = message["data"].decode().partition(" ")
                            self.versions.heard(job_id, float(version))
            except Exception as exc:  # Redis away or restarting: waits poll meanwhile
                if not warned:
                    logger.warning("job events: Redis is unreachable (%s); waiting requests poll the store", type(exc).__name__)
                    warned = True
                await asyncio.sleep(RECONNECT_S)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
