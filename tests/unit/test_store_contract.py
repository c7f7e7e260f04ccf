"""One contract, every job store: the file store (a folder, its objects in the default local folder) and the Redis
store (a real `redis-server` on loopback, its objects in a bucket of an S3-protocol server on loopback: the cluster's
parts) must behave the same through the interface the service and the worker use. What only one store has (the file
store's markers and folders) is tested in tests/unit/test_jobs.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from f2f.serving.api.wire import JobError, Selection
from f2f.serving.jobs import (
    EditRequest,
    IdempotencyConflict,
    JobNotFound,
    JobStore,
    JobUnreadable,
    Lease,
    LeaseLost,
    StoreBase,
    StoreUnavailable,
    open_objects,
)
from f2f.serving.jobs.redis_store import RedisJobStore

SOURCE = b"\x89PNG\r\n\x1a\n the store keeps the bytes as they are"
TTL_S = 3600.0
SHORT_S = 0.3  # a lease or ttl that has passed after `time.sleep(SHORT_S * 1.5)`

MakeStore = Callable[..., StoreBase]


@pytest.fixture(params=["file", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """A function making a store of the kind under test: all it makes share one folder (and one Redis prefix)."""
    if request.param == "file":
        return lambda ttl_s=TTL_S, lease_s=120.0: JobStore(tmp_path / "store", ttl_s, lease_s)
    url, prefix = request.getfixturevalue("redis_url"), f"test-{uuid.uuid4().hex[:12]}"
    objects = open_objects(f"s3://f2f/{prefix}", endpoint_url=request.getfixturevalue("s3_bucket"))
    return lambda ttl_s=TTL_S, lease_s=120.0: RedisJobStore(
        url, tmp_path / "scratch", ttl_s, lease_s, prefix=prefix, objects=objects
    )


@pytest.fixture
def store(make_store: MakeStore) -> StoreBase:
    return make_store()


def _create(store: StoreBase, owner: str = "alice", key: str | None = None, prompt: str = "edit", **kw: object) -> str:
    record, _ = store.create(SOURCE, EditRequest(prompt=prompt, seeds=[1]), f"fp-{prompt}", key, owner, **kw)  # type: ignore[arg-type]
    return record.id


def _claimed(store: StoreBase, job_id: str, worker: str = "w1") -> Lease:
    record = store.claim(job_id, worker)
    assert record is not None
    return Lease.of(record)


# --- create, read, idempotency ------------------------------------------------------------------------------------


def test_a_new_job_is_queued_with_its_source(store: StoreBase) -> None:
    job_id = _create(store)
    record = store.get(job_id)
    assert (record.status, record.owner, record.attempts) == ("queued", "alice", 0)
    assert store.read(job_id, "source.png") == SOURCE
    assert store.queue_stats()[0] == 1 and store.queued() == [job_id]


@pytest.mark.parametrize("job_id", ["x", "../etc/passwd", "0" * 31, "0" * 32 + "\n", "*"])
def test_an_id_that_is_not_32_hex_digits_is_an_unknown_job(store: StoreBase, job_id: str) -> None:
    for call in (store.get, lambda i: store.request_cancel(i), lambda i: store.claim(i, "w1")):
        with pytest.raises(JobNotFound):
            call(job_id)


def test_another_owners_job_looks_unknown(store: StoreBase) -> None:
    job_id = _create(store, owner="alice")
    assert store.get_for(job_id, "alice").id == job_id
    with pytest.raises(JobNotFound):
        store.get_for(job_id, "bob")


def test_an_idempotency_key_gives_back_its_job_and_refuses_another_request(store: StoreBase) -> None:
    first = _create(store, key="k1")
    assert _create(store, key="k1") == first
    with pytest.raises(IdempotencyConflict):
        _create(store, key="k1", prompt="something else")
    assert _create(store, owner="bob", key="k1") != first  # keys are per owner
    assert store.queue_stats()[0] == 2


def test_concurrent_creates_with_one_key_make_one_job(store: StoreBase) -> None:
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(_create(store, key="same"))) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1 and store.queue_stats()[0] == 1


def test_admission_never_lets_concurrent_creates_past_the_bound_together(store: StoreBase) -> None:
    """12 requests at once against a queue bound of 5: exactly 5 jobs, whatever the interleaving."""
    admitted: list[str] = []
    refused: list[Exception] = []

    def admit() -> None:
        if store.queue_stats()[0] >= 5:
            raise RuntimeError("full")

    def submit() -> None:
        try:
            admitted.append(_create(store, admit=admit))
        except RuntimeError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(admitted), len(refused), store.queue_stats()[0]) == (5, 7, 5)


def test_a_refused_admission_leaves_nothing_behind(store: StoreBase) -> None:
    def refuse() -> None:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        _create(store, key="k", admit=refuse)
    assert store.queue_stats()[0] == 0 and store.list_for("alice") == ([], False)
    assert _create(store, key="k")  # the key was not taken


def test_active_jobs_count_an_owners_queued_and_running_jobs(store: StoreBase) -> None:
    a, _, c = (_create(store) for _ in range(3))
    _create(store, owner="bob")
    _claimed(store, a)
    store.request_cancel(c)
    assert store.active_jobs("alice") == 2 and store.active_jobs("bob") == 1


# --- claims, leases and fencing ------------------------------------------------------------------------------------


def test_only_one_of_many_concurrent_claims_wins(store: StoreBase) -> None:
    job_id = _create(store)
    won: list[str] = []

    def claim(worker: str) -> None:
        if store.claim(job_id, worker) is not None:
            won.append(worker)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    record = store.get(job_id)
    assert (record.status, record.worker, record.attempts) == ("running", won[0], 1)
    assert store.queue_stats()[0] == 0


def test_a_lapsed_lease_is_stale_and_taken_over_and_the_old_attempt_is_fenced_off(make_store: MakeStore) -> None:
    store = make_store(lease_s=SHORT_S)
    job_id = _create(store)
    old = _claimed(store, job_id, "w1")
    assert store.stale_running() == [] and store.claim(job_id, "w2") is None  # a fresh lease holds
    time.sleep(SHORT_S * 1.5)
    assert store.stale_running() == [job_id]
    new = _claimed(store, job_id, "w2")
    assert new.attempt == 2
    for write in (
        lambda: store.heartbeat(old, "generate", 1, 10),
        lambda: store.outputs_dir(old),
        lambda: store.finish(old, "succeeded", None),
        lambda: store.hand_back(old),
    ):
        with pytest.raises(LeaseLost):
            write()
    record = store.get(job_id)
    assert (record.status, record.worker, record.attempts, record.progress) == ("running", "w2", 2, None)


def test_a_heartbeat_carries_the_stage_and_progress(store: StoreBase) -> None:
    job_id = _create(store)
    lease = _claimed(store, job_id)
    record = store.heartbeat(lease, "generate", 3, 10)
    assert (record.stage, record.progress.step, record.progress.total) == ("generate", 3, 10)  # type: ignore[union-attr]


def test_a_succeeded_finish_makes_the_attempts_outputs_the_jobs_and_the_record_final(store: StoreBase) -> None:
    job_id = _create(store)
    lease = _claimed(store, job_id)
    folder = store.outputs_dir(lease)
    (folder / "candidates").mkdir()
    (folder / "edited.png").write_bytes(b"the edit")
    (folder / "candidates" / "frame_004.png").write_bytes(b"a frame")
    store.keep_outputs(lease, folder)
    assert not store.has_output(store.get(job_id), "edited.png")  # not the job's before its finish
    record = store.finish(lease, "succeeded", None)
    assert record.status == "succeeded" and record.expires_at is not None
    for name, data in (("edited.png", b"the edit"), ("candidates/frame_004.png", b"a frame")):
        assert store.objects.get(store.output_key(record, name) or "") == data
    assert store.active_jobs("alice") == 0 and store.stale_running() == []
    store.request_cancel(job_id)  # changes nothing now
    store.select(job_id, Selection(label=2, frame=8, by="alice", at=1.0))  # but the selection may change
    after = store.get(job_id)
    assert after.status == "succeeded" and after.selection is not None and after.selection.label == 2


def test_requeue_and_hand_back_put_a_running_job_back_in_the_queue(store: StoreBase) -> None:
    a, b = _create(store), _create(store)
    _claimed(store, a)
    back = store.requeue(a)
    assert (back.status, back.worker, back.attempts) == ("queued", None, 1)
    handed = store.hand_back(_claimed(store, b))
    assert (handed.status, handed.attempts) == ("queued", 0)  # a hand-back does not count the attempt
    assert sorted(store.queued()) == sorted([a, b]) and store.queue_stats()[0] == 2


def test_cancel_ends_a_queued_job_at_once_and_asks_a_running_one(store: StoreBase) -> None:
    queued, running = _create(store), _create(store)
    lease = _claimed(store, running)
    assert store.request_cancel(queued).status == "cancelled"
    asked = store.request_cancel(running)
    assert asked.status == "running" and asked.cancel_requested
    assert store.finish(lease, "cancelled", JobError(message="stopped", code="cancelled")).status == "cancelled"
    assert store.queued() == []


# --- sending, workers, expiry ------------------------------------------------------------------------------------


def test_unsent_lists_jobs_never_sent_after_the_grace_and_sent_ones_after_the_resend_time(store: StoreBase) -> None:
    never, sent = _create(store), _create(store)
    store.mark_sent(sent)
    assert store.unsent(resend_after_s=60, grace_s=60) == []
    assert store.unsent(resend_after_s=60, grace_s=0) == [never]
    assert sorted(store.unsent(resend_after_s=0, grace_s=0)) == sorted([never, sent])
    _claimed(store, never)
    assert store.unsent(resend_after_s=0, grace_s=0) == [sent]  # a running job is not waiting for a message


def test_a_silent_worker_is_lost_once(make_store: MakeStore) -> None:
    store = make_store(lease_s=SHORT_S)
    store.worker_alive("w1")
    store.worker_alive("w2")
    assert store.lost_workers() == []
    time.sleep(SHORT_S * 1.5)
    store.worker_alive("w2")
    assert store.lost_workers() == ["w1"] and store.lost_workers() == []


def test_an_expired_job_is_unknown_at_once_and_swept_with_its_files_and_key(make_store: MakeStore) -> None:
    store = make_store(ttl_s=SHORT_S)
    job_id = _create(store, key="k")
    kept = _create(store)
    store.request_cancel(job_id)
    time.sleep(SHORT_S * 1.5)
    with pytest.raises(JobNotFound):
        store.get(job_id)
    assert store.sweep() == 1 and store.sweep() == 0
    assert store.objects.keys(job_id) == [] and f"{kept}/source.png" in store.objects.keys(kept)
    assert [r.id for r in store.list_for("alice")[0]] == [kept]
    assert _create(store, key="k") != job_id  # the key is free again


def test_list_for_pages_an_owners_jobs_newest_first(store: StoreBase) -> None:
    ids = [_create(store, prompt=f"p{i}") for i in range(5)][::-1]
    _create(store, owner="bob")
    first, more = store.list_for("alice", limit=2)
    assert [r.id for r in first] == ids[:2] and more
    rest, more = store.list_for("alice", after=first[-1].id, limit=10)
    assert [r.id for r in rest] == ids[2:] and not more
    store.request_cancel(ids[0])
    assert [r.id for r in store.list_for("alice", status="cancelled")[0]] == [ids[0]]
    with pytest.raises(JobNotFound):
        store.list_for("bob", after=ids[0])


# --- records from another version ---------------------------------------------------------------------------------


def _overwrite_record(store: StoreBase, job_id: str, data: bytes) -> None:
    if isinstance(store, RedisJobStore):
        store.redis.set(store._key("job", job_id), data)
    else:
        (store.job_dir(job_id) / "job.json").write_bytes(data)  # type: ignore[attr-defined]


def test_a_record_this_version_cannot_read_is_reported_and_skipped(make_store: MakeStore) -> None:
    store = make_store(lease_s=SHORT_S)
    odd, fine = _create(store), _create(store)
    _claimed(store, odd)
    _claimed(store, fine)
    newer = store.get(odd).model_dump(mode="json") | {"a_field_of_a_newer_version": 1}
    _overwrite_record(store, odd, json.dumps(newer).encode())
    with pytest.raises(JobUnreadable):
        store.get(odd)
    time.sleep(SHORT_S * 1.5)
    assert store.stale_running() == [fine]  # the sweep's query goes on past it
    store.sweep()


# --- choosing the store ---------------------------------------------------------------------------------------------


def test_the_args_choose_the_store_and_a_redis_store_needs_its_url(tmp_path: Path, redis_url: str) -> None:
    from f2f.errors import InvalidConfig
    from f2f.serving.jobs import open_store
    from f2f.serving.jobs.queue import JobsArgs

    assert type(open_store(JobsArgs(dir=tmp_path / "jobs"), tmp_path)) is JobStore
    store = open_store(JobsArgs(dir=tmp_path / "jobs", store="redis", redis_url=redis_url, retry_after_s=7), tmp_path)
    assert isinstance(store, RedisJobStore) and store.retry_after_s == 7
    from f2f.serving.app import parse_args

    for jobs, rule in (
        ({"store": "redis"}, "is needed when jobs.store is redis"),
        ({"redis_url": "http://r"}, "must be a redis://"),
    ):
        with pytest.raises(InvalidConfig) as info:
            parse_args({"jobs": jobs, "auth": {"required": False}})
        assert info.value.field == "args.jobs.redis_url" and rule in info.value.rule


def test_an_unreachable_redis_is_one_line_at_start_naming_the_field_and_the_url_as_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from redis_server import free_port

    from f2f.errors import InvalidConfig
    from f2f.serving.jobs import check_store
    from f2f.serving.jobs.queue import JobsArgs

    monkeypatch.setenv("F2F_TEST_PASSWORD", "s3cret")
    url = f"redis://:${{F2F_TEST_PASSWORD}}@127.0.0.1:{free_port()}/1"  # nothing listens there
    with pytest.raises(InvalidConfig) as info:
        check_store(JobsArgs(store="redis", redis_url=url))
    assert (info.value.field, info.value.value) == ("jobs.redis_url", url) and "Redis does not answer there" in info.value.rule
    assert "s3cret" not in str(info.value) and "\n" not in str(info.value)


def test_a_redis_store_that_goes_away_is_unavailable_not_an_internal_error(tmp_path: Path) -> None:
    from redis_server import RedisServer

    server = RedisServer()
    server.start()
    store = RedisJobStore(server.url, tmp_path / "files", TTL_S)
    job_id = _create(store)
    server.stop()
    for call in (lambda: store.get(job_id), lambda: _create(store), lambda: store.request_cancel(job_id), store.queue_stats):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert info.value.retry_after_s > 0


def test_a_redis_records_and_idempotency_keys_expire_with_their_job(tmp_path: Path, redis_url: str) -> None:
    """Redis itself drops a finished job's record and its idempotency key after the job expires, if no sweep did."""
    store = RedisJobStore(redis_url, tmp_path / "scratch", TTL_S, prefix=f"ttl-{uuid.uuid4().hex[:8]}")
    job_id = _create(store, key="k")
    (key,) = store.redis.keys(f"{store.prefix}:key:*")
    assert store.redis.ttl(key) == -1 and store.redis.ttl(store._key("job", job_id)) == -1  # kept while it is live
    store.request_cancel(job_id)
    for name in (key, store._key("job", job_id)):
        assert TTL_S < store.redis.ttl(name) <= TTL_S + 86400 + 1
