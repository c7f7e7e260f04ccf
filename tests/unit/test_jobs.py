"""f2f.serving.jobs: the file-system job store (create, claim, cancel, requeue, expiry, idempotency, fingerprints)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from f2f.serving import metrics
from f2f.serving.api.wire import JobError, Selection
from f2f.serving.jobs import (
    JOB_ID,
    EditRequest,
    IdempotencyConflict,
    JobNotFound,
    JobRecord,
    JobStore,
    JobUnreadable,
    Lease,
    LeaseLost,
    StorageFull,
    StoreUnavailable,
    fingerprint,
)
from f2f.serving.jobs import file_store as jobs
from f2f.serving.jobs.base import ATTEMPTS

SOURCE = b"\x89PNG\r\n\x1a\n not really a png, but the store keeps bytes as they are"
TTL_S = 3600.0
TINY_S = 0.05  # a ttl or lease that has passed after `sleep_past_tiny`
UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
BAD_IDS = ["../etc", "ABC", "", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcde", "../" + UNKNOWN_ID]


def sleep_past_tiny() -> None:
    time.sleep(TINY_S * 3)


@pytest.fixture
def request_() -> EditRequest:
    return EditRequest(prompt="the cat jumps", seeds=[1, 2])


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "store", ttl_s=TTL_S)


def new_job(store: JobStore, request: EditRequest, key: str | None = None, fp: str = "fp-1") -> JobRecord:
    record, created = store.create(SOURCE, request, fp, idempotency_key=key)
    assert created
    return record


def job_dirs(store: JobStore) -> list[str]:
    return sorted(entry.name for entry in (store.root / "jobs").iterdir())


def markers(store: JobStore, sub: str) -> list[str]:
    return sorted(entry.name for entry in (store.root / sub).iterdir())


def finish(status: str) -> Callable[[JobRecord], bool]:
    def change(record: JobRecord) -> bool:
        record.status = status  # type: ignore[assignment]
        return True

    return change


# --- create and read ------------------------------------------------------------------------------


def test_create_returns_a_new_queued_record(store: JobStore, request_: EditRequest) -> None:
    record, created = store.create(SOURCE, request_, "fp-1")
    assert created is True
    assert JOB_ID.match(record.id) and len(record.id) == 32
    assert (record.status, record.attempts, record.worker, record.fingerprint) == ("queued", 0, None, "fp-1")
    assert record.finished is False and record.finished_at is None and record.expires_at is None


def test_create_stores_the_source_bytes(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    assert store.read(record.id, "source.png") == SOURCE


def test_get_reads_back_the_created_record(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    assert store.get(record.id) == record
    assert store.get(record.id).request == request_


def test_create_writes_a_queued_marker_counted_by_queue_stats(store: JobStore, request_: EditRequest) -> None:
    assert store.queue_stats() == (0, 0.0)
    first, second = new_job(store, request_), new_job(store, request_)
    assert markers(store, "queued") == sorted([first.id, second.id])
    count, age = store.queue_stats()
    assert count == 2 and age >= 0.0


def test_queue_stats_age_is_that_of_the_oldest_marker(store: JobStore, request_: EditRequest) -> None:
    old, _ = new_job(store, request_), new_job(store, request_)
    past = time.time() - 100.0
    os.utime(store.root / "queued" / old.id, (past, past))
    count, age = store.queue_stats()
    assert count == 2
    assert 100.0 <= age < 110.0


def test_create_makes_distinct_ids(store: JobStore, request_: EditRequest) -> None:
    ids = {new_job(store, request_).id for _ in range(5)}
    assert len(ids) == 5
    assert job_dirs(store) == sorted(ids)


def test_an_output_is_the_jobs_file_or_none_before_an_attempt_kept_its_own(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    assert output(store, record.id, "source.png") == SOURCE
    assert output(store, record.id, "edited.png") is None


def test_stores_on_one_root_share_jobs(tmp_path: Path, request_: EditRequest) -> None:
    ingress, worker = JobStore(tmp_path, ttl_s=TTL_S), JobStore(tmp_path, ttl_s=TTL_S)
    record = new_job(ingress, request_)
    assert worker.claim(record.id, "w1") is not None
    assert ingress.get(record.id).status == "running"


# --- ids ------------------------------------------------------------------------------------------


JOB_CALLS = [  # every store call that takes a job id and reads or changes the job
    pytest.param(lambda s, i: s.get(i), id="get"),
    pytest.param(lambda s, i: output(s, i, "source.png"), id="output"),
    pytest.param(lambda s, i: s.claim(i, "w1"), id="claim"),
    pytest.param(lambda s, i: s.update(i, lambda r: None), id="update"),
    pytest.param(lambda s, i: s.request_cancel(i), id="request_cancel"),
    pytest.param(lambda s, i: s.requeue(i), id="requeue"),
]


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s, i: s.job_dir(i), id="job_dir"),
        pytest.param(lambda s, i: s.key(i, "source.png"), id="key"),
        pytest.param(lambda s, i: s.read(i, "source.png"), id="read"),
        *JOB_CALLS,
    ],
)
def test_a_malformed_id_is_an_unknown_job_and_touches_no_path(
    tmp_path: Path, bad_id: str, call: Callable[[JobStore, str], Any]
) -> None:
    store = JobStore(tmp_path / "store", ttl_s=TTL_S)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(JobNotFound):
        call(store, bad_id)
    assert sorted(tmp_path.rglob("*")) == before


def test_an_id_with_a_trailing_newline_is_an_unknown_job(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        store.job_dir(UNKNOWN_ID + "\n")


@pytest.mark.parametrize("call", JOB_CALLS)
def test_an_unknown_well_formed_id_is_an_unknown_job(store: JobStore, call: Callable[[JobStore, str], Any]) -> None:
    with pytest.raises(JobNotFound):
        call(store, UNKNOWN_ID)
    assert job_dirs(store) == []


# --- idempotency ----------------------------------------------------------------------------------


def test_same_key_and_fingerprint_returns_the_first_job(store: JobStore, request_: EditRequest) -> None:
    first = new_job(store, request_, key="key-1")
    again, created = store.create(SOURCE, request_, "fp-1", idempotency_key="key-1")
    assert created is False
    assert again.id == first.id
    assert job_dirs(store) == [first.id]
    assert markers(store, "queued") == [first.id]


def test_same_key_returns_the_job_in_its_current_state(store: JobStore, request_: EditRequest) -> None:
    first = new_job(store, request_, key="key-1")
    store.claim(first.id, "w1")
    again, created = store.create(SOURCE, request_, "fp-1", idempotency_key="key-1")
    assert created is False
    assert (again.id, again.status) == (first.id, "running")
    assert markers(store, "queued") == []


def test_same_key_with_another_fingerprint_is_a_conflict(store: JobStore, request_: EditRequest) -> None:
    first = new_job(store, request_, key="key-1")
    with pytest.raises(IdempotencyConflict, match=first.id):
        store.create(SOURCE, request_, "fp-2", idempotency_key="key-1")
    assert job_dirs(store) == [first.id]
    assert markers(store, "queued") == [first.id]


def test_different_keys_make_different_jobs(store: JobStore, request_: EditRequest) -> None:
    first = new_job(store, request_, key="key-1")
    second = new_job(store, request_, key="key-2")
    assert first.id != second.id
    assert job_dirs(store) == sorted([first.id, second.id])


def test_no_key_never_deduplicates(store: JobStore, request_: EditRequest) -> None:
    first, second = new_job(store, request_), new_job(store, request_)
    assert first.id != second.id


def test_a_key_is_free_again_after_its_job_expired_and_was_swept(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TINY_S)
    first = new_job(store, request_, key="key-1")
    store.update(first.id, finish("succeeded"))
    sleep_past_tiny()
    assert store.sweep() == 1
    assert list((store.root / "keys").iterdir()) == []
    second, created = store.create(SOURCE, request_, "fp-2", idempotency_key="key-1")
    assert created is True
    assert second.id != first.id
    assert store.get(second.id).status == "queued"
    assert job_dirs(store) == [second.id]


def test_a_key_is_free_again_once_its_job_expired_even_before_a_sweep(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TINY_S)
    first = new_job(store, request_, key="key-1")
    store.update(first.id, finish("failed"))
    sleep_past_tiny()
    second, created = store.create(SOURCE, request_, "fp-1", idempotency_key="key-1")
    assert created is True and second.id != first.id
    again, created = store.create(SOURCE, request_, "fp-1", idempotency_key="key-1")
    assert created is False and again.id == second.id


def test_concurrent_creates_with_one_key_make_one_job(store: JobStore, request_: EditRequest) -> None:
    barrier = threading.Barrier(8)

    def create(_: int) -> tuple[JobRecord, bool]:
        barrier.wait()
        return store.create(SOURCE, request_, "fp-1", idempotency_key="key-1")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(8)))
    assert len({record.id for record, _ in results}) == 1
    assert [created for _, created in results].count(True) == 1
    assert len(job_dirs(store)) == 1


# --- claim ----------------------------------------------------------------------------------------


def test_claim_starts_the_job_for_the_worker(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    claimed = store.claim(record.id, "w1")
    assert claimed is not None
    assert (claimed.status, claimed.worker, claimed.attempts) == ("running", "w1", 1)
    assert claimed.started_at is not None and claimed.heartbeat_at is not None
    assert store.get(record.id) == claimed


def test_claim_moves_the_marker_from_queued_to_running(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    assert markers(store, "queued") == []
    assert markers(store, "running") == [record.id]
    assert store.queue_stats() == (0, 0.0)


def test_claim_of_a_job_held_under_a_fresh_lease_is_refused(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    assert store.claim(record.id, "w2") is None
    assert store.claim(record.id, "w1") is None
    current = store.get(record.id)
    assert (current.worker, current.attempts) == ("w1", 1)


def test_claim_takes_over_a_job_whose_lease_ran_out(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TTL_S, lease_s=TINY_S)
    record = new_job(store, request_)
    first = store.claim(record.id, "w1")
    assert first is not None
    sleep_past_tiny()
    taken = store.claim(record.id, "w2")
    assert taken is not None
    assert (taken.status, taken.worker, taken.attempts) == ("running", "w2", 2)
    assert taken.started_at == first.started_at
    assert taken.heartbeat_at is not None and first.heartbeat_at is not None and taken.heartbeat_at > first.heartbeat_at
    assert markers(store, "running") == [record.id]


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_a_finished_job_cannot_be_claimed(store: JobStore, request_: EditRequest, status: str) -> None:
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    done = store.update(record.id, finish(status))
    assert store.claim(record.id, "w2") is None
    assert store.get(record.id) == done


def test_a_finished_job_with_a_lapsed_lease_cannot_be_claimed(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TTL_S, lease_s=TINY_S)
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    store.update(record.id, finish("succeeded"))
    sleep_past_tiny()
    assert store.claim(record.id, "w2") is None
    assert store.get(record.id).status == "succeeded"


def test_a_job_with_a_cancel_request_cannot_be_claimed(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TTL_S, lease_s=TINY_S)
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    store.request_cancel(record.id)
    sleep_past_tiny()  # the lease lapsed: only the cancel request stops a takeover
    assert store.claim(record.id, "w2") is None
    current = store.get(record.id)
    assert (current.worker, current.attempts, current.cancel_requested) == ("w1", 1, True)


def test_a_cancelled_queued_job_cannot_be_claimed(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.request_cancel(record.id)
    assert store.claim(record.id, "w1") is None
    assert markers(store, "running") == []


def test_only_one_of_many_concurrent_claims_wins(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    workers = 8
    start = threading.Barrier(workers)

    def claim(i: int) -> JobRecord | None:
        start.wait()
        return store.claim(record.id, f"w{i}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(claim, range(workers)))
    won = [result for result in results if result is not None]
    assert len(won) == 1
    current = store.get(record.id)
    assert (current.worker, current.attempts) == (won[0].worker, 1)


# --- cancel ---------------------------------------------------------------------------------------


def test_cancel_of_a_queued_job_cancels_it_now(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    cancelled = store.request_cancel(record.id)
    assert (cancelled.status, cancelled.cancel_requested) == ("cancelled", True)
    assert cancelled.error is not None and cancelled.error.code == "cancelled"
    assert cancelled.finished_at is not None and cancelled.expires_at is not None
    assert cancelled.expires_at == pytest.approx(cancelled.finished_at + TTL_S)
    assert store.get(record.id) == cancelled


def test_cancel_of_a_queued_job_removes_its_marker(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.request_cancel(record.id)
    assert markers(store, "queued") == []
    assert markers(store, "running") == []
    assert store.queue_stats() == (0, 0.0)


def test_cancel_of_a_running_job_only_asks_its_worker(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    asked = store.request_cancel(record.id)
    assert (asked.status, asked.cancel_requested, asked.worker) == ("running", True, "w1")
    assert asked.finished_at is None and asked.expires_at is None and asked.error is None
    assert markers(store, "running") == [record.id]


def test_cancel_of_a_finished_job_changes_nothing(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    store.update(record.id, finish("succeeded"))
    job_json = (store.job_dir(record.id) / "job.json").read_bytes()
    after = store.request_cancel(record.id)
    assert (after.status, after.cancel_requested) == ("succeeded", False)
    assert (store.job_dir(record.id) / "job.json").read_bytes() == job_json


# --- update ---------------------------------------------------------------------------------------


def test_update_that_returns_false_leaves_job_json_untouched(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    job_json = (store.job_dir(record.id) / "job.json").read_bytes()

    def no_change(current: JobRecord) -> bool:
        current.stage = "caption"  # changed in memory, but the change says "leave it"
        return False

    time.sleep(0.01)
    store.update(record.id, no_change)
    assert (store.job_dir(record.id) / "job.json").read_bytes() == job_json
    assert store.get(record.id).updated_at == record.updated_at
    assert store.get(record.id).stage is None


def test_update_that_returns_none_is_saved(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    time.sleep(0.01)
    updated = store.update(record.id, lambda current: setattr(current, "stage", "caption"))
    assert updated.stage == "caption"
    assert updated.updated_at > record.updated_at
    assert store.get(record.id) == updated


def test_update_to_a_finished_status_sets_finished_and_expiry(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    done = store.update(record.id, finish("failed"))
    assert done.finished_at == done.updated_at
    assert done.expires_at == pytest.approx(done.finished_at + TTL_S)
    assert markers(store, "queued") == [] and markers(store, "running") == []


def test_finished_at_is_set_only_once(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    done = store.update(record.id, finish("succeeded"))
    time.sleep(0.01)
    later = store.select(record.id, Selection(label=0, frame=0, by="alice", at=1.0))
    assert later.selection is not None
    assert later.updated_at > done.updated_at
    assert (later.finished_at, later.expires_at) == (done.finished_at, done.expires_at)


def test_update_of_a_status_moves_the_markers(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    store.update(record.id, finish("succeeded"))
    assert markers(store, "queued") == [] and markers(store, "running") == []


# --- expiry ---------------------------------------------------------------------------------------


def test_a_finished_job_expires_after_the_ttl(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TINY_S)
    record = new_job(store, request_)
    store.update(record.id, finish("succeeded"))
    assert store.get(record.id).status == "succeeded"
    sleep_past_tiny()
    with pytest.raises(JobNotFound):
        store.get(record.id)
    with pytest.raises(JobNotFound):
        output(store, record.id, "source.png")
    with pytest.raises(JobNotFound):
        store.update(record.id, lambda current: None)


def test_sweep_deletes_expired_jobs_and_counts_them(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TINY_S)
    expired = [new_job(store, request_) for _ in range(2)]
    live = new_job(store, request_)
    for record in expired:
        store.request_cancel(record.id)
    sleep_past_tiny()
    assert store.sweep() == 2
    assert job_dirs(store) == [live.id]
    assert store.sweep() == 0


def test_sweep_keeps_a_finished_job_before_its_ttl(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.request_cancel(record.id)
    assert store.sweep() == 0
    assert job_dirs(store) == [record.id]
    assert store.get(record.id).status == "cancelled"


def test_sweep_deletes_the_key_of_an_expired_job_only(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TINY_S)
    expired = new_job(store, request_, key="old")
    new_job(store, request_, key="live")
    store.request_cancel(expired.id)
    sleep_past_tiny()
    store.sweep()
    keys = [entry.read_text() for entry in (store.root / "keys").iterdir()]
    assert len(keys) == 1 and keys[0] != expired.id


@pytest.mark.parametrize("claimed", [False, True], ids=["queued", "running"])
def test_an_unfinished_job_never_expires(tmp_path: Path, request_: EditRequest, claimed: bool) -> None:
    store = JobStore(tmp_path, ttl_s=TINY_S)
    record = new_job(store, request_)
    if claimed:
        store.claim(record.id, "w1")
    sleep_past_tiny()
    assert store.get(record.id).expires_at is None
    assert store.sweep() == 0
    assert job_dirs(store) == [record.id]


def test_sweep_skips_a_folder_without_a_record(store: JobStore) -> None:
    (store.root / "jobs" / UNKNOWN_ID).mkdir()
    assert store.sweep() == 0
    assert job_dirs(store) == [UNKNOWN_ID]


# --- stale running and requeue --------------------------------------------------------------------


def test_stale_running_lists_a_running_job_whose_heartbeat_is_old(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TTL_S, lease_s=TINY_S)
    record = new_job(store, request_)
    new_job(store, request_)  # queued: never stale
    store.claim(record.id, "w1")
    sleep_past_tiny()
    assert store.stale_running() == [record.id]


def test_stale_running_skips_a_job_whose_heartbeat_is_fresh(tmp_path: Path, request_: EditRequest) -> None:
    record = new_job(JobStore(tmp_path, ttl_s=TTL_S), request_)
    JobStore(tmp_path, ttl_s=TTL_S).claim(record.id, "w1")
    time.sleep(TINY_S)
    assert JobStore(tmp_path, ttl_s=TTL_S, lease_s=60.0).stale_running() == []


def test_stale_running_follows_heartbeat_refreshes(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TTL_S, lease_s=0.5)
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    past = time.time() - 10.0
    store.update(record.id, lambda current: setattr(current, "heartbeat_at", past))
    assert store.stale_running() == [record.id]
    store.update(record.id, lambda current: setattr(current, "heartbeat_at", time.time()))
    assert store.stale_running() == []


def test_stale_running_skips_finished_jobs(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TTL_S, lease_s=TINY_S)
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    store.update(record.id, finish("succeeded"))
    sleep_past_tiny()
    assert store.stale_running() == []


def test_stale_running_skips_a_leftover_marker_of_a_job_that_is_not_running(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TTL_S, lease_s=TINY_S)
    record = new_job(store, request_)
    (store.root / "running" / record.id).touch()  # as if a process died between writing job.json and the markers
    sleep_past_tiny()
    assert store.stale_running() == []


def test_requeue_puts_a_running_job_back_in_the_queue(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TTL_S, lease_s=TINY_S)
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    store.update(record.id, lambda current: setattr(current, "stage", "generate"))
    sleep_past_tiny()
    back = store.requeue(record.id)
    assert (back.status, back.worker, back.heartbeat_at, back.stage, back.attempts) == ("queued", None, None, None, 1)
    assert store.get(record.id) == back
    assert markers(store, "queued") == [record.id]
    assert markers(store, "running") == []
    assert store.stale_running() == []


def test_a_requeued_job_is_claimed_again_with_its_attempts_counted(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=TTL_S)
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    store.requeue(record.id)
    again = store.claim(record.id, "w2")
    assert again is not None
    assert (again.status, again.worker, again.attempts) == ("running", "w2", 2)


@pytest.mark.parametrize("state", ["queued", "succeeded", "cancelled"])
def test_requeue_of_a_job_that_is_not_running_changes_nothing(store: JobStore, request_: EditRequest, state: str) -> None:
    record = new_job(store, request_)
    if state == "succeeded":
        store.claim(record.id, "w1")
        store.update(record.id, finish("succeeded"))
    elif state == "cancelled":
        store.request_cancel(record.id)
    job_json = (store.job_dir(record.id) / "job.json").read_bytes()
    queued, running = markers(store, "queued"), markers(store, "running")
    after = store.requeue(record.id)
    assert after.status == state
    assert (store.job_dir(record.id) / "job.json").read_bytes() == job_json
    assert (markers(store, "queued"), markers(store, "running")) == (queued, running)


# --- sending: a broker that was down or lost its messages ---------------------------------------------


def test_a_new_job_is_unsent_until_marked_sent(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    assert record.sent_at is None and store.unsent(TTL_S, grace_s=0) == [record.id]
    assert store.unsent(TTL_S) == []  # within the grace: the request that made it is sending it
    sent = store.mark_sent(record.id)
    assert sent.sent_at is not None and store.get(record.id).sent_at == sent.sent_at
    assert store.unsent(TTL_S) == []


def test_a_job_sent_longer_ago_than_resend_after_is_due_again(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.mark_sent(record.id)
    assert store.unsent(60.0) == []
    sleep_past_tiny()
    assert store.unsent(TINY_S) == [record.id]


def test_only_queued_jobs_are_ever_due(store: JobStore, request_: EditRequest) -> None:
    running, cancelled, done = (new_job(store, request_) for _ in range(3))
    store.claim(running.id, "w1")
    store.request_cancel(cancelled.id)
    store.claim(done.id, "w1")
    store.update(done.id, finish("succeeded"))
    assert store.unsent(TINY_S) == []
    job_json = (store.job_dir(done.id) / "job.json").read_bytes()
    assert store.mark_sent(done.id).sent_at is None  # a finished job never changes
    assert (store.job_dir(done.id) / "job.json").read_bytes() == job_json


def test_a_requeued_job_is_due_to_be_sent_again(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.mark_sent(record.id)
    store.claim(record.id, "w1")
    assert store.requeue(record.id).sent_at is None
    assert store.unsent(TTL_S, grace_s=0) == [record.id]


# --- a full volume -----------------------------------------------------------------------------------


@pytest.mark.parametrize("failing_write", [1, 2])  # the source, then the record
def test_a_full_volume_is_storage_full_and_leaves_no_half_made_job(
    store: JobStore, request_: EditRequest, monkeypatch: pytest.MonkeyPatch, failing_write: int
) -> None:
    real_write, writes = jobs._atomic_write, []

    def fills_up(path: Path, data: bytes) -> None:
        writes.append(path.name)
        if len(writes) == failing_write:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(jobs, "_atomic_write", fills_up)
    with pytest.raises(StorageFull, match="the job volume is full: a new job could not be written") as raised:
        store.create(SOURCE, request_, "fp-1", idempotency_key="k1")
    assert raised.value.code == "storage_full"
    assert (job_dirs(store), markers(store, "queued"), markers(store, "keys")) == ([], [], [])


def test_other_write_errors_are_not_storage_full(store: JobStore, request_: EditRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: Path, data: bytes) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(jobs, "_atomic_write", denied)
    with pytest.raises(StoreUnavailable) as refused:
        store.create(SOURCE, request_, "fp-1")
    assert not isinstance(refused.value, StorageFull) and refused.value.code == "store_unavailable"
    assert "Permission denied" in str(refused.value)
    assert job_dirs(store) == []


FULL_VOLUME_SCRIPT = """
import os, sys
from f2f.serving.jobs import EditRequest, JobStore, StorageFull
root = sys.argv[1]
os.makedirs(root, exist_ok=True)
os.system(f"mount -t tmpfs -o size=256k tmpfs {root}")
store = JobStore(root, ttl_s=60)
filler = os.path.join(root, "filler")
fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, b"x" * 4096)
except OSError:
    os.close(fd)
