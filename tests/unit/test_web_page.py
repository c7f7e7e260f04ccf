"""The web page's files and routes in process (no Ray, no browser): served at `/` with a strict
Content-Security-Policy, nothing loaded from elsewhere, every control the browser tier drives present,
and the files in the package data."""

from __future__ import annotations

import asyncio
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from f2f.config import F2FConfig  # noqa: E402
from f2f.request import RequestLimits  # noqa: E402
from f2f.serving.api.auth import AuthArgs, add_key  # noqa: E402
from f2f.serving.api.routers.web import PAGES  # noqa: E402
from f2f.serving.api.service import EditService  # noqa: E402
from f2f.serving.deployments.ingress import make_api  # noqa: E402
from f2f.serving.jobs import JobStore  # noqa: E402
from f2f.serving.jobs.queue import JobsArgs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "f2f" / "serving" / "api" / "web"
CONTROLS = ["image-input", "prompt-input", "seeds-input", "steps-input", "token-input", "submit", "progress", "status"]
CONTROLS += ["error", "collage", "frame-slider", "frame-image", "use-frame", "result-image", "result-label", "download"]


def _get(tmp_path: Path, *paths: str) -> list[httpx.Response]:
    jobs = JobsArgs(dir=tmp_path / "jobs")
    store = JobStore(jobs.store_dir(tmp_path), jobs.ttl_s, jobs.lease_s)
    add_key(tmp_path / "keys.yaml", "alice")
    auth = AuthArgs(keys_file=tmp_path / "keys.yaml")  # keys on: the page stays open
    app = make_api(EditService(store, [], F2FConfig(), jobs, RequestLimits(), auth), None)  # type: ignore[arg-type]

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [await client.get(path) for path in paths]

    return asyncio.run(run())


def test_the_page_and_its_assets_are_served_open_with_a_strict_policy(tmp_path: Path) -> None:
    page, script, style = _get(tmp_path, "/", "/web/app.js", "/web/style.css")
    for response, kind in ((page, "text/html"), (script, "text/javascript"), (style, "text/css")):
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert "default-src 'self'" in response.headers["content-security-policy"]
    assert page.content == (WEB / "index.html").read_bytes()
    assert 'src="/web/app.js"' in page.text and 'href="/web/style.css"' in page.text


@pytest.mark.parametrize("path", ["/web/index.html.bak", "/web/../jobs", "/web/", "/index.html"])
def test_nothing_else_is_served(tmp_path: Path, path: str) -> None:
    (response,) = _get(tmp_path, path)
    assert response.status_code == 404 and set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_nothing_is_loaded_from_elsewhere() -> None:
    for name in PAGES:
        text = (WEB / name).read_text()
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}|@import|@font-face", text, re.IGNORECASE), name


def test_every_control_the_browser_tier_drives_is_on_the_page() -> None:
    ids = re.findall(r'data-testid="([^"]+)"', (WEB / "index.html").read_text())
    assert len(ids) == len(set(ids)) and set(CONTROLS) <= set(ids)


def test_the_web_files_are_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["f2f"]
    for name in sorted(PAGES) + sorted(p.name for p in WEB.iterdir()):
        assert any(fnmatch(f"serving/api/web/{name}", pattern) for pattern in patterns), name
