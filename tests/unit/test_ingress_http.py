"""The ingress's HTTP args in process (no Ray): links under the configured public base URL and never the request's
`Host`, `/docs` off or served from this server's own files under a strict policy, and resized outputs made once
per job, stored file, size and format, within `max_output_pixels`.

A succeeded job is made here as the worker leaves one: its record with a result, and real PNG outputs.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from succeeded_jobs import job_result, run_job  # noqa: E402

from f2f.config import F2FConfig  # noqa: E402
from f2f.errors import InvalidConfig  # noqa: E402
from f2f.protocols import TokenUsage  # noqa: E402
from f2f.request import RequestLimits  # noqa: E402
from f2f.serving.api import outputs  # noqa: E402
from f2f.serving.api.auth import AuthArgs  # noqa: E402
from f2f.serving.api.service import EditService  # noqa: E402
from f2f.serving.api.wire import JobResult, RankingView  # noqa: E402
from f2f.serving.app import parse_args  # noqa: E402
from f2f.serving.deployments.ingress import make_api  # noqa: E402
from f2f.serving.deployments.ingress_args import IngressArgs  # noqa: E402
from f2f.serving.jobs import EditRequest, JobRecord, JobStore  # noqa: E402
from f2f.serving.jobs.queue import JobsArgs  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "f2f" / "data" / "sample.png"
SOURCE_SIZE = (64, 48)  # the sample photo's aspect ratio (640x480), as the OpenAI route checks it
CANDIDATES = [4, 8]
BASE = "https://f2f.example.com/api"
USAGE = TokenUsage(1200, 19, 950)  # the edit's VLM tokens, as the worker records them


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", SOURCE_SIZE, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _result(job_id: str) -> JobResult:
    ranking = RankingView(rule="vlm", order=[1, 2], answers=[], orders_asked=[])
    return job_result(job_id, CANDIDATES, SOURCE_SIZE, selected_label=1, ranking=ranking, usage=USAGE.as_json())


def _run_job(store: JobStore, job_id: str) -> JobRecord:
    """What an edit worker leaves: the edit, the second seed's edit, the candidate frames, the record succeeded."""
    frames = {f"candidates/frame_{frame:03d}.png": _png((0, 0, frame * 30)) for frame in CANDIDATES}
    outputs = {"edited.png": _png((250, 0, 0)), "ranked/2.png": _png((0, 250, 0)), **frames}
    return run_job(store, job_id, outputs, _result(job_id))


class InstantWorker:
    """The queue's producer side, whose every job is run at once, as `_run_job` leaves it."""

    def __init__(self) -> None:
        self.store: JobStore | None = None
        self.sent: list[str] = []

    def send(self, job_id: str) -> None:
        self.sent.append(job_id)
        assert self.store is not None
        _run_job(self.store, job_id)


def _app(tmp_path: Path, http: IngressArgs | None = None) -> tuple[Any, JobStore, InstantWorker]:
    jobs = JobsArgs(dir=tmp_path / "jobs", poll_interval_s=0.05)
    store = JobStore(jobs.store_dir(tmp_path), jobs.ttl_s, jobs.lease_s)
    worker = InstantWorker()
    worker.store = store
    service = EditService(store, worker, F2FConfig(), jobs, RequestLimits(), AuthArgs(required=False), http=http)
    return make_api(service, None), store, worker  # type: ignore[arg-type]


def _calls(app: Any, *calls: tuple[str, str], **kwargs: Any) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [await client.request(method, path, timeout=60, **kwargs) for method, path in calls]

    return asyncio.run(run())


def _succeeded(store: JobStore) -> JobRecord:
    record, _ = store.create(_png((9, 9, 9)), EditRequest(prompt="make the sun set", seeds=[1, 2]), "fp")
    return _run_job(store, record.id)


def _parse(**args: Any) -> Any:
    return parse_args({"auth": {"required": False}, **args})


