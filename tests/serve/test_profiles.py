"""Every tiny profile of another family or VLM than `tiny`'s (which test_app covers in depth) serves an edit:
the real application on one Ray, redeployed per profile, edited through the official OpenAI SDK, and the same
edit read back as a job whose result names the canvas its family used."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

pytest.importorskip("ray")
pytest.importorskip("diffusers")
openai = pytest.importorskip("openai")

from harness import LOOPBACK_ENV, SAMPLE, free_port  # noqa: E402

from f2f.canvas import fit_canvas  # noqa: E402
from f2f.catalogue import load_catalogue  # noqa: E402
from f2f.config import load_config  # noqa: E402


def tiny_profiles() -> list[str]:
    """The tiny profiles beyond `tiny` itself: one per generator family and VLM sibling."""
    catalogue = load_catalogue()
    return [name for name in catalogue.profiles if name != "tiny" and catalogue.is_tiny(name)]


@pytest.fixture(scope="module")
def serve_at(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Ray and one Serve on loopback for the module; each test deploys its profile under the same name."""
    import shutil
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        for key, value in LOOPBACK_ENV.items():
            env.setenv(key, value)
        import ray
        from ray import serve

        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, _temp_dir=ray_tmp)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            yield f"http://127.0.0.1:{port}"
        finally:
            ray.shutdown()  # the cluster just goes (harness.running_app says why)
            shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.parametrize("profile", tiny_profiles())
def test_the_profile_serves_an_edit_through_the_openai_sdk(
    serve_at: str, profile: str, tiny_models: Path, tmp_path: Path
) -> None:
    from ray import serve

    from f2f.serving.app import build_app

    config = {"profile": profile, "models_dir": str(tiny_models), "cache_dir": str(tmp_path / "cache"), "seed": 5}
    args = {"config": config, "jobs": {"dir": str(tmp_path / "jobs"), "poll_interval_s": 0.1}, "auth": {"required": False}}
    serve.run(build_app(args), name="f2f")
    client = openai.OpenAI(base_url=f"{serve_at}/v1", api_key="unused", max_retries=0, timeout=300)
    with SAMPLE.open("rb") as image:
        result = client.images.edit(model="f2f", image=image, prompt="make the sky purple")
    edited = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert edited.size == Image.open(SAMPLE).size  # back at the source's exact size, whatever the canvas
    job_id = result.model_extra["f2f"]["id"]
    job = httpx.get(f"{serve_at}/v1/edits/{job_id}", timeout=30).json()
    assert job["status"] == "succeeded", job
    video = load_config(overrides={"profile": profile, "cache_dir": str(tmp_path / "cache")}).video
    canvas, size = job["result"]["canvas"], Image.open(SAMPLE).size
    if video.width is None:  # a free canvas: the source's own aspect ratio within the budget, no bars
        assert canvas == {"fit": "free", "size": list(fit_canvas(size, video.max_canvas_pixels, video.size_multiple))}
        assert job["result"]["letterbox_box"] == [0, 0, *canvas["size"]]
    else:
        assert canvas == {"fit": "letterbox", "size": [video.width, video.height]}
    assert result.model_extra["f2f"]["canvas"] == canvas  # the OpenAI route's extension says it too
