"""The HTTP client (`f2f.client`, behind `f2f submit` and `f2f jobs`) against two real servers on loopback: a
download redirected to another host (a presigned URL of the bucket) is followed without the API key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from f2f.client import Client

JOB = "0123456789abcdef0123456789abcdef"


class _Recorder(BaseHTTPRequestHandler):
    """Answers every GET with `answer(path)` -> (status, headers, body), and records the request's headers."""

    seen: list[tuple[str, dict[str, str]]]
    answer: Any

    def do_GET(self) -> None:
        self.seen.append((self.path, dict(self.headers)))
        status, headers, body = self.answer(self.path)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def _serve(host: str, answer: Any) -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    seen: list[tuple[str, dict[str, str]]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen, "answer": staticmethod(answer)})
    server = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def bucket() -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """Another host (another loopback address): the bytes, to any GET."""
    yield from _serve("127.0.0.2", lambda path: (200, {"Content-Type": "image/png"}, b"the edit"))


def test_a_redirected_download_is_followed_without_the_api_key(bucket: tuple[str, list[Any]]) -> None:
    bucket_url, bucket_seen = bucket
    signed = f"{bucket_url}/f2f/edits/{JOB}/edited.png?X-Amz-Signature=abc"
    service = _serve("127.0.0.1", lambda path: (307, {"Location": signed}, b""))
    service_url, service_seen = next(service)
    try:
        data = Client(service_url, api_key="f2f-secret")._request("GET", f"/v1/edits/{JOB}/image")
    finally:
        service.close()
    assert data == b"the edit"
    assert service_seen[0][1]["Authorization"] == "Bearer f2f-secret"  # the service gets the key
    ((path, headers),) = bucket_seen
    assert path.startswith(f"/f2f/edits/{JOB}/edited.png?") and "Authorization" not in headers  # the bucket never does
