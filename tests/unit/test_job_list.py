"""Listing a caller's jobs: the store's per-owner index (`JobStore.list_for`) and `GET /v1/edits` (no Ray), with
API keys on: newest first, a status filter, cursor pages in OpenAI's list shape, never another key's job."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from f2f.config import F2FConfig  # noqa: E402
from f2f.request import RequestLimits  # noqa: E402
from f2f.serving.api.auth import AuthArgs, add_key  # noqa: E402
from f2f.serving.api.service import EditService  # noqa: E402
from f2f.serving.deployments.ingress import make_api  # noqa: E402
from f2f.serving.jobs import EditRequest, JobNotFound, JobStore  # noqa: E402
from f2f.serving.jobs.queue import JobsArgs  # noqa: E402


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _create(store: JobStore, owner: str, n: int) -> list[str]:
    """`n` jobs of `owner`, oldest first."""
    ids = []
    for i in range(n):
        record, _ = store.create(_png(), EditRequest(prompt=f"edit {i}", seeds=[i]), f"fp{i}", owner=owner)
        ids.append(record.id)
    return ids


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "store", ttl_s=3600)


def test_an_owners_jobs_come_newest_first_and_no_one_elses(store: JobStore) -> None:
    alice = _create(store, "alice", 3)
    _create(store, "bob", 2)
    page, more = store.list_for("alice")
    assert [r.id for r in page] == alice[::-1] and not more
    assert store.list_for("carol") == ([], False)


def test_pages_follow_the_cursor_to_the_end(store: JobStore) -> None:
    ids = _create(store, "alice", 5)[::-1]
    first, more = store.list_for("alice", limit=2)
    assert [r.id for r in first] == ids[:2] and more
    second, more = store.list_for("alice", after=first[-1].id, limit=2)
    assert [r.id for r in second] == ids[2:4] and more
    last, more = store.list_for("alice", after=second[-1].id, limit=2)
    assert [r.id for r in last] == ids[4:] and not more


def test_the_status_filter_reads_the_current_status(store: JobStore) -> None:
    ids = _create(store, "alice", 3)
    store.request_cancel(ids[1])
    assert [r.id for r in store.list_for("alice", status="cancelled")[0]] == [ids[1]]
    assert [r.id for r in store.list_for("alice", status="queued")[0]] == [ids[2], ids[0]]


def test_a_page_filled_exactly_says_whether_more_match(store: JobStore) -> None:
    ids = _create(store, "alice", 3)
    store.request_cancel(ids[0])
    assert store.list_for("alice", status="queued", limit=2)[1] is False  # the oldest is cancelled: no more queued
    assert store.list_for("alice", limit=2)[1] is True


@pytest.mark.parametrize("after", ["0" * 32, "../../etc", "ZZ"])
def test_a_cursor_that_is_no_job_of_the_owners_is_refused(store: JobStore, after: str) -> None:
    _create(store, "alice", 1)
    with pytest.raises(JobNotFound):
        store.list_for("alice", after=after)


def test_another_owners_job_is_no_cursor(store: JobStore) -> None:
    (bobs,) = _create(store, "bob", 1)
    with pytest.raises(JobNotFound):
        store.list_for("alice", after=bobs)


def test_expired_jobs_leave_the_list_and_the_sweep_drops_their_entries(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "store", ttl_s=0.0)
    old, kept = _create(store, "alice", 2)
    store.request_cancel(old)  # finished now, expires at once (ttl 0)
    assert [r.id for r in store.list_for("alice")[0]] == [kept]
    store.sweep()
    (owner,) = os.scandir(tmp_path / "store" / "owners")
    assert [entry.name.rpartition("-")[2] for entry in os.scandir(owner.path)] == [kept]


def test_a_store_made_before_the_index_is_indexed_when_opened(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "store", ttl_s=3600)
    ids = _create(store, "alice", 2)
    for entry in os.scandir(tmp_path / "store" / "owners"):  # as an older version left it: no owners/
        for job in os.scandir(entry.path):
            os.unlink(job.path)
        os.rmdir(entry.path)
    os.rmdir(tmp_path / "store" / "owners")
    again = JobStore(tmp_path / "store", ttl_s=3600)
    assert [r.id for r in again.list_for("alice")[0]] == ids[::-1]


# --- GET /v1/edits ------------------------------------------------------------------------------------


class NoWorker:
    def send(self, job_id: str) -> None:
        pass


def _api(tmp_path: Path) -> tuple[Any, JobStore, dict[str, dict[str, str]]]:
    keys = tmp_path / "keys.yaml"
    headers = {name: {"Authorization": f"Bearer {add_key(keys, name)}"} for name in ("alice", "bob")}
    jobs = JobsArgs(dir=tmp_path / "jobs")
    store = JobStore(jobs.store_dir(tmp_path), jobs.ttl_s, jobs.lease_s)
    service = EditService(store, NoWorker(), F2FConfig(), jobs, RequestLimits(), AuthArgs(keys_file=keys))
    return make_api(service, None), store, headers  # type: ignore[arg-type]


def _get(app: Any, path: str, headers: dict[str, str], **params: Any) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get(path, params=params, headers=headers)

    return asyncio.run(run())


def test_the_list_route_pages_one_keys_jobs_in_openais_shape(tmp_path: Path) -> None:
    app, store, headers = _api(tmp_path)
    alice = _create(store, "alice", 3)[::-1]
    _create(store, "bob", 2)
    first = _get(app, "/v1/edits", headers["alice"], limit=2).json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [job["id"] for job in first["data"]] == alice[:2]
    assert (first["first_id"], first["last_id"]) == (alice[0], alice[1])
    assert first["data"][0]["links"]["self"] == f"/v1/edits/{alice[0]}"
    rest = _get(app, "/v1/edits", headers["alice"], limit=2, after=first["last_id"]).json()
    assert [job["id"] for job in rest["data"]] == alice[2:] and rest["has_more"] is False
    bobs = _get(app, "/v1/edits", headers["bob"]).json()
    assert len(bobs["data"]) == 2 and not set(alice) & {job["id"] for job in bobs["data"]}


def test_the_list_route_filters_by_status(tmp_path: Path) -> None:
    app, store, headers = _api(tmp_path)
    ids = _create(store, "alice", 2)
    store.request_cancel(ids[0])
    answer = _get(app, "/v1/edits", headers["alice"], status="cancelled").json()
    assert [job["id"] for job in answer["data"]] == [ids[0]] and answer["data"][0]["status"] == "cancelled"


@pytest.mark.parametrize(
    ("params", "param"),
    [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"status": "done"}, "status"), ({"after": "f" * 32}, "after")],
)
def test_bad_list_parameters_are_typed_400s_naming_the_parameter(tmp_path: Path, params: dict[str, Any], param: str) -> None:
    app, store, headers = _api(tmp_path)
    _create(store, "alice", 1)
    response = _get(app, "/v1/edits", headers["alice"], **params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_another_keys_job_is_no_cursor_over_http(tmp_path: Path) -> None:
    app, store, headers = _api(tmp_path)
    (bobs,) = _create(store, "bob", 1)
    response = _get(app, "/v1/edits", headers["alice"], after=bobs)
    assert response.status_code == 400 and response.json()["error"]["param"] == "after"
    assert bobs in response.json()["error"]["message"]  # it names what was given, which the caller knows already


def test_the_list_needs_a_key(tmp_path: Path) -> None:
    app, _, _ = _api(tmp_path)
    assert _get(app, "/v1/edits", {}).status_code == 401