# --- public_base_url --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://f2f.example.com", "https://f2f.example.com"),
        ("https://f2f.example.com/", "https://f2f.example.com"),
        ("http://10.0.0.5:8000/f2f//", "http://10.0.0.5:8000/f2f"),
    ],
)
def test_a_public_base_url_is_kept_without_its_trailing_slashes(given: str, kept: str) -> None:
    args, _ = _parse(public_base_url=given)
    assert args.public_base_url == kept and IngressArgs.of(args).public_base_url == kept


@pytest.mark.parametrize(
    ("given", "phrase"),
    [
        ("f2f.example.com", "must be an http:// or https:// URL with a host"),
        ("ftp://f2f.example.com", "must be an http:// or https:// URL with a host"),
        ("https://", "must be an http:// or https:// URL with a host"),
        ("https://f2f.example.com:99999", "must be an http:// or https:// URL with a host"),
        ("https://f2f.example.com/?a=1", "no user, query (?), fragment (#)"),
        ("https://f2f.example.com/#top", "no user, query (?), fragment (#)"),
        ("https://me:secret@f2f.example.com", "no user, query (?), fragment (#)"),
        ("https://f2f.example.com/a b", "no user, query (?), fragment (#)"),
    ],
)
def test_a_bad_public_base_url_is_refused_naming_it(given: str, phrase: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        _parse(public_base_url=given)
    assert info.value.field == "args.public_base_url" and info.value.value == given and phrase in info.value.rule


def _edit(app: Any, **fields: str) -> httpx.Response:
    files = {"image": ("photo.png", SAMPLE.read_bytes(), "image/png")}
    data = {"prompt": "make it snow", "n": "2", **fields}
    (response,) = _calls(app, ("POST", "/v1/images/edits"), files=files, data=data, headers={"Host": "evil.example"})
    return response


def test_url_responses_without_a_public_base_url_are_refused_before_any_job(tmp_path: Path) -> None:
    app, _, worker = _app(tmp_path)
    response = _edit(app, response_format="url")
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "response_format"
    assert "public_base_url" in error["message"] and "b64_json" in error["message"]
    assert worker.sent == []  # no job was made


def test_url_responses_are_under_the_public_base_url_never_the_host_header(tmp_path: Path) -> None:
    app, _, _ = _app(tmp_path, IngressArgs(public_base_url=BASE))
    response = _edit(app, response_format="url", output_format="webp", output_compression="70", size="32x24")
    assert response.status_code == 200, response.text
    assert "evil.example" not in response.text
    urls = [item["url"] for item in response.json()["data"]]
    job_id = response.json()["f2f"]["id"]
    for rank, url in enumerate(urls, start=1):
        want = f"{BASE}/v1/edits/{job_id}/image?output_format=webp&rank={rank}&output_compression=70&size=32x24"
        assert url == want
    (image,) = _calls(app, ("GET", urls[1].removeprefix(BASE)))  # the URL serves what it names
    assert image.headers["content-type"] == "image/webp" and Image.open(io.BytesIO(image.content)).size == (32, 24)


def test_b64_responses_are_unchanged_without_a_public_base_url(tmp_path: Path) -> None:
    app, _, _ = _app(tmp_path)
    response = _edit(app)
    assert response.status_code == 200 and "evil.example" not in response.text
    first = base64.b64decode(response.json()["data"][0]["b64_json"])
    assert Image.open(io.BytesIO(first)).getpixel((0, 0)) == (250, 0, 0)
    assert response.json()["usage"] == USAGE.as_json()  # OpenAI's usage: the job result's


# --- /docs --------------------------------------------------------------------------------------------


class _Links(HTMLParser):
    """Every URL an HTML page names (src, href, action, ...), and the text of its inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._tag: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        self.urls += [value or "" for name, value in attrs if name in ("src", "href", "action", "data", "poster", "srcset")]

    def handle_data(self, data: str) -> None:
        if self._tag in ("script", "style") and data.strip():
            self.inline.append(data)


def _external(page: str) -> list[str]:
    links = _Links()
    links.feed(page)
    found = [url for url in links.urls if re.match(r"^\s*([a-z][a-z0-9+.-]*:)?//", url, re.IGNORECASE)]
    found += [url for url in links.urls if re.match(r"^\s*(https?|ftp|ws|wss):", url, re.IGNORECASE)]
    return found + [f"inline: {text[:40]}" for text in links.inline]


def _no_external_origin(policy: str) -> None:
    directives = dict([*part.split(), ""][:2] for part in policy.split(";") if part.strip())
    assert directives["default-src"] == "'self'" and "frame-ancestors" in directives
    for part in policy.split(";"):
        for source in part.split()[1:]:
            assert source in ("'self'", "'none'", "blob:", "data:"), f"{source} in {policy}"


def test_docs_are_off_by_default_and_the_schema_stays(tmp_path: Path) -> None:
    app, _, _ = _app(tmp_path)
    docs, redoc, schema, page = _calls(app, ("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json"), ("GET", "/"))
    assert docs.status_code == 404 and redoc.status_code == 404
    assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.")
    assert page.headers["content-type"].startswith("text/html") and _external(page.text) == []
    _no_external_origin(page.headers["content-security-policy"])


def test_docs_are_served_from_local_files_under_a_policy_of_this_origin_only(tmp_path: Path) -> None:
    pytest.importorskip("fastapi_offline", reason="the docs extra (pip install 'f2f[docs]')")
    app, _, _ = _app(tmp_path, IngressArgs(docs=True))
    paths = ["/docs", "/docs/init.js", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/openapi.json", "/redoc"]
    page, init, bundle, style, schema, redoc = _calls(app, *[("GET", path) for path in paths])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert _external(page.text) == []
    for response in (page, init, bundle, style):
        assert response.status_code == 200
        _no_external_origin(response.headers["content-security-policy"])
    assert "SwaggerUIBundle" in bundle.text and "swagger-ui" in style.text
    assert "validatorUrl: null" in init.text and not re.search(r"https?:", init.text)
    assert schema.status_code == 200 and redoc.status_code == 404


def test_every_html_route_carries_the_policy(tmp_path: Path) -> None:
    """Whatever GET route answers HTML, now or later, says where the browser may load from: this origin only."""
    pytest.importorskip("fastapi_offline", reason="the docs extra (pip install 'f2f[docs]')")
    app, _, _ = _app(tmp_path, IngressArgs(docs=True))
    paths = [route.path for route in app.routes if "GET" in getattr(route, "methods", ()) and "{" not in route.path]
    html = [
        (path, r)
        for path, r in zip(paths, _calls(app, *[("GET", p) for p in paths]), strict=True)
        if "html" in r.headers["content-type"]
    ]
    assert {path for path, _ in html} == {"/", "/docs"}
    for path, response in html:
        _no_external_origin(response.headers["content-security-policy"])
        assert _external(response.text) == [], path


def test_docs_without_the_extra_are_refused_naming_docs_and_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi_offline" else real(name, *a))
    with pytest.raises(InvalidConfig) as info:
        _parse(docs=True)
    assert info.value.field == "args.docs" and "pip install 'f2f[docs]'" in info.value.rule


# --- outputs: cached per job, stored file, size and format; bounded -------------------------------------


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every call of the encoder (`outputs.encode`), which still runs."""
    calls: list[tuple[Any, ...]] = []
    real = outputs.encode

    def counted(*args: Any) -> bytes:
        calls.append(args[1:])
        return real(*args)

    monkeypatch.setattr(outputs, "encode", counted)
    return calls


def test_a_conversion_is_made_once_and_then_served_from_its_file(tmp_path: Path, encodes: list[Any]) -> None:
    app, store, _ = _app(tmp_path)
    job = _succeeded(store)
    image = f"/v1/edits/{job.id}/image"
    asks = [
        f"{image}?size=32x24&output_format=jpeg",
        f"{image}?size=32x24&output_format=jpeg",
        f"{image}?size=32x24&output_format=webp",
        f"{image}?size=32x24&output_format=jpeg&output_compression=20",
        f"{image}?size=128x96&output_format=jpeg",
        f"{image}?size=32x24&output_format=jpeg&rank=2",
        f"{image}?size=32x24&output_format=jpeg&rank=2",
        f"{image}",
    ]
    responses = _calls(app, *[("GET", path) for path in asks])
    assert [r.status_code for r in responses] == [200] * len(asks)
    first, again, webp, _, large, rank2, rank2_again, stored = responses
    assert again.content == first.content and rank2_again.content == rank2.content
    assert len(encodes) == 5  # two repeats served from the cache, the stored PNG as it is
    assert first.headers["content-type"] == "image/jpeg" and webp.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(large.content)).size == (128, 96)
    assert Image.open(io.BytesIO(rank2.content)).getpixel((10, 10))[1] > 200  # the second seed's edit
    assert first.headers["content-disposition"] == f'attachment; filename="{job.id}-edited.jpeg"'
    assert stored.content == store.objects.get(store.output_key(job, "edited.png") or "")
    files = sorted(key.rpartition("/")[2] for key in store.objects.keys(store.key(job.id, "cache")))
    assert files == [
        "edited-128x96-jpeg-d.jpeg",
        "edited-32x24-jpeg-20.jpeg",
        "edited-32x24-jpeg-d.jpeg",
        "edited-32x24-webp-d.webp",
        "ranked_2-32x24-jpeg-d.jpeg",
    ]


