"""The ingress's admission rules in process (no Ray): the HTTP app over a real job store and a recording queue.

Bad options are typed 400s naming the field and the limit; the queue bound holds
when many requests arrive at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from f2f.config import F2FConfig  # noqa: E402
from f2f.request import RequestLimits  # noqa: E402
from f2f.serving.api.auth import AuthArgs  # noqa: E402
from f2f.serving.api.service import EditService  # noqa: E402
from f2f.serving.deployments.ingress import make_api  # noqa: E402
from f2f.serving.jobs import JobStore  # noqa: E402
from f2f.serving.jobs.queue import JobsArgs  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "f2f" / "data" / "sample.png"
IMAGE = base64.b64encode(SAMPLE.read_bytes()).decode()


class RecordingQueue:
    """The producer side of the job queue, as a list of the job ids sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, job_id: str) -> None:
        self.sent.append(job_id)


async def _ready() -> None:
    return None


def _app(tmp_path: Path, max_queued: int = 64) -> tuple[Any, JobStore]:
    jobs = JobsArgs(dir=tmp_path / "jobs", max_queued=max_queued)
    store = JobStore(jobs.store_dir(tmp_path), jobs.ttl_s, jobs.lease_s)
    limits = RequestLimits(max_n=4, max_num_frames=49, max_steps=100)
    service = EditService(store, RecordingQueue(), F2FConfig(), jobs, limits, AuthArgs(required=False))
    return make_api(service, _ready), store


async def _post(app: Any, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.post("/v1/edits", json={"image": IMAGE, **body}, headers=headers, timeout=60)


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize(
    ("options", "param", "phrase"),
    [
        ({"num_frames": 8_000_000_001}, "num_frames", "at most 49 on this server (max_num_frames)"),
        ({"steps": 101}, "steps", "at most 100 on this server (max_steps)"),
        ({"n": 5}, "n", "at most 4 videos per edit on this server"),
        ({"seeds": [1, 2, 3, 4, 5]}, "seeds", "at most 4 videos per edit on this server"),
        ({"seed": True}, "seed", "not a boolean"),
        ({"n": True}, "n", "not a boolean"),
        ({"steps": True}, "steps", "not a boolean"),
        ({"num_frames": False}, "num_frames", "not a boolean"),
        ({"guidance": True}, "guidance", "not a boolean"),
        ({"seeds": [1, True]}, "seeds.1", "not a boolean"),
    ],
)
def test_options_over_a_limit_or_of_the_wrong_kind_are_typed_400s(
    tmp_path: Path, options: dict[str, Any], param: str, phrase: str
) -> None:
    app, store = _app(tmp_path)
    response = asyncio.run(_post(app, {"prompt": "make it rain", **options}))
    assert response.status_code == 400, response.text[:300]
    error = _error(response)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(param) and phrase in error["message"], error
    assert store.queue_stats()[0] == 0  # nothing was queued


def test_an_empty_idempotency_key_is_refused(tmp_path: Path) -> None:
    app, store = _app(tmp_path)
    response = asyncio.run(_post(app, {"prompt": "make it rain"}, headers={"Idempotency-Key": ""}))
    assert response.status_code == 400, response.text[:300]
    assert _error(response)["param"] == "idempotency-key"
    assert store.queue_stats()[0] == 0


def test_the_queue_bound_holds_when_requests_arrive_together(tmp_path: Path) -> None:
    app, store = _app(tmp_path, max_queued=3)

    async def burst() -> list[httpx.Response]:
        return await asyncio.gather(*(_post(app, {"prompt": f"edit {i}"}) for i in range(12)))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] * 3 + [503] * 9, statuses
    assert store.queue_stats()[0] == 3
    refused = [json.loads(r.text)["error"] for r in responses if r.status_code == 503]
    assert all(e["code"] == "overloaded" and e["message"].startswith("3 edits are waiting") for e in refused)


