"""`/docs` in Chromium under its Content-Security-Policy: Swagger UI renders this server's API from this server's own
files, the browser reports no refused load, and every request the page makes goes to this origin.

No Ray: the ingress's FastAPI app (`make_api`, `docs: true`) over a job store, served by uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi_offline", reason="the docs extra (pip install 'f2f[docs]'); tools/setup-venv.sh installs it")
uvicorn = pytest.importorskip("uvicorn")

from f2f.config import F2FConfig  # noqa: E402
from f2f.request import RequestLimits  # noqa: E402
from f2f.serving.api.auth import AuthArgs  # noqa: E402
from f2f.serving.api.service import EditService  # noqa: E402
from f2f.serving.deployments.ingress import make_api  # noqa: E402
from f2f.serving.deployments.ingress_args import IngressArgs  # noqa: E402
from f2f.serving.jobs import JobStore  # noqa: E402
from f2f.serving.jobs.queue import JobsArgs  # noqa: E402


@pytest.fixture(scope="module")
def docs_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("docs")
    jobs = JobsArgs(dir=folder / "jobs")
    store = JobStore(jobs.store_dir(folder), jobs.ttl_s, jobs.lease_s)
    service = EditService(store, [], F2FConfig(), jobs, RequestLimits(), AuthArgs(required=False), http=IngressArgs(docs=True))
    app = make_api(service, None)  # type: ignore[arg-type]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_swagger_ui_renders_from_this_origin_only(browser: Any, docs_url: str) -> None:
    page = browser.new_page()
    messages: list[str] = []
    requests: list[str] = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(f"{docs_url}/docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
        assert page.inner_text(".swagger-ui .info .title").startswith("f2f")
        assert page.locator(".swagger-ui .opblock").count() >= 10  # every route of the API, e.g. /v1/edits
    finally:
        page.close()
    assert messages == []  # a load the policy refused is reported on the console
    assert requests and all(url.startswith(f"{docs_url}/") for url in requests), requests
