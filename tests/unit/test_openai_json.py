"""OpenAI's JSON form of `POST /v1/images/edits` (`images: [{"image_url": ...}]`), over real HTTP handling (an ASGI
transport) and, for fetched URLs, a real HTTP server on loopback: data: URLs work; a file_id, a host off the
operator's list, a redirect off it, two images or a data: URL that is no image are typed 400s naming the field,
and no job is made."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from test_ingress_http import SAMPLE, _app, _calls

from f2f.serving.deployments.ingress_args import IngressArgs

DATA_URL = "data:image/png;base64," + base64.b64encode(SAMPLE.read_bytes()).decode()


def _post(app: Any, body: Any) -> Any:
    (response,) = _calls(app, ("POST", "/v1/images/edits"), json=body)
    return response


def test_a_data_url_edits_as_the_multipart_form_does(tmp_path: Path) -> None:
    app, _, worker = _app(tmp_path)
    response = _post(app, {"prompt": "make it snow", "images": [{"image_url": DATA_URL}], "n": 2, "output_format": "webp"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["data"]) == 2 and body["output_format"] == "webp" and len(worker.sent) == 1
    assert base64.b64decode(body["data"][0]["b64_json"])[:4] == b"RIFF"  # a WebP


@pytest.mark.parametrize(
    ("body", "param", "phrase"),
    [
        ({"images": [{"file_id": "file-abc"}]}, "images[0].file_id", "no files API"),
        ({"images": [{"image_url": "https://example.com/a.png"}]}, "images[0].image_url", "not allowed on this server"),
        ({"images": [{"image_url": "ftp://example.com/a.png"}]}, "images[0].image_url", "must be a data: URL"),
        ({"images": [{"image_url": DATA_URL}, {"image_url": DATA_URL}]}, "images", "one image per request"),
        ({"images": []}, "images", "a list of one image"),
        ({"images": [{"image_url": "data:image/png;base64,bm90IGFuIGltYWdl"}]}, "image", "image"),
        ({"images": [{"image_url": DATA_URL, "file_id": "f"}]}, "images[0]", "one of image_url or file_id"),
        ({"images": [{"image_url": DATA_URL}], "mask": {"file_id": "f"}}, "mask.file_id", "no files API"),
    ],
)
def test_bad_json_forms_are_typed_400s_naming_the_field_and_make_no_job(
    tmp_path: Path, body: dict[str, Any], param: str, phrase: str
) -> None:
    app, _, worker = _app(tmp_path)
    response = _post(app, {"prompt": "make it snow", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and phrase in error["message"] and worker.sent == []


@pytest.fixture
def image_host() -> Iterator[str]:
    """An HTTP server on 127.0.0.1: /sample.png is the sample; /away answers a redirect to another host (127.0.0.2)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/away":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.2:{self.server.server_address[1]}/sample.png")
                self.end_headers()
                return
            data = SAMPLE.read_bytes()
            self.send_response(200 if self.path == "/sample.png" else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_allowed_hosts_url_is_fetched_and_a_redirect_off_the_list_is_refused(tmp_path: Path, image_host: str) -> None:
    app, _, worker = _app(tmp_path, IngressArgs(image_url_hosts=("127.0.0.1",)))
    fetched = _post(app, {"prompt": "make it snow", "images": [{"image_url": f"{image_host}/sample.png"}]})
    assert fetched.status_code == 200, fetched.text
    for path, phrase in (("/away", "not an allowed host"), ("/missing.png", "answered 404")):
        refused = _post(app, {"prompt": "make it snow", "images": [{"image_url": f"{image_host}{path}"}]})
        assert refused.status_code == 400 and phrase in refused.json()["error"]["message"], refused.text
    assert len(worker.sent) == 1
