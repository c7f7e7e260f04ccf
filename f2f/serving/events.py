"""Job changes pushed to the requests that wait for them; the job store stays the record.

Rules:

- `JobEvents` is a Serve deployment of one replica that holds, for each job it
  heard of lately, the version (`updated_at`) of its latest record. Every job
  store that is given an `EventsClient` (the ingress's and each edit
  worker's) publishes each change it writes.
- A waiting request (a synchronous edit, an event stream) calls
  `wait(job_id, after, timeout_s)` and is answered as soon as a version newer
  than `after` is published, or at once if one already was, or after
  `timeout_s` with None; it then reads the store. A change nobody published
  (another process's, or one published while the hub restarted) is still
  seen within `timeout_s` (`jobs.poll_interval_s`): push shortens the wait,
  it is never needed for correctness.
- The hub keeps the latest `MAX_JOBS` versions (oldest forgotten first);
  publishing is fire-and-forget. When the hub cannot be reached, waiting
  falls back to sleeping `timeout_s` (logged once per replica).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from f2f.serving.jobs import JobRecord

logger = logging.getLogger("f2f.serving")
MAX_JOBS = 100_000
MAX_WAITERS = 10_000  # requests waiting at once on the hub (its max_ongoing_requests)


class JobEvents:
    """Serve deployment body: the latest version of each job, and the requests waiting for a newer one."""

    def __init__(self) -> None:
        self._latest: OrderedDict[str, float] = OrderedDict()
        self._waiters: dict[str, set[asyncio.Future[float]]] = {}

    @classmethod
    def deployment_options(cls) -> dict[str, Any]:
        """One replica, no CPU reserved (it only passes versions), many waiters at once."""
        return {"name": "JobEvents", "num_replicas": 1, "max_ongoing_requests": MAX_WAITERS, "ray_actor_options": {"num_cpus": 0}}

    def publish(self, job_id: str, version: float) -> None:
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

    async def wait(self, job_id: str, after: float, timeout_s: float) -> None:
        """Until the job has a version newer than `after`, or `timeout_s` passed (a sleep if the hub fails)."""
        started = self.loop.time()
        if await self._call(self.handle.wait.remote(job_id, after, timeout_s)) is None:
            await asyncio.sleep(max(0.0, timeout_s - (self.loop.time() - started)))