request = EditRequest(prompt="p", seeds=[1])
try:
    store.create(b"s" * 65536, request, "fp")
    print("created on a full volume")
except StorageFull as exc:
    print("storage_full", sorted(os.listdir(os.path.join(root, "jobs"))), sorted(os.listdir(os.path.join(root, "queued"))))
os.unlink(filler)
record, created = store.create(b"s" * 65536, request, "fp")
print("then", record.status, created)
"""


def test_a_really_full_tmpfs_is_storage_full_and_nothing_is_left(tmp_path: Path) -> None:
    """A real ENOSPC: a 256 KiB tmpfs, mounted in a private user and mount namespace (no root needed)."""
    unshare = shutil.which("unshare")
    probe = unshare and subprocess.run([unshare, "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    if not probe or probe.returncode != 0:
        pytest.skip("unprivileged user and mount namespaces are not available here (unshare)")
    command = [unshare, "--user", "--map-root-user", "--mount", sys.executable, "-c", FULL_VOLUME_SCRIPT, str(tmp_path / "v")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["storage_full [] []", "then queued True"]


# --- fenced leases ----------------------------------------------------------------------------------


def claimed(store: JobStore, job_id: str, worker: str = "w1") -> Lease:
    record = store.claim(job_id, worker)
    assert record is not None
    return Lease.of(record)


def taken_over(store: JobStore, job_id: str) -> Lease:
    """What happens to a job whose worker went silent: the sweep queues it again and another worker claims it."""
    store.requeue(job_id)
    return claimed(store, job_id, "w2")


def output(store: JobStore, job_id: str, name: str) -> bytes | None:
    """The bytes of the job's output `name`; None if it has none."""
    key = store.output_key(store.get(job_id), name)
    return None if key is None or not store.objects.exists(key) else store.objects.get(key)


