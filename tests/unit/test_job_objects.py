"""The job API over a bucket (`jobs.objects: s3://...`, an S3-protocol server on loopback): sources go to the bucket,
outputs come from it streamed through the ingress or by a redirect to a presigned URL (`jobs.downloads`), only to
the job's own key; an object store that cannot be reached is a typed 503 with Retry-After, and a wrong location is
one error at start naming the field."""

from __future__ import annotations

import asyncio
import io
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from redis_server import free_port
from succeeded_jobs import job_result, run_job

from f2f.config import F2FConfig
from f2f.errors import InvalidConfig
from f2f.request import RequestLimits
from f2f.serving.api.auth import AuthArgs, add_key
from f2f.serving.api.service import EditService
from f2f.serving.deployments.ingress import make_api
from f2f.serving.jobs import StoreBase, check_store, open_store
from f2f.serving.jobs.queue import JobsArgs

CANDIDATES = [4, 8]


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buffer, format="PNG")
    return buffer.getvalue()


class Queue:
    """The queue's producer side: each job sent is run at once, as an edit worker leaves it."""

    def __init__(self) -> None:
        self.store: StoreBase | None = None

    def send(self, job_id: str) -> None:
        assert self.store is not None
        outputs = {"edited.png": _png((250, 0, 0)), "collage.png": _png((1, 2, 3))}
        outputs |= {f"candidates/frame_{frame:03d}.png": _png((0, 0, frame * 30)) for frame in CANDIDATES}
        run_job(self.store, job_id, outputs, job_result(job_id, CANDIDATES, (64, 48), selected_label=1))


def _api(tmp_path: Path, endpoint: str, downloads: str = "stream") -> tuple[Any, StoreBase, dict[str, dict[str, str]]]:
    keys = tmp_path / "keys.yaml"
    headers = {name: {"Authorization": f"Bearer {add_key(keys, name)}"} for name in ("alice", "bob")}
    jobs = JobsArgs(
        dir=tmp_path / "scratch",
        objects="s3://f2f/edits",
        objects_endpoint_url=endpoint,
        downloads=downloads,  # type: ignore[arg-type]
        poll_interval_s=0.05,
    )
    store, queue = open_store(jobs, tmp_path), Queue()
    queue.store = store
    service = EditService(store, queue, F2FConfig(), jobs, RequestLimits(), AuthArgs(keys_file=keys))
    return make_api(service, None), store, headers  # type: ignore[arg-type]


def _calls(app: Any, *calls: tuple[str, str, dict[str, str]], **kwargs: Any) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [await client.request(method, path, headers=h, timeout=60, **kwargs) for method, path, h in calls]

    return asyncio.run(run())


def _submit(app: Any, headers: dict[str, str]) -> httpx.Response:
    files = {"image": ("photo.png", _png((9, 9, 9)), "image/png")}
    (response,) = _calls(app, ("POST", "/v1/edits", headers), files=files, data={"prompt": "make the sun set"})
    return response


def test_sources_and_outputs_live_in_the_bucket_and_stream_through_the_ingress(tmp_path: Path, s3_bucket: str) -> None:
    app, store, headers = _api(tmp_path, s3_bucket)
    job = _submit(app, headers["alice"]).json()
    assert store.objects.exists(f"{job['id']}/source.png")
    base = f"/v1/edits/{job['id']}"
    image, collage, frame, webp = _calls(
        app,
        ("GET", f"{base}/image", headers["alice"]),
        ("GET", f"{base}/collage", headers["alice"]),
        ("GET", f"{base}/frames/2", headers["alice"]),
        ("GET", f"{base}/image?output_format=webp&size=32x24", headers["alice"]),
    )
    assert [r.status_code for r in (image, collage, frame, webp)] == [200] * 4
    assert image.content == _png((250, 0, 0)) and collage.content == _png((1, 2, 3)) and frame.content == _png((0, 0, 240))
    assert image.headers["content-disposition"] == f'attachment; filename="{job["id"]}-edited.png"'
    assert Image.open(io.BytesIO(webp.content)).size == (32, 24) and webp.headers["content-type"] == "image/webp"
    assert not [p for p in (tmp_path / "scratch").rglob("*.png")]  # records only (a file store here): no image on disk


def test_a_redirect_download_is_a_presigned_url_of_the_jobs_own_object(tmp_path: Path, s3_bucket: str) -> None:
    app, _, headers = _api(tmp_path, s3_bucket, downloads="redirect")
    job = _submit(app, headers["alice"]).json()
    base = f"/v1/edits/{job['id']}"
    image, converted, video, bobs = _calls(
        app,
        ("GET", f"{base}/image", headers["alice"]),
        ("GET", f"{base}/image?output_format=jpeg", headers["alice"]),
        ("GET", f"{base}/video", headers["alice"]),
        ("GET", f"{base}/image", headers["bob"]),
    )
    assert image.status_code == converted.status_code == 307
    with urllib.request.urlopen(image.headers["location"], timeout=10) as fetched:  # no credentials: the URL is signed
        assert fetched.read() == _png((250, 0, 0))
        assert fetched.headers["Content-Disposition"] == f'attachment; filename="{job["id"]}-edited.png"'
    with urllib.request.urlopen(converted.headers["location"], timeout=10) as fetched:
        assert Image.open(io.BytesIO(fetched.read())).format == "JPEG"
    assert video.status_code == 404 and video.json()["error"]["code"] == "no_such_output"  # none kept: no redirect
    assert bobs.status_code == 404 and "location" not in bobs.headers  # another key's job stays unknown


def test_an_unreachable_object_store_is_a_typed_503_and_leaves_no_job(tmp_path: Path, s3_endpoint: str) -> None:
    app, store, headers = _api(tmp_path, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    response = _submit(app, headers["alice"])
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "object_store_unavailable" and int(response.headers["retry-after"]) > 0
    assert store.list_for("alice")[0] == [] and store.queue_stats()[0] == 0


def test_redirect_downloads_need_a_bucket() -> None:
    from f2f.serving.app import parse_args

    with pytest.raises(InvalidConfig) as info:
        parse_args({"jobs": {"downloads": "redirect"}, "auth": {"required": False}})
    assert (info.value.field, info.value.value) == ("args.jobs.downloads", "redirect") and "s3://bucket/prefix" in info.value.rule


@pytest.mark.parametrize(
    ("objects", "rule"),
    [("s3://no-such-bucket/x", "the bucket does not answer"), ("ftp://host/x", "must be a folder (file:///path) or a bucket")],
)
def test_a_wrong_object_store_is_one_line_at_start_naming_the_field(s3_bucket: str, objects: str, rule: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        check_store(JobsArgs(objects=objects, objects_endpoint_url=s3_bucket))
    assert (info.value.field, info.value.value) == ("jobs.objects", objects) and rule in info.value.rule
    assert "\n" not in str(info.value)


def test_the_start_check_puts_the_expiry_rule_on_the_buckets_prefix(tmp_path: Path, s3_bucket: str) -> None:
    jobs = JobsArgs(objects="s3://f2f/edits", objects_endpoint_url=s3_bucket, ttl_s=2 * 86400)
    check_store(jobs)
    store = open_store(jobs, tmp_path)
    rules = store.objects.client.get_bucket_lifecycle_configuration(Bucket="f2f")["Rules"]  # type: ignore[attr-defined]
    assert [(r["Filter"]["Prefix"], r["Expiration"]["Days"]) for r in rules] == [("edits/", 2)]
