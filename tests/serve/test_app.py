"""The f2f Serve application end to end: real Ray Serve on CPU, real HTTP on 127.0.0.1, the tiny profile.

One Ray cluster and one Serve application for the whole module (starting them
takes seconds; two clusters at once would not fit two cores).
"""

from __future__ import annotations

import base64
import io
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
httpx = pytest.importorskip("httpx")

from PIL import Image  # noqa: E402

from f2f.errors import InvalidConfig  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "f2f" / "data" / "sample.png"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
ERROR_KEYS = {"message", "type", "param", "code"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The application at http://127.0.0.1:<port>, on a Ray started with the loopback settings."""
    cache_dir = tmp_path_factory.mktemp("f2f-cache")
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket paths must stay short
    port = _free_port()
    with pytest.MonkeyPatch.context() as env:
        for key, value in LOOPBACK_ENV.items():
            env.setenv(key, value)
        import ray
        from ray import serve

        from f2f.serving.app import build_app

        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, _temp_dir=ray_tmp)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            started = time.perf_counter()
            serve.run(build_app({"config": {"profile": "tiny", "cache_dir": str(cache_dir), "seed": 3}}), name="f2f")
            print(f"\nserve.run (tiny checkpoints built, replicas loaded): {time.perf_counter() - started:.1f} s")
            yield f"http://127.0.0.1:{port}"
        finally:
            serve.shutdown()
            ray.shutdown()
            shutil.rmtree(ray_tmp, ignore_errors=True)


def _post_edit(base_url: str, data: dict, image: bytes | None = None) -> httpx.Response:
    files = {"image": ("source.png", image if image is not None else SAMPLE.read_bytes(), "image/png")}
    return httpx.post(f"{base_url}/v1/images/edits", data=data, files=files, timeout=120)


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert "Traceback" not in body["error"]["message"]
    return body["error"]


# --- the builder, without Ray -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"vlm_num_cpus": 0}, "args.vlm_num_cpus"),
        ({"replicas": 2}, "args.replicas"),
        ({"config": {"video": {"num_frames": 50}}}, "config.video.num_frames"),
        ({"config": {"vlm": {"backend": "nope"}}}, "config.vlm.backend"),
    ],
)
def test_build_app_names_the_bad_field(args: dict, field: str) -> None:
    from f2f.serving.app import build_app

    with pytest.raises(InvalidConfig) as info:
        build_app(args)
    assert info.value.field == field


# --- the application ------------------------------------------------------------------------


def test_healthz(base_url: str) -> None:
    response = httpx.get(f"{base_url}/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz(base_url: str) -> None:
    response = httpx.get(f"{base_url}/readyz", timeout=30)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_edit_over_multipart(base_url: str) -> None:
    started = time.perf_counter()
    response = _post_edit(base_url, {"prompt": "make the sun set", "n": "2"})
    print(f"\none tiny edit over HTTP (2 seeds): {time.perf_counter() - started:.2f} s")
    assert response.status_code == 200, response.text[:300]
    body = response.json()
    assert isinstance(body["created"], int) and len(body["data"]) == 1
    item = body["data"][0]
    edited = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert edited.format == "PNG" and edited.size == Image.open(SAMPLE).size
    assert isinstance(item["revised_prompt"], str) and item["revised_prompt"]
    assert body["f2f"]["status"] in {"edited", "no_edit", "fallback"}
    assert body["f2f"]["seed"] in {3, 4}  # config seed 3, n=2
    assert {"caption", "generate", "select", "total"} <= set(body["f2f"]["timings_s"])


def test_edit_with_seed_is_reproducible_in_its_metadata(base_url: str) -> None:
    response = _post_edit(base_url, {"prompt": "A photo of a sunset.", "seed": "11"})
    assert response.status_code == 200, response.text[:300]
    assert response.json()["f2f"]["seed"] == 11


def test_edit_through_the_openai_sdk(base_url: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)
    with SAMPLE.open("rb") as image:
        result = client.images.edit(model="f2f", image=image, prompt="make the sky purple")
    assert result.data and result.data[0].b64_json
    assert Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).size == Image.open(SAMPLE).size
    assert isinstance(result.data[0].revised_prompt, str)


@pytest.mark.parametrize(
    ("data", "image", "param", "code"),
    [
        ({"prompt": "make it red"}, b"this is not an image", "image", "invalid_image"),
        ({"prompt": ""}, None, "prompt", None),
        ({"prompt": "   "}, None, "prompt", "invalid_input"),
        ({}, None, "prompt", "missing"),
        ({"prompt": "x" * 1001}, None, "prompt", "invalid_input"),
        ({"prompt": "make it red", "response_format": "url"}, None, "response_format", "invalid_input"),
        ({"prompt": "make it red", "n": "0"}, None, "n", "greater_than_equal"),
        ({"prompt": "make it red", "n": "5"}, None, "n", "invalid_input"),
        ({"prompt": "make it red", "seed": "-1"}, None, "seed", None),
    ],
)
def test_bad_requests_are_typed_400s(base_url: str, data: dict, image: bytes | None, param: str, code: str | None) -> None:
    response = _post_edit(base_url, data, image)
    assert response.status_code == 400, response.text[:300]
    error = _error(response)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert code is None or error["code"] == code
    assert error["message"].startswith(param)


def test_missing_image_names_it(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/images/edits", data={"prompt": "make it red"}, timeout=30)
    assert response.status_code == 400
    assert _error(response)["param"] == "image"


def test_unknown_route_is_a_typed_404(base_url: str) -> None:
    response = httpx.get(f"{base_url}/v1/nope")
    assert response.status_code == 404
    assert _error(response)["code"] == "http_404"