def keep(store: JobStore, lease: Lease, files: dict[str, bytes]) -> None:
    """An attempt writes `files` into its local folder and keeps them."""
    folder = store.outputs_dir(lease)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    store.keep_outputs(lease, folder)


def record_bytes(store: JobStore, job_id: str) -> bytes:
    return (store.job_dir(job_id) / "job.json").read_bytes()


FENCED_WRITES = [  # every write of an attempt: each carries the attempt's lease
    pytest.param(lambda s, lease: s.heartbeat(lease), id="heartbeat"),
    pytest.param(lambda s, lease: s.heartbeat(lease, "generate", 3, 10), id="progress"),
    pytest.param(lambda s, lease: s.outputs_dir(lease), id="outputs"),
    pytest.param(lambda s, lease: s.keep_outputs(lease, s.root / "nothing"), id="keep_outputs"),
    pytest.param(lambda s, lease: s.next_attempt(lease), id="next_attempt"),
    pytest.param(lambda s, lease: s.hand_back(lease), id="hand_back"),
    pytest.param(lambda s, lease: s.finish(lease, "succeeded", None), id="finish_succeeded"),
    pytest.param(lambda s, lease: s.finish(lease, "failed", JobError(message="m", code="c")), id="finish_failed"),
]


def test_a_claim_is_the_attempts_lease(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    assert claimed(store, record.id) == Lease(record.id, "w1", 1)
    assert taken_over(store, record.id) == Lease(record.id, "w2", 2)


@pytest.mark.parametrize("write", FENCED_WRITES)
def test_a_write_of_an_attempt_whose_job_was_taken_over_is_refused_and_changes_nothing(
    store: JobStore, request_: EditRequest, write: Callable[[JobStore, Lease], Any]
) -> None:
    record = new_job(store, request_)
    stale = claimed(store, record.id)
    taken_over(store, record.id)
    before = record_bytes(store, record.id)
    with pytest.raises(LeaseLost, match=f"job {record.id}: attempt 1 of worker w1 lost its lease"):
        write(store, stale)
    assert record_bytes(store, record.id) == before
    assert not store.objects.keys(store.key(record.id, ATTEMPTS))


@pytest.mark.parametrize("write", FENCED_WRITES)
def test_a_write_of_an_attempt_whose_job_was_queued_again_is_refused(
    store: JobStore, request_: EditRequest, write: Callable[[JobStore, Lease], Any]
) -> None:
    """Queued again by the sweep and not yet claimed: the job is at the same attempt number, but not running."""
    record = new_job(store, request_)
    stale = claimed(store, record.id)
    store.requeue(record.id)
    before = record_bytes(store, record.id)
    with pytest.raises(LeaseLost):
        write(store, stale)
    assert record_bytes(store, record.id) == before and store.get(record.id).status == "queued"


@pytest.mark.parametrize("write", FENCED_WRITES)
@pytest.mark.parametrize("ended", ["succeeded", "cancelled"])
def test_a_finished_jobs_record_never_changes_again(
    store: JobStore, request_: EditRequest, write: Callable[[JobStore, Lease], Any], ended: str
) -> None:
    """Not by its own attempt's late writes (a duplicate finish included), nor by any other store call."""
    record = new_job(store, request_)
    lease = claimed(store, record.id)
    store.finish(lease, ended, None)  # type: ignore[arg-type]
    before = record_bytes(store, record.id)
    with pytest.raises(LeaseLost):
        write(store, lease)
    for change in (store.requeue, store.request_cancel, store.cancel_if_requested, store.mark_sent):
        change(record.id)
    assert store.claim(record.id, "w3") is None
    assert record_bytes(store, record.id) == before


def test_a_finished_record_changes_only_in_its_selection(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    lease = claimed(store, record.id)
    done = store.finish(lease, "succeeded", None)
    with pytest.raises(RuntimeError, match="changes only in `selection`"):
        store.update(record.id, lambda current: current.timings_s.update(total=1.5))
    chosen = store.select(record.id, Selection(label=0, frame=0, by="alice", at=1.0))
    assert chosen.selection is not None and chosen.model_dump(exclude={"selection", "updated_at"}) == done.model_dump(
        exclude={"selection", "updated_at"}
    )


def test_a_heartbeat_of_the_holding_attempt_refreshes_its_lease_and_writes_progress(
    store: JobStore, request_: EditRequest
) -> None:
    record = new_job(store, request_)
    lease = claimed(store, record.id)
    beaten = store.heartbeat(lease, "generate", 3, 10)
    assert (beaten.stage, beaten.progress.step if beaten.progress else None) == ("generate", 3)
    assert Lease.of(store.next_attempt(lease)) == Lease(record.id, "w1", 2)
    with pytest.raises(LeaseLost):  # the retry is attempt 2: attempt 1's lease is spent
        store.heartbeat(lease)


def test_outputs_become_the_jobs_only_by_its_attempts_finish(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    lease = claimed(store, record.id)
    keep(store, lease, {"edited.png": b"the edit", "candidates/frame_004.png": b"a frame"})
    assert output(store, record.id, "edited.png") is None  # kept, not the job's yet
    store.finish(lease, "succeeded", None)
    assert output(store, record.id, "edited.png") == b"the edit"
    assert output(store, record.id, "candidates/frame_004.png") == b"a frame"
    assert not (store.root / "scratch" / f"{record.id}-1-w1").exists()  # the attempt's local folder is gone


def test_a_stale_attempts_outputs_never_become_the_jobs(store: JobStore, request_: EditRequest) -> None:
    """Attempt 1 was paused past its lease; attempt 2 ran and finished; attempt 1 resumes and writes on."""
    record = new_job(store, request_)
    stale = claimed(store, record.id)
    keep(store, stale, {"edited.png": b"attempt 1", "collage.png": b"attempt 1's collage"})
    fresh = taken_over(store, record.id)
    keep(store, fresh, {"edited.png": b"attempt 2"})
    done = store.finish(fresh, "succeeded", None)
    with pytest.raises(LeaseLost):  # the stale worker goes on: it can keep nothing more
        keep(store, stale, {"edited.png": b"attempt 1, later"})
    with pytest.raises(LeaseLost):
        store.finish(stale, "succeeded", None)
    assert output(store, record.id, "edited.png") == b"attempt 2"
    assert output(store, record.id, "collage.png") is None  # not attempt 2's
    assert store.objects.keys(store.key(record.id, ATTEMPTS)) == [store.key(record.id, f"{ATTEMPTS}/2-w2/edited.png")]
    assert store.get(record.id) == done


def test_a_failed_attempts_outputs_are_dropped(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    lease = claimed(store, record.id)
    keep(store, lease, {"edited.png": b"half an edit"})
    store.finish(lease, "failed", JobError(message="m", code="c"))
    assert output(store, record.id, "edited.png") is None
    assert not store.objects.keys(store.key(record.id, ATTEMPTS))


def test_a_finish_whose_record_cannot_be_written_changes_nothing_and_may_be_tried_again(
    store: JobStore, request_: EditRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record still says running, the kept outputs are the attempt's; a retry of the finish makes them the job's."""
    record = new_job(store, request_)
    lease = claimed(store, record.id)
    keep(store, lease, {"edited.png": b"the edit"})
    real_write = jobs._atomic_write

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(jobs, "_atomic_write", full)
    with pytest.raises(StorageFull):
        store.finish(lease, "succeeded", None)
    assert store.get(record.id).status == "running" and output(store, record.id, "edited.png") is None
    monkeypatch.setattr(jobs, "_atomic_write", real_write)
    assert store.finish(lease, "succeeded", None).status == "succeeded"
    assert output(store, record.id, "edited.png") == b"the edit"


def test_a_worker_id_that_cannot_name_a_folder_is_refused(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    with pytest.raises(ValueError, match=r"worker id '\.\./w1' must be"):
        store.claim(record.id, "../w1")
    assert store.get(record.id).status == "queued"


# --- records this version cannot read, and a failing volume -----------------------------------------


def newer_record(store: JobStore, request_: EditRequest, running: bool = False) -> JobRecord:
    """A job (queued, or running) whose record a newer version rewrote with a field this one does not know."""
    record = new_job(store, request_)
    if running:
        store.claim(record.id, "w1")
    data = json.loads(record_bytes(store, record.id))
    (store.job_dir(record.id) / "job.json").write_text(json.dumps({**data, "priority": 5}))
    return record


@pytest.fixture
def unreadable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reports of `f2f_job_records_unreadable_total`."""
    counted: list[str] = []
    monkeypatch.setattr(metrics, "record_unreadable_record", lambda: counted.append("unreadable"))
    return counted


def test_a_record_this_version_cannot_parse_is_reported_and_typed(
    store: JobStore, request_: EditRequest, unreadable: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    record = newer_record(store, request_)
    with caplog.at_level("ERROR", logger="f2f.serving"), pytest.raises(JobUnreadable) as refused:
        store.get(record.id)
    assert refused.value.code == "job_unreadable" and refused.value.retry_after_s == store.retry_after_s
    assert unreadable == ["unreadable"]
    assert any(record.id in r.getMessage() and "priority" in r.getMessage() for r in caplog.records)


def test_the_sweep_goes_on_past_a_record_it_cannot_parse(tmp_path: Path, request_: EditRequest, unreadable: list[str]) -> None:
    store = JobStore(tmp_path, ttl_s=TINY_S, lease_s=TINY_S)
    newer = newer_record(store, request_, running=True)
    stale, expired = new_job(store, request_), new_job(store, request_)
    store.claim(stale.id, "w1")
    store.request_cancel(expired.id)
    sleep_past_tiny()
    assert store.stale_running() == [stale.id]
    assert store.unsent(resend_after_s=TTL_S, grace_s=0.0) == []  # the one queued job that is readable was cancelled
    assert store.sweep() == 1 and not store.job_dir(expired.id).exists()
    assert store.job_dir(newer.id).exists() and unreadable == ["unreadable"] * 2  # one read by stale_running, one by sweep


def test_a_read_only_volume_is_store_unavailable_with_retry_after(
    store: JobStore, request_: EditRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = new_job(store, request_)
    store.retry_after_s = 7

    def read_only(path: Path, data: bytes) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(jobs, "_atomic_write", read_only)
    for call in (lambda: store.create(SOURCE, request_, "fp-2"), lambda: store.request_cancel(record.id)):
        with pytest.raises(StoreUnavailable) as refused:
            call()
        assert (refused.value.code, refused.value.retry_after_s) == ("store_unavailable", 7)
        assert "Read-only file system" in str(refused.value)
    assert store.get(record.id) == record and job_dirs(store) == [record.id]


READ_ONLY_SCRIPT = """
import os, subprocess, sys
from f2f.serving.jobs import EditRequest, JobStore, Lease, StoreUnavailable
root = sys.argv[1]
os.makedirs(root, exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", root], check=True)
store = JobStore(root, ttl_s=60)
request = EditRequest(prompt="p", seeds=[1])
waiting, _ = store.create(b"s", request, "fp")
running, _ = store.create(b"s", request, "fp")
lease = Lease.of(store.claim(running.id, "w1"))
subprocess.run(["mount", "-o", "remount,ro", root], check=True)
calls = {
    "create": lambda: store.create(b"s", request, "fp"),
    "cancel": lambda: store.request_cancel(waiting.id),
    "heartbeat": lambda: store.heartbeat(lease),
    "finish": lambda: store.finish(lease, "succeeded", None),
}
for name, call in calls.items():
    try:
        call()
        print(name, "written")
    except StoreUnavailable as exc:
        print(name, exc.code)
print("read", store.get(waiting.id).status, store.get(running.id).status, store.sweep(), store.stale_running())
"""


def test_a_really_read_only_volume_is_store_unavailable_and_reads_go_on(tmp_path: Path) -> None:
    """A real EROFS: a tmpfs remounted read-only in a private user and mount namespace (no root needed). A create
    fails on its source, the first thing it writes (in the default local object folder)."""
    unshare = shutil.which("unshare")
    probe = unshare and subprocess.run([unshare, "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    if not probe or probe.returncode != 0:
        pytest.skip("unprivileged user and mount namespaces are not available here (unshare)")
    command = [unshare, "--user", "--map-root-user", "--mount", sys.executable, "-c", READ_ONLY_SCRIPT, str(tmp_path / "v")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    written = [
        "create object_store_unavailable",
        "cancel store_unavailable",
        "heartbeat store_unavailable",
        "finish store_unavailable",
    ]
    assert done.stdout.splitlines() == [*written, "read queued running 0 []"]


# --- fingerprint ----------------------------------------------------------------------------------

BASE_PARTS: tuple[Any, ...] = (b"image bytes", "prompt", {"seeds": [1, 2], "num_frames": 17})


def test_fingerprint_is_stable_for_equal_inputs() -> None:
    assert fingerprint(*BASE_PARTS) == fingerprint(b"image bytes", "prompt", {"seeds": [1, 2], "num_frames": 17})
    assert len(fingerprint(*BASE_PARTS)) == 64


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param((b"image bytez", "prompt", {"seeds": [1, 2], "num_frames": 17}), id="bytes"),
        pytest.param((b"image bytes", "prompt!", {"seeds": [1, 2], "num_frames": 17}), id="str"),
        pytest.param((b"image bytes", "prompt", {"seeds": [2, 1], "num_frames": 17}), id="dict-value"),
        pytest.param((b"image bytes", "prompt", {"seeds": [1, 2], "num_frame": 17}), id="dict-key"),
        pytest.param((b"image bytes", "prompt", {"seeds": [1, 2]}), id="dict-size"),
        pytest.param((b"image bytes", "prompt"), id="fewer-parts"),
        pytest.param(("prompt", b"image bytes", {"seeds": [1, 2], "num_frames": 17}), id="order"),
    ],
)
def test_fingerprint_differs_when_any_part_changes(parts: tuple[Any, ...]) -> None:
    assert fingerprint(*parts) != fingerprint(*BASE_PARTS)


def test_fingerprint_keeps_part_boundaries() -> None:
    assert fingerprint("ab", "c") != fingerprint("a", "bc")
    assert fingerprint(b"ab", b"") != fingerprint(b"a", b"b")


def test_fingerprint_ignores_dict_key_order() -> None:
    forward = {"a": 1, "b": {"x": 1, "y": 2}}
    backward = {"b": {"y": 2, "x": 1}, "a": 1}
    assert fingerprint(forward) == fingerprint(backward)


# --- files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["job.json", "source.png"])
def test_files_are_world_readable(store: JobStore, request_: EditRequest, name: str) -> None:
    record = new_job(store, request_)
    assert stat.S_IMODE((store.job_dir(record.id) / name).stat().st_mode) == 0o644


def test_job_json_keeps_its_mode_after_an_update(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    assert stat.S_IMODE((store.job_dir(record.id) / "job.json").stat().st_mode) == 0o644


def test_writes_leave_no_temporary_files(store: JobStore, request_: EditRequest) -> None:
    record = new_job(store, request_)
    store.claim(record.id, "w1")
    store.update(record.id, finish("succeeded"))
    names = sorted(path.name for path in store.job_dir(record.id).iterdir())
    assert names == [".lock", "job.json", "source.png"]


def test_a_job_tried_max_attempts_times_fails_instead_of_running_again(tmp_path: Path, request_: EditRequest) -> None:
    store = JobStore(tmp_path, ttl_s=60, lease_s=0.05)
    record, _ = store.create(SOURCE, request_, "fp")
    assert store.claim(record.id, "w1", max_attempts=2) is not None
    time.sleep(0.1)  # w1 was lost: its lease ran out
    assert store.claim(record.id, "w2", max_attempts=2) is not None
    time.sleep(0.1)
    assert store.claim(record.id, "w3", max_attempts=2) is None
    failed = store.get(record.id)
    assert failed.status == "failed" and failed.attempts == 2 and failed.error is not None
    assert failed.error.code == "too_many_attempts" and failed.expires_at is not None


def test_a_write_that_fails_leaves_no_temporary_file_and_the_old_file_whole(store: JobStore, request_: EditRequest) -> None:
    from f2f.result import write_atomic

    record = new_job(store, request_)
    path = store.job_dir(record.id) / "job.json"
    before = path.read_bytes()

    def fills_up(f: Any) -> None:
        f.write(b"{half a record")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError):
        write_atomic(path, fills_up)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["job.json", "source.png"]


def test_lost_workers_lists_a_silent_worker_once(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "store", ttl_s=TTL_S, lease_s=TINY_S)
    store.worker_alive("gone")
    sleep_past_tiny()
    store.worker_alive("alive")
    assert store.lost_workers() == ["gone"]
    assert store.lost_workers() == []  # forgotten once listed: one sweep acts on it
