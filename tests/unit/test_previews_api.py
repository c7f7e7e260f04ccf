"""Previews through the API in process (no Ray): the job's `preview` events and `/preview` route, and OpenAI's
streamed `POST /v1/images/edits` (`stream`, `partial_images`) read by the official OpenAI SDK over an ASGI transport:
partial images from the job's previews then the completed edit, only the edit with `partial_images` 0, a failed job
as an `error` event the SDK raises, bad stream fields as typed 400s with no job made.

The jobs are run by a worker on a thread that records two previews, as the edit worker does, then finishes the job.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from test_ingress_http import SAMPLE, USAGE, _run_job  # noqa: E402

from f2f.config import F2FConfig  # noqa: E402
from f2f.request import RequestLimits  # noqa: E402
from f2f.serving.api.auth import AuthArgs  # noqa: E402
from f2f.serving.api.service import EditService  # noqa: E402
from f2f.serving.api.wire import JobError, JobPreview  # noqa: E402
from f2f.serving.deployments.ingress import make_api  # noqa: E402
from f2f.serving.jobs import JobStore, Lease, StoreUnavailable  # noqa: E402
from f2f.serving.jobs.queue import JobsArgs  # noqa: E402
from f2f.serving.jobs.record import PREVIEW  # noqa: E402

GAP_S = 0.5  # between a job's previews: ten polls of the stream
PREVIEW_SIZE = (32, 24)


class PreviewingWorker:
    """The queue's producer side: each job runs on a thread, records previews after steps 2 and 3 of 4 if it asked
    for them (as the edit worker records them), then succeeds (or fails, with `fails`)."""

    def __init__(self, store: JobStore, fails: bool = False) -> None:
        self.store, self.fails = store, fails
        self.sent: list[str] = []
        self.threads: list[threading.Thread] = []

    def send(self, job_id: str) -> None:
        self.sent.append(job_id)
        self.threads.append(threading.Thread(target=self._run, args=(job_id,)))
        self.threads[-1].start()

    def _run(self, job_id: str) -> None:
        asked = self.store.get(job_id).request.previews
        for count, step in enumerate((2, 3) if asked else (), start=1):
            buffer = io.BytesIO()
            Image.new("RGB", PREVIEW_SIZE, (60 * step, 0, 0)).save(buffer, format="PNG")
            self.store.objects.put(self.store.key(job_id, PREVIEW), buffer.getvalue(), "image/png")
            preview = JobPreview(step=step, total=4, count=count)
            self.store.update(job_id, lambda record, preview=preview: setattr(record, "preview", preview))
            time.sleep(GAP_S)
        if not self.fails:
            _run_job(self.store, job_id)
            return
        claimed = self.store.claim(job_id, "w1")
        assert claimed is not None
        error = JobError(message="the video did not fit in cpu memory", code="generator_out_of_memory")
        self.store.finish(Lease.of(claimed), "failed", error)


def _service(tmp_path: Path, fails: bool = False) -> tuple[EditService, PreviewingWorker]:
    jobs = JobsArgs(dir=tmp_path / "jobs", poll_interval_s=0.05)
    store = JobStore(jobs.store_dir(tmp_path), jobs.ttl_s, jobs.lease_s)
    worker = PreviewingWorker(store, fails)
    return EditService(store, worker, F2FConfig(), jobs, RequestLimits(), AuthArgs(required=False)), worker


def _app(tmp_path: Path, fails: bool = False) -> tuple[Any, PreviewingWorker]:
    service, worker = _service(tmp_path, fails)
    return make_api(service, None), worker  # type: ignore[arg-type]


def _stream(app: Any, **asked: Any) -> list[Any]:
    """Every event of a streamed edit, as the official SDK yields them."""

    async def run() -> list[Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1/v1", timeout=60) as http:
            client = openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="unused", http_client=http, max_retries=0)
            stream = await client.images.edit(image=SAMPLE.read_bytes(), prompt="make the sun set", stream=True, **asked)
            return [event async for event in stream]

    return asyncio.run(run())


def _decoded(b64_json: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64_json)))


def test_partial_images_are_the_previews_then_the_edit_completes(tmp_path: Path) -> None:
    app, worker = _app(tmp_path)
    events = _stream(app, partial_images=2, output_format="webp")
    partials, completed = events[:-1], events[-1]
    assert [event.type for event in partials] == ["image_edit.partial_image"] * 2  # past 1/3 and 2/3 of the steps
    assert [event.partial_image_index for event in partials] == [0, 1]
    # Steps 2 then 3 (red 120, 180). WebP is lossy: its YUV 4:2:0 conversion moves a flat colour by a few levels
    # (libwebp's integer arithmetic, the same on every CPU); 4 levels keeps the two previews 60 apart told apart.
    assert [_decoded(event.b64_json).getpixel((0, 0))[0] for event in partials] == pytest.approx([120, 180], abs=4)
    for event in partials:
        assert _decoded(event.b64_json).format == "WEBP" and event.size == "32x24"
        assert (event.output_format, event.quality, event.background) == ("webp", "auto", "opaque")
    assert completed.type == "image_edit.completed" and completed.output_format == "webp"
    assert _decoded(completed.b64_json).format == "WEBP" and completed.size == "64x48"
    assert isinstance(completed.created_at, int) and len(worker.sent) == 1
    assert completed.usage.model_dump() == USAGE.as_json()  # the job result's, as the unstreamed response has it


def test_without_partial_images_only_the_edit_is_sent(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    events = _stream(app, partial_images=0)
    assert [event.type for event in events] == ["image_edit.completed"]
    assert _decoded(events[0].b64_json).size == (64, 48)


def test_one_partial_image_is_the_first_preview_past_half_the_steps(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    events = _stream(app, partial_images=1)
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert _decoded(events[0].b64_json).getpixel((0, 0))[0] == 120  # step 2 of 4, and never another


def test_a_job_that_fails_mid_stream_is_an_error_event(tmp_path: Path) -> None:
    app, _ = _app(tmp_path, fails=True)
    with pytest.raises(openai.APIError) as raised:
        _stream(app, partial_images=2)
    body = raised.value.body
    assert body["code"] == "generator_out_of_memory" and set(body) == {"message", "type", "param", "code"}
    assert "did not fit" in body["message"]


def _post(app: Any, fields: dict[str, str]) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            files = {"image": ("source.png", SAMPLE.read_bytes(), "image/png")}
            return await client.post("/v1/images/edits", data={"prompt": "make it red", **fields}, files=files)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stream": "maybe"}, "stream"),
        ({"stream": "1"}, "stream"),
        ({"stream": "true", "partial_images": "4"}, "partial_images"),
        ({"stream": "true", "partial_images": "two"}, "partial_images"),
        ({"stream": "true", "n": "2"}, "n"),
        ({"stream": "true", "response_format": "url"}, "response_format"),
    ],
)
def test_bad_stream_fields_are_typed_400s_and_no_job_is_made(tmp_path: Path, fields: dict[str, str], param: str) -> None:
    app, worker = _app(tmp_path)
    response = _post(app, fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error") and error["message"].startswith(param)
    assert worker.sent == []


def test_the_json_form_streams_too(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    image = "data:image/png;base64," + base64.b64encode(SAMPLE.read_bytes()).decode()
    body = {"prompt": "make it red", "images": [{"image_url": image}], "stream": True, "partial_images": 0}

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.post("/v1/images/edits", json=body, timeout=60)

    response = asyncio.run(run())
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("event: image_edit.completed\ndata: {")


def _get(app: Any, *paths: str) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [await client.get(path, timeout=60) for path in paths]

    return asyncio.run(run())


def _submit(app: Any, fields: dict[str, str]) -> dict[str, Any]:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            files = {"image": ("source.png", SAMPLE.read_bytes(), "image/png")}
            return await client.post("/v1/edits", data={"prompt": "make it red", **fields}, files=files)

    response = asyncio.run(run())
    assert response.status_code == 202, response.text
    return response.json()


def test_a_jobs_previews_are_events_with_a_url_and_the_latest_is_served(tmp_path: Path) -> None:
    app, worker = _app(tmp_path)
    job = _submit(app, {"previews": "true"})
    (stream,) = _get(app, f"/v1/edits/{job['id']}/events")
    events = [block.split("\n") for block in stream.text.strip().split("\n\n")]
    previews = [json.loads(data.removeprefix("data: ")) for name, data in events if name == "event: preview"]
    assert [(p["step"], p["count"], p["approximate"]) for p in previews] == [(2, 1, True), (3, 2, True)]
    assert [p["url"] for p in previews] == [f"/v1/edits/{job['id']}/preview?n={n}" for n in (1, 2)]
    assert events[-1][0] == "event: done" and json.loads(events[-1][1].removeprefix("data: "))["preview"]["count"] == 2
    for thread in worker.threads:
        thread.join()
    (latest,) = _get(app, previews[-1]["url"])
    assert latest.status_code == 200 and latest.headers["cache-control"] == "no-store"
    assert Image.open(io.BytesIO(latest.content)).getpixel((0, 0)) == (180, 0, 0)  # step 3's

    plain = _submit(app, {})
    (stream,) = _get(app, f"/v1/edits/{plain['id']}/events")
    assert "event: preview" not in stream.text
    (missing,) = _get(app, f"/v1/edits/{plain['id']}/preview")
    error = missing.json()["error"]
    assert missing.status_code == 404 and error["code"] == "no_such_output" and "previews=true" in error["message"]


def test_both_streams_wait_through_store_errors_and_miss_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """The store cannot be read for three waits in a row (a volume or Redis away for a moment): the job goes on, and
    the job's event stream and OpenAI's stream go on with it, each preview and the end still sent."""
    service, worker = _service(tmp_path)
    changed, calls = service.changed, [0]

    async def flaky(record: Any) -> Any:
        calls[0] += 1
        if 2 <= calls[0] <= 4:
            await asyncio.sleep(GAP_S / 5)
            raise StoreUnavailable("the job store's volume is away")
        return await changed(record)

    monkeypatch.setattr(service, "changed", flaky)
    app = make_api(service, None)  # type: ignore[arg-type]
    job = _submit(app, {"previews": "true"})
    (stream,) = _get(app, f"/v1/edits/{job['id']}/events")
    names = [block.split("\n")[0] for block in stream.text.strip().split("\n\n")]
    assert names.count("event: preview") == 2 and names[-1] == "event: done", stream.text
    assert calls[0] > 4 and "its event stream waits through a store error" in caplog.text

    calls[0] = 0
    events = _stream(app, partial_images=2)
    assert [event.type for event in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    assert calls[0] > 4 and "its OpenAI stream waits through a store error" in caplog.text
    assert len(worker.sent) == 2
