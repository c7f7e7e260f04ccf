"""Serving under load, in process (no Ray): the ingress's bounds, the queue's length and the workers' scaling policy,
the consumer watch, and a stopping worker's hand-back in the job store.

The broker is the real file-system one (Kombu on a temporary folder); the HTTP app is the real FastAPI app over a
real job store, driven through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("celery")

from f2f.config import F2FConfig  # noqa: E402
from f2f.request import RequestLimits  # noqa: E402
from f2f.serving.api.admission import TooManyWaiting, WaitSlots  # noqa: E402
from f2f.serving.api.auth import AuthArgs  # noqa: E402
from f2f.serving.api.errors import ClientGone  # noqa: E402
from f2f.serving.api.service import EditService  # noqa: E402
from f2f.serving.api.wire import EditOptions  # noqa: E402
from f2f.serving.deployments.ingress import make_api  # noqa: E402
from f2f.serving.deployments.ingress_args import IngressArgs  # noqa: E402
from f2f.serving.deployments.worker import ConsumerWatch  # noqa: E402
from f2f.serving.jobs import JobStore, Lease, LeaseLost  # noqa: E402
from f2f.serving.jobs.queue import BrokerQueue, JobQueue, JobsArgs, task_processor_config  # noqa: E402
from f2f.serving.scaling import RUNNING_JOBS, JobQueuePolicy  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "f2f" / "data" / "sample.png"


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, job_id: str) -> None:
        self.sent.append(job_id)


def _service(tmp_path: Path, http: IngressArgs | None = None, auth: AuthArgs | None = None) -> EditService:
    jobs = JobsArgs(dir=tmp_path / "jobs", retry_after_s=9)
    store = JobStore(jobs.store_dir(tmp_path), jobs.ttl_s, jobs.lease_s)
    limits = RequestLimits(max_n=4, max_num_frames=49, max_steps=100)
    auth = auth or AuthArgs(required=False)
    return EditService(store, RecordingQueue(), F2FConfig(), jobs, limits, auth, http=http)


# --- long waits ---------------------------------------------------------------------------------


def test_wait_slots_bound_a_key_and_the_replica_and_come_back_once() -> None:
    slots = WaitSlots(IngressArgs(max_waiting_requests=3, max_waiting_requests_per_key=2, retry_after_s=5))
    releases = [slots.take("alice"), slots.take("alice")]
    with pytest.raises(TooManyWaiting) as per_key:
        slots.take("alice")
    assert per_key.value.per_key and per_key.value.retry_after_s == 5
    bob = slots.take("bob")
    with pytest.raises(TooManyWaiting) as in_all:
        slots.take("carol")
    assert not in_all.value.per_key and "max_waiting_requests" in str(in_all.value)
    releases[0]()
    releases[0]()  # given back once, however often called
    assert slots.total == 2 and slots.held["alice"] == 1
    with slots.hold("carol"):
        assert slots.total == 3
    assert slots.total == 2
    bob()
    releases[1]()
    assert slots.total == 0 and not slots.held


def test_with_api_keys_off_every_caller_is_one_and_only_the_bound_in_all_applies() -> None:
    slots = WaitSlots(IngressArgs(max_waiting_requests=3, max_waiting_requests_per_key=1), per_key=False)
    for _ in range(3):
        slots.take("anonymous")
    with pytest.raises(TooManyWaiting) as in_all:
        slots.take("anonymous")
    assert not in_all.value.per_key


def test_a_refused_wait_is_typed_429_or_503_with_retry_after(tmp_path: Path) -> None:
    from f2f.serving.api.auth import add_key

    token = add_key(tmp_path / "keys.yaml", "alice")
    bounds = IngressArgs(
        ingress_max_ongoing_requests=100, max_waiting_requests=2, max_waiting_requests_per_key=1, retry_after_s=9
    )
    service = _service(tmp_path, bounds, AuthArgs(keys_file=tmp_path / "keys.yaml"))
    app = make_api(service, _ready)
    service.waits.take("alice")  # alice's one slot is held

    async def edit() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            files = {"image": ("s.png", SAMPLE.read_bytes(), "image/png")}
            headers = {"Authorization": f"Bearer {token}"}
            return await client.post("/v1/images/edits", data={"prompt": "x"}, files=files, headers=headers)

    response = asyncio.run(edit())
    assert response.status_code == 429 and response.headers["retry-after"] == "9"
    assert response.json()["error"]["code"] == "too_many_waiting"
    assert not list((tmp_path / "jobs" / "queued").iterdir())  # refused before any job exists
    service.waits.take("someone else")
    service.waits.held.clear()
    service.waits.held.update({"a": 1, "b": 1})  # the replica's two slots held by others
    response = asyncio.run(edit())
    assert response.status_code == 503 and response.json()["error"]["code"] == "too_many_waiting"


async def _ready() -> None:
    return None


def test_requests_over_the_in_flight_bound_are_a_typed_503_and_probes_pass(tmp_path: Path) -> None:
    service = _service(
        tmp_path,
        IngressArgs(ingress_max_ongoing_requests=2, max_waiting_requests=1, max_waiting_requests_per_key=1, retry_after_s=9),
    )
    over, probe = asyncio.run(_with_held_requests(make_api(service, _ready), 2))
    assert over.status_code == 503 and over.headers["retry-after"] == "9"
    assert over.json()["error"]["code"] == "overloaded"
    assert probe.status_code == 200  # probes are never refused


async def _with_held_requests(app: Any, count: int) -> list[httpx.Response]:
    """`count` requests held in flight (bodies that never finish), then one more request and a probe."""
    transport = httpx.ASGITransport(app=app)
    gate = asyncio.Event()

    async def endless_body() -> Any:
        yield b"--x\r\n"
        await gate.wait()

    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        headers = {"content-type": "multipart/form-data; boundary=x"}
        held = [asyncio.create_task(client.post("/v1/edits", content=endless_body(), headers=headers)) for _ in range(count)]
        await asyncio.sleep(0.2)
        answers = [await client.get("/v1/models"), await client.get("/healthz")]
        gate.set()
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        return answers


def test_a_client_gone_before_its_job_is_created_leaves_none(tmp_path: Path) -> None:
    service = _service(tmp_path)

    async def gone() -> bool:
        return True

    options = EditOptions(prompt="make it blue")
    with pytest.raises(ClientGone):
        asyncio.run(service.submit(SAMPLE.read_bytes(), options, None, "anonymous", gone=gone))
    assert not list((tmp_path / "jobs" / "jobs").iterdir()) and not service.queue.sent


# --- the queue's length and the workers' scaling ----------------------------------------------


def test_the_broker_queue_counts_waiting_messages_and_the_producer_needs_no_result_backend(tmp_path: Path) -> None:
    jobs = JobsArgs(queue_name="counted")
    producer, broker = JobQueue(jobs, tmp_path), BrokerQueue.of(jobs, tmp_path)
    assert broker.length() == 0
    for n in range(3):
        producer.send(f"{n:032x}")
    assert broker.length() == 3
    assert producer.app.backend.__class__.__name__ == "DisabledBackend"
    adapter = task_processor_config(jobs, tmp_path).adapter_config
    assert adapter.backend_url == "disabled://"  # the consumers write no results either


def test_an_unreachable_broker_is_an_error_not_a_zero() -> None:
    from f2f.serving.jobs.queue import BrokerQueue as Queue

    queue = Queue("redis://127.0.0.1:1/0", None, "nowhere")  # port 1: refused at once
    with pytest.raises(Exception):  # noqa: B017  (Kombu's connection error, whichever transport raises it)
        queue.length()


def _ctx(running: dict[str, float]) -> Any:
    return SimpleNamespace(aggregated_metrics={RUNNING_JOBS: running})


def test_the_policy_asks_for_replicas_for_waiting_and_running_jobs(tmp_path: Path) -> None:
    jobs = JobsArgs(queue_name="scaled")
    producer = JobQueue(jobs, tmp_path)
    url, options = BrokerQueue.of(jobs, tmp_path).url, BrokerQueue.of(jobs, tmp_path).options
    policy = JobQueuePolicy(url, options, "scaled", jobs_per_replica=4, poll_interval_s=0)
    assert policy(_ctx({}))[0] == 0  # nothing waits, nothing runs: Serve keeps min_replicas
    for n in range(9):
        producer.send(f"{n:032x}")
    asyncio.run(policy.poll())
    assert policy(_ctx({}))[0] == 3  # 9 waiting, 4 per replica
    desired, state = policy(_ctx({"r1": 4, "r2": 3}))  # and 7 running: 16 jobs
    assert desired == 4 and state == {"waiting_jobs": 9, RUNNING_JOBS: 7}
    assert policy(_ctx({"r1": 1}))[0] == 3  # running jobs alone keep their replicas: no scale-down under them


def test_a_failed_poll_keeps_the_last_length(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    policy = JobQueuePolicy("redis://127.0.0.1:1/0", None, "nowhere", jobs_per_replica=2, poll_interval_s=0)
    policy.waiting = 5
    asyncio.run(policy.poll())
    assert policy.waiting == 5 and "scaling on the last one" in caplog.text


# --- a consumer that stops taking jobs --------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_consumer_watch_flags_only_messages_left_waiting_with_no_take() -> None:
    clock = Clock()
    watch = ConsumerWatch(stalled_after_s=60, clock=clock)
    clock.now += 600  # idle for long with nothing waiting: fine
    assert watch.observe(0) is None
    assert watch.observe(2) is None  # a message just arrived: the window starts now
    clock.now += 30
    assert watch.observe(2) is None
    watch.took()  # it took one: the window starts again
    clock.now += 45
    assert watch.observe(1) is None
    clock.now += 45
    assert watch.observe(1) is None  # 45 s since the window restarted
    clock.now += 20
    assert watch.observe(1) == 65.0  # waiting at every look for 65 s, nothing taken (a fake clock of whole seconds: exact)
    assert watch.observe(0) is None  # the queue emptied (another replica took them): reset
    assert watch.observe(1) is None


# --- handing a job back ------------------------------------------------------------------------


def test_a_stopping_worker_hands_its_job_back_uncounted_and_never_anothers(tmp_path: Path) -> None:
    service = _service(tmp_path)
    record, _ = asyncio.run(service.submit(SAMPLE.read_bytes(), EditOptions(prompt="x"), None, "anonymous"))
    store = service.store
    first = Lease.of(store.claim(record.id, "w1"))
    assert first.attempt == 1
    back = store.hand_back(first)
    assert (back.status, back.attempts, back.worker, back.sent_at) == ("queued", 0, None, None)
    assert (tmp_path / "jobs" / "queued" / record.id).exists()
    assert Lease.of(store.claim(record.id, "w2")).attempt == 1  # the attempt handed back was not counted
    with pytest.raises(LeaseLost):  # w2 holds it now, at the same attempt number: w1 changes nothing
        store.hand_back(first)
    assert store.get(record.id).worker == "w2"


def test_a_broker_password_comes_from_the_environment_url_encoded_and_only_where_it_connects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from f2f.errors import InvalidConfig
    from f2f.serving.jobs.queue import broker_settings, expand_url

    jobs = JobsArgs(broker_url="redis://:${REDIS_PASSWORD}@f2f-redis:6379/0")
    assert broker_settings(jobs, tmp_path)[0] == jobs.broker_url  # what the policy's kwargs and the logs carry
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    with pytest.raises(InvalidConfig) as unset:
        expand_url(jobs.broker_url)
    assert unset.value.field == "jobs.broker_url" and "REDIS_PASSWORD" in str(unset.value)
    monkeypatch.setenv("REDIS_PASSWORD", "p@ss/w:rd")
    assert expand_url(jobs.broker_url) == "redis://:p%40ss%2Fw%3Ard@f2f-redis:6379/0"
    assert task_processor_config(jobs, tmp_path).adapter_config.broker_url == expand_url(jobs.broker_url)


def test_waiters_on_one_job_share_one_read_and_a_quiet_job_is_waited_on_again(tmp_path: Path) -> None:
    """Many requests waiting on one job read it once per change; when nothing changed within the poll interval
    the next wait is a new one (a finished shared wait found again would return at once, forever)."""
    service = _service(tmp_path)
    record, _ = asyncio.run(service.submit(SAMPLE.read_bytes(), EditOptions(prompt="x"), None, "anonymous"))
    reads = []
    real_get = service.store.get
    service.store.get = lambda job_id: reads.append(job_id) or real_get(job_id)  # type: ignore[method-assign]

    async def wait_many() -> list[Any]:
        first = await asyncio.gather(*(service.changed(record) for _ in range(50)))
        again = await service.changed(first[0])  # nothing changed since: a new wait
        once_more = await service.changed(again)  # the same version again: a new wait again, not the last one reused
        return [*first, again, once_more]

    waited = asyncio.run(asyncio.wait_for(wait_many(), 10))
    assert len(reads) == 3  # 50 waiters, one read; then one wait and read each
    assert len({r.updated_at for r in waited}) == 1 and not service._waits