def test_a_lost_worker_makes_the_sweep_send_every_waiting_job_again(tmp_path: Path) -> None:
    """A worker killed between taking a message and claiming its job took that message with it."""
    from f2f.serving.jobs import EditRequest, sweep_once

    jobs = JobsArgs(dir=tmp_path / "jobs", lease_s=0.2, heartbeat_s=0.1)
    store = JobStore(jobs.store_dir(tmp_path), jobs.ttl_s, jobs.lease_s)
    record, _ = store.create(b"png", EditRequest(prompt="x", seeds=[1]), "fp")
    store.mark_sent(record.id)
    queue = RecordingQueue()
    asyncio.run(sweep_once(store, queue, jobs.resend_after_s))
    assert queue.sent == []  # sent a moment ago, no worker lost: nothing to do
    store.worker_alive("w1")
    time.sleep(0.3)
    asyncio.run(sweep_once(store, queue, jobs.resend_after_s))
    assert queue.sent == [record.id]
    asyncio.run(sweep_once(store, queue, jobs.resend_after_s))
    assert queue.sent == [record.id]  # once per lost worker


# --- a failing job store ----------------------------------------------------------------------------


def _store_app(tmp_path: Path) -> tuple[Any, JobStore]:
    jobs = JobsArgs(dir=tmp_path / "jobs", retry_after_s=7)
    store = JobStore(jobs.store_dir(tmp_path), jobs.ttl_s, jobs.lease_s)
    service = EditService(store, RecordingQueue(), F2FConfig(), jobs, RequestLimits(), AuthArgs(required=False))
    return make_api(service, _ready), store


async def _request(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.request(method, path, timeout=60, **kwargs)


def _assert_retry_later(response: httpx.Response, code: str) -> dict[str, Any]:
    assert response.status_code == 503, response.text[:300]
    assert response.headers["retry-after"] == "7"  # the app's jobs.retry_after_s
    error = _error(response)
    assert (error["type"], error["code"]) == ("server_error", code)
    return error


READ_ONLY_CALLS = [
    pytest.param("POST", "/v1/edits", {"json": {"image": IMAGE, "prompt": "make it rain"}}, id="post-edits"),
    pytest.param(
        "POST",
        "/v1/images/edits",
        {"data": {"prompt": "make it rain"}, "files": {"image": ("s.png", SAMPLE.read_bytes(), "image/png")}},
        id="post-images-edits",
    ),
    pytest.param("DELETE", "/v1/edits/{id}", {}, id="delete"),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), READ_ONLY_CALLS)
def test_a_read_only_job_store_is_a_typed_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    from errno import EROFS
    from os import strerror

    from f2f.serving.jobs import file_store as jobs

    app, store = _store_app(tmp_path)
    waiting = asyncio.run(_post(app, {"prompt": "waits"})).json()["id"]

    def read_only(target: Path, data: bytes) -> None:
        raise OSError(EROFS, strerror(EROFS), str(target))

    monkeypatch.setattr(jobs, "_atomic_write", read_only)
    response = asyncio.run(_request(app, method, path.format(id=waiting), **kwargs))
    error = _assert_retry_later(response, "store_unavailable")
    assert "Read-only file system" in error["message"]
    assert [entry.name for entry in (store.root / "jobs").iterdir()] == [waiting]  # nothing half-made
    assert store.get(waiting).status == "queued"


@pytest.mark.parametrize("route", ["/v1/edits/{id}", "/v1/edits/{id}/events"])
def test_a_job_whose_record_this_version_cannot_parse_is_a_typed_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """Not a 404 (the job exists: a newer version wrote it) and not a 500."""
    from f2f.serving import metrics

    monkeypatch.setattr(metrics, "record_unreadable_record", lambda: None)
    app, store = _store_app(tmp_path)
    job_id = asyncio.run(_post(app, {"prompt": "rewritten by a newer version"})).json()["id"]
    record = store.job_dir(job_id) / "job.json"
    record.write_text(json.dumps({**json.loads(record.read_bytes()), "priority": 5}))
    response = asyncio.run(_request(app, "GET", route.format(id=job_id)))
    error = _assert_retry_later(response, "job_unreadable")
    assert job_id in error["message"]
