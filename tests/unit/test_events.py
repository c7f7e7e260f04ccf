"""Job changes pushed to waiting requests (`f2f.serving.jobs.events`), with the job store still the record.

The hub is the real `JobEvents` class behind an in-process stand-in for its Serve handle.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from f2f.config import F2FConfig
from f2f.request import RequestLimits
from f2f.serving.api.auth import AuthArgs
from f2f.serving.api.service import EditService
from f2f.serving.jobs import EditRequest, JobStore, Lease
from f2f.serving.jobs.events import EventsClient, JobEvents
from f2f.serving.jobs.queue import JobsArgs


class _Method:
    def __init__(self, call: Any) -> None:
        self.call, self.answers = call, []

    def remote(self, *args: Any) -> Any:
        async def run() -> Any:
            result = self.call(*args)
            result = await result if asyncio.iscoroutine(result) else result
            self.answers.append(result)
            return result

        return run()


class InProcessHandle:
    """What a Serve handle to JobEvents offers (`.publish.remote`, `.wait.remote`), calling one JobEvents object."""

    def __init__(self, hub: Any) -> None:
        self.publish, self.wait = _Method(hub.publish), _Method(hub.wait)


class UnreachableHub:
    def __getattr__(self, _: str) -> Any:
        def fail(*_: Any) -> Any:
            raise ConnectionError("the hub is gone")

        return _Method(fail)


def test_a_waiter_is_woken_by_a_newer_version_and_not_by_an_older_one() -> None:
    async def scenario() -> tuple[Any, ...]:
        hub = JobEvents()
        hub.publish("a", 2.0)
        at_once = await hub.wait("a", 1.0, 30)  # already newer: no wait
        waiting = asyncio.ensure_future(hub.wait("a", 2.0, 30))
        await asyncio.sleep(0)
        hub.publish("a", 1.5)  # older than what the waiter saw: not a change
        hub.publish("b", 9.0)  # another job
        await asyncio.sleep(0)
        still = waiting.done()
        hub.publish("a", 3.0)
        woken = await asyncio.wait_for(waiting, 5)
        timed_out = await hub.wait("a", 3.0, 0.01)
        return at_once, still, woken, timed_out, hub._waiters

    at_once, still, woken, timed_out, waiters = asyncio.run(scenario())
    assert (at_once, still, woken, timed_out, waiters) == (2.0, False, 3.0, None, {})


def test_the_hub_forgets_the_oldest_jobs_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from f2f.serving.jobs import events

    monkeypatch.setattr(events, "MAX_JOBS", 2)
    hub = JobEvents()
    for job in ("a", "b", "c"):
        hub.publish(job, 1.0)
    assert list(hub._latest) == ["b", "c"]


def _service(tmp_path: Path, handle: Any, poll_s: float) -> tuple[EditService, JobStore]:
    jobs = JobsArgs(dir=tmp_path / "jobs", poll_interval_s=poll_s)
    store = JobStore(jobs.store_dir(tmp_path), jobs.ttl_s, jobs.lease_s)
    events = EventsClient(handle, asyncio.get_running_loop())
    return EditService(store, None, F2FConfig(), jobs, RequestLimits(), AuthArgs(required=False), events), store


def test_a_waiting_request_is_woken_by_each_change_not_by_the_next_poll(tmp_path: Path) -> None:
    """Every wait of the request ends with a version (woken by a publish), none with None (a poll_interval_s gone by)."""
    ingress = None

    async def scenario() -> str:
        nonlocal ingress
        hub = JobEvents()
        ingress = InProcessHandle(hub)
        service, store = _service(tmp_path, ingress, poll_s=5)
        worker_store = JobStore(store.root, store.ttl_s, store.lease_s)  # another replica's store, same volume
        worker_store.on_change = EventsClient(InProcessHandle(hub), asyncio.get_running_loop()).publish_record
        record, _ = store.create(b"png", EditRequest(prompt="p", seeds=[1]), "fp")
        waiting = asyncio.ensure_future(service.finished(record))
        await asyncio.sleep(0.05)
        claimed = await asyncio.to_thread(worker_store.claim, record.id, "w1")
        await asyncio.to_thread(worker_store.finish, Lease.of(claimed), "cancelled", None)
        return (await asyncio.wait_for(waiting, 20)).status

    assert asyncio.run(scenario()) == "cancelled"
    assert ingress is not None and ingress.wait.answers and None not in ingress.wait.answers, ingress.wait.answers


def test_without_the_hub_a_waiting_request_still_sees_the_change_by_polling(tmp_path: Path) -> None:
    async def scenario() -> str:
        service, store = _service(tmp_path, UnreachableHub(), poll_s=0.05)
        record, _ = store.create(b"png", EditRequest(prompt="p", seeds=[1]), "fp")
        waiting = asyncio.ensure_future(service.finished(record))
        await asyncio.to_thread(store.request_cancel, record.id)  # publishing fails quietly; the store has it
        return (await asyncio.wait_for(waiting, 20)).status

    assert asyncio.run(scenario()) == "cancelled"


# --- the Redis store's channel ----------------------------------------------------------------------------------


def _heard_while(store: Any, events: Any, job_id: str, after: float) -> bool:
    """Wait on `events` for a version of the job newer than `after` while `store` (another replica's) writes one
    every 0.2 s; True once `events` heard such a version. Only its channel tells it versions (it reads no store),
    so a version heard came through Redis, however long the wait took here."""
    from f2f.serving.jobs import Lease

    lease = Lease.of(store.claim(job_id, "w1") or store.get(job_id))

    async def run() -> bool:
        for _ in range(120):  # a guard against a hang, not a bound on the wait: each round ends at a change or 1 s
            await asyncio.to_thread(store.heartbeat, lease)
            await events.wait(job_id, after, 1.0)
            if events.versions._latest.get(job_id, after) > after:
                return True
        return False

    return asyncio.run(run())


def test_a_change_written_by_any_replica_wakes_the_waits_on_another_through_redis(tmp_path: Path, redis_url: str) -> None:
    import uuid

    from f2f.serving.jobs.events import RedisEvents
    from f2f.serving.jobs.redis_store import RedisJobStore

    prefix = f"events-{uuid.uuid4().hex[:8]}"
    ingress, worker = (RedisJobStore(redis_url, tmp_path / name, 3600, prefix=prefix) for name in ("a", "b"))
    record, _ = ingress.create(b"png", EditRequest(prompt="p", seeds=[1]), "fp")
    events = RedisEvents(ingress.url, ingress.events_channel)
    assert _heard_while(worker, events, record.id, record.updated_at)
    other = RedisJobStore(redis_url, tmp_path / "c", 3600, prefix=f"other-{prefix}")  # another deployment's channel
    foreign, _ = other.create(b"png", EditRequest(prompt="p", seeds=[1]), "fp")
    assert events.versions._latest.get(foreign.id) is None


def test_the_channel_is_subscribed_again_after_redis_restarts(tmp_path: Path, redis_url: str) -> None:
    """(`redis_url`: a redis-server is installed, or the test fails under CI; this one is restarted on its own.)"""
    from redis_server import RedisServer

    from f2f.serving.jobs.events import RedisEvents
    from f2f.serving.jobs.redis_store import RedisJobStore

    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        store = RedisJobStore(server.url, tmp_path / "files", 3600)
        record, _ = store.create(b"png", EditRequest(prompt="p", seeds=[1]), "fp")
        events = RedisEvents(store.url, store.events_channel)
        assert _heard_while(store, events, record.id, record.updated_at)
        server.stop()
        server.start()  # append-only: the record is back
        assert _heard_while(store, events, record.id, store.get(record.id).updated_at)
    finally:
        server.stop()