def test_a_new_selection_is_not_answered_from_the_old_ones_cache(tmp_path: Path, encodes: list[Any]) -> None:
    app, store, _ = _app(tmp_path)
    job = _succeeded(store)
    ask = ("GET", f"/v1/edits/{job.id}/image?size=32x24&output_format=png")
    before, _, after = _calls(app, ask, ("POST", f"/v1/edits/{job.id}/select"), ask, json={"label": 2})
    colors = [Image.open(io.BytesIO(r.content)).getpixel((10, 10)) for r in (before, after)]
    assert colors[0] == (250, 0, 0) and colors[1] == (0, 0, 240) and len(encodes) == 2


def test_a_resize_over_max_output_pixels_is_a_400_naming_size_the_value_and_the_limit(tmp_path: Path) -> None:
    app, store, _ = _app(tmp_path, IngressArgs(max_output_pixels=64 * 48))
    job = _succeeded(store)
    image = f"/v1/edits/{job.id}/image"
    over, at, auto = _calls(app, ("GET", f"{image}?size=128x96"), ("GET", f"{image}?size=64x48"), ("GET", f"{image}?size=auto"))
    error = over.json()["error"]
    assert over.status_code == 400 and error["param"] == "size"
    assert (
        "128x96" in error["message"]
        and "3,072" in error["message"]
        and "12,288" in error["message"]
        and "max_output_pixels" in error["message"]
    )
    assert at.status_code == 200 and auto.status_code == 200


def test_the_openai_route_refuses_a_size_over_the_bound_before_any_job(tmp_path: Path) -> None:
    app, _, worker = _app(tmp_path, IngressArgs(max_output_pixels=100_000))
    width, height = Image.open(SAMPLE).size
    size = f"{width * 2}x{height * 2}"
    response = _edit(app, size=size)
    assert response.status_code == 400 and response.json()["error"]["param"] == "size" and worker.sent == []
    assert "max_output_pixels" in response.json()["error"]["message"]


def test_max_output_pixels_defaults_to_16_mp_and_is_an_app_arg() -> None:
    assert _parse()[0].max_output_pixels == 4096 * 4096
    assert IngressArgs.of(_parse(max_output_pixels=1_000_000)[0]).max_output_pixels == 1_000_000
    with pytest.raises(InvalidConfig) as info:
        _parse(max_output_pixels=10)
    assert info.value.field == "args.max_output_pixels"
