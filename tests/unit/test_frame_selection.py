"""Selecting another frame of the path (`f2f.serving.api.candidates`) in process, without Ray: the frames listing,
the label rule, the store's record of the choice, and the route over a real job store.

A succeeded job is made here as the worker leaves one: its record with a result, and its files.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from succeeded_jobs import job_result, run_job  # noqa: E402

from f2f.config import F2FConfig  # noqa: E402
from f2f.errors import InvalidInput  # noqa: E402
from f2f.request import RequestLimits  # noqa: E402
from f2f.serving.api.auth import AuthArgs  # noqa: E402
from f2f.serving.api.candidates import frame_file, frame_links, result_file  # noqa: E402
from f2f.serving.api.service import EditService  # noqa: E402
from f2f.serving.api.wire import JobResult, Selection  # noqa: E402
from f2f.serving.deployments.ingress import make_api  # noqa: E402
from f2f.serving.jobs import EditRequest, JobRecord, JobStore  # noqa: E402
from f2f.serving.jobs.queue import JobsArgs  # noqa: E402

CANDIDATES = [4, 8, 12]


def _result(job_id: str) -> JobResult:
    return job_result(job_id, CANDIDATES, (96, 64), selected_label=2)


def _succeeded(store: JobStore) -> JobRecord:
    """A job as the worker leaves it: edited.png, every candidate frame, the record succeeded."""
    record, _ = store.create(b"source-png", EditRequest(prompt="make the sun set", seeds=[1]), "fp")
    frames = {f"candidates/frame_{frame:03d}.png": f"frame-{frame}".encode() for frame in CANDIDATES}
    return run_job(store, record.id, {"edited.png": b"edited-png", **frames}, _result(record.id))


def test_the_frames_listing_is_the_source_then_each_tile() -> None:
    assert [f.model_dump() for f in frame_links("ab", CANDIDATES)] == [
        {"label": 0, "frame": 0, "url": "/v1/edits/ab/frames/0"},
        {"label": 1, "frame": 4, "url": "/v1/edits/ab/frames/1"},
        {"label": 2, "frame": 8, "url": "/v1/edits/ab/frames/2"},
        {"label": 3, "frame": 12, "url": "/v1/edits/ab/frames/3"},
    ]


@pytest.mark.parametrize("label", [-1, 4, 10**9])
def test_a_label_out_of_range_names_label_and_the_range(label: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        frame_file(label, _result("ab"))
    assert caught.value.field == "label" and caught.value.rule == "must be 0 (the source) to 3 (the last candidate tile)"


def test_the_store_records_a_choice_once_and_keeps_the_rest(tmp_path: Path) -> None:
    store = JobStore(tmp_path, ttl_s=3600)
    record = _succeeded(store)
    assert result_file(record) == "edited.png"
    first = store.select(record.id, Selection(label=3, frame=12, by="alice", at=1.0))
    assert first.selection == Selection(label=3, frame=12, by="alice", at=1.0)
    assert result_file(first) == "candidates/frame_012.png"
    assert (first.status, first.result, first.finished_at, first.expires_at) == (
        record.status,
        record.result,
        record.finished_at,
        record.expires_at,
    )
    again = store.select(record.id, Selection(label=3, frame=12, by="alice", at=2.0))
    assert again.selection == first.selection  # the same label: nothing changes, not even `at`
    source = store.select(record.id, Selection(label=0, frame=0, by="alice", at=3.0))
    assert result_file(source) == "source.png" and store.get(record.id).selection == source.selection


def _app(tmp_path: Path) -> tuple[Any, JobStore]:
    jobs = JobsArgs(dir=tmp_path / "jobs")
    store = JobStore(jobs.store_dir(tmp_path), jobs.ttl_s, jobs.lease_s)
    limits = RequestLimits()
    return make_api(EditService(store, [], F2FConfig(), jobs, limits, AuthArgs(required=False)), None), store  # type: ignore[arg-type]


async def _calls(app: Any, *calls: tuple[str, str, Any]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return [await client.request(method, path, json=body) for method, path, body in calls]


def test_the_route_selects_serves_and_refuses(tmp_path: Path) -> None:
    app, store = _app(tmp_path)
    done = _succeeded(store)
    waiting, _ = store.create(b"png", EditRequest(prompt="later", seeds=[1]), "fp2")
    base = f"/v1/edits/{done.id}"
    responses = asyncio.run(
        _calls(
            app,
            ("GET", f"{base}/image", None),
            ("POST", f"{base}/select", {"label": 1}),
            ("GET", f"{base}/image", None),
            ("POST", f"{base}/select", {"label": 4}),
            ("POST", f"/v1/edits/{waiting.id}/select", {"label": 1}),
            ("POST", f"/v1/edits/{'0' * 32}/select", {"label": 1}),
            ("GET", f"{base}/image", None),
        )
    )
    before, chosen, image, bad, unfinished, unknown, after = responses
    assert before.content == b"edited-png"
    assert chosen.status_code == 200 and chosen.json()["selection"]["by"] == "anonymous"
    assert chosen.json()["result"]["selected_label"] == 2  # the VLM's choice stays
    assert image.content == b"frame-4" and image.headers["content-disposition"].endswith('-frame_004.png"')
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "label"
    assert unfinished.status_code == 409 and unfinished.json()["error"]["code"] == "job_not_finished"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "job_not_found"
    assert after.content == b"frame-4"  # the bad request changed nothing
