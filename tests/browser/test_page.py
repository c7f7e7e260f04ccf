"""The web page as a person uses it: upload, edit, watch, scrub the path, use another frame, download; and the
errors a person meets (a failed edit, a file that is not an image, no API key), each shown from the API's
typed error body.

One service for the module (API keys on, as the default config has them; one try per job, so that a
generator replica killed mid-video fails its job), one headless Chromium; a fresh page per test. The
failed edit runs last: it kills the generator replica.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")

from harness import SAMPLE, error_of, kill_replica, running_app, submit, tiny_config  # noqa: E402

from f2f.serving.api.auth import add_key  # noqa: E402

RUN_S = 120  # the longest a tiny edit may take here, Ray's start-up aside
LONG_STEPS = "1000"  # a tiny video this long runs for many seconds: time to kill its generator


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path = tmp_path_factory.mktemp("auth") / "keys.yaml"
    return {"path": str(path), "alice": add_key(path, "alice")}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path, token: dict[str, str]) -> Iterator[str]:
    args = {
        "config": tiny_config(tiny_models, tmp_path_factory.mktemp("f2f-cache")),
        "jobs": {"dir": str(tmp_path_factory.mktemp("jobs")), "poll_interval_s": 0.1, "max_attempts": 1},
        "auth": {"keys_file": token["path"]},
    }
    with running_app(args) as url:
        yield url


@pytest.fixture
def page(browser: Any, base_url: str) -> Iterator[Any]:
    """A fresh page at `/`; afterwards, every request it made went to the service (or stayed in the browser)."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(base_url)
    try:
        yield page
    finally:
        context.close()
    elsewhere = [url for url in requests if not url.startswith((f"{base_url}/", "blob:", "data:"))]
    assert not elsewhere, f"the page loaded from elsewhere: {elsewhere}"


def _auth(token: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['alice']}"}


def _fill(page: Any, token: str | None, image: Path | dict[str, Any], prompt: str, seeds: str = "1", steps: str = "") -> None:
    if token is not None:
        page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("image-input").set_input_files(image)
    page.get_by_test_id("prompt-input").fill(prompt)
    page.get_by_test_id("seeds-input").fill(seeds)
    page.get_by_test_id("steps-input").fill(steps)
    page.get_by_test_id("submit").click()


def _job_id(page: Any) -> str:
    return page.get_by_test_id("collage").get_attribute("data-job")


def _get(base_url: str, path: str, token: dict[str, str]) -> bytes:
    response = httpx.get(f"{base_url}{path}", headers=_auth(token), timeout=30)
    assert response.status_code == 200, response.text[:300]
    return response.content


def test_edit_scrub_use_another_frame_and_download(page: Any, base_url: str, token: dict[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _fill(page, token["alice"], SAMPLE, "make the sun set", seeds="2")
    collage = page.get_by_test_id("collage")
    expect(collage).to_be_visible(timeout=RUN_S * 1000)
    assert collage.evaluate("img => img.complete && img.naturalWidth > 0")
    job_id = _job_id(page)
    job = httpx.get(f"{base_url}/v1/edits/{job_id}", headers=_auth(token)).json()
    assert job["status"] == "succeeded" and job["seeds"] == [3, 4]
    progress = page.get_by_test_id("progress").evaluate("el => [el.value, el.max]")
    assert progress == [job["progress"]["total"]] * 2 and progress[0] > 1  # every denoising step shown done
    expect(page.get_by_test_id("error")).to_be_hidden()

    # The slider walks the whole path: the source (0), then each tile.
    frames, result_image = job["result"]["frames"], page.get_by_test_id("result-image")
    chosen = result_image.get_attribute("data-label")
    slider, frame = page.get_by_test_id("frame-slider"), page.get_by_test_id("frame-image")
    slider.focus()
    slider.press("Home")
    expect(frame).to_have_attribute("data-label", "0")
    for label in range(1, len(frames)):
        slider.press("ArrowRight")
        expect(frame).to_have_attribute("data-label", str(label))
    target = len(frames) - 1 if chosen != str(len(frames) - 1) else len(frames) - 2
    if target != len(frames) - 1:
        slider.press("ArrowLeft")
    expect(frame).to_have_attribute("data-label", str(target))
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

    page.get_by_test_id("use-frame").click()
    expect(result_image).to_have_attribute("data-label", str(target))
    expect(page.get_by_test_id("result-label")).to_contain_text("selected by alice")
    selected = _get(base_url, f"/v1/edits/{job_id}/frames/{target}", token)
    assert _get(base_url, f"/v1/edits/{job_id}/image", token) == selected  # the API serves the frame chosen
    selection = httpx.get(f"{base_url}/v1/edits/{job_id}", headers=_auth(token)).json()["selection"]
    assert (selection["label"], selection["frame"], selection["by"]) == (target, frames[target]["frame"], "alice")
    assert result_image.evaluate("img => img.complete && img.naturalWidth") == 640

    with page.expect_download() as download:
        page.get_by_test_id("download").click()
    assert Path(download.value.path()).read_bytes() == selected


def test_a_preview_of_the_path_shows_before_the_result(page: Any, base_url: str, token: dict[str, str]) -> None:
    from playwright.sync_api import expect

    page.evaluate(  # the order in which the preview and the result first get their images
        """() => {
          window.shown = [];
          for (const id of ["preview-image", "collage", "result-image"]) {
            const img = document.getElementById(id);
            new MutationObserver(() => { if (!window.shown.includes(id)) window.shown.push(id); })
              .observe(img, { attributes: true, attributeFilter: ["src"] });
          }
        }"""
    )
    _fill(page, token["alice"], SAMPLE, "make the sun set", steps="8")
    expect(page.get_by_test_id("result-image")).to_be_visible(timeout=RUN_S * 1000)
    assert page.evaluate("window.shown")[0] == "preview-image"
    preview = page.get_by_test_id("preview-image")
    expect(preview).to_be_visible()
    assert preview.evaluate("img => img.complete && img.naturalWidth > 0")
    expect(page.get_by_test_id("preview-label")).to_contain_text("Approximate preview")
    job = httpx.get(f"{base_url}/v1/edits/{_job_id(page)}", headers=_auth(token)).json()
    assert preview.get_attribute("data-count") == str(job["preview"]["count"])  # the latest one


def test_a_file_that_is_not_an_image_shows_the_400(page: Any, base_url: str, token: dict[str, str]) -> None:
    from playwright.sync_api import expect

    text = b"this is a shopping list, not an image\n"
    expected = error_of(submit(base_url, {"prompt": "make it pop"}, image=text, headers=_auth(token)))
    _fill(page, token["alice"], {"name": "notes.txt", "mimeType": "text/plain", "buffer": text}, "make it pop")
    error = page.get_by_test_id("error")
    expect(error).to_be_visible(timeout=30_000)
    expect(error).to_have_text(f"{expected['message']} ({expected['code']})")
    assert expected["param"] == "image" and expected["code"] == "invalid_image"
    expect(page.get_by_test_id("collage")).to_be_hidden()


def test_without_a_key_the_page_says_one_is_needed(page: Any, base_url: str, token: dict[str, str]) -> None:
    from playwright.sync_api import expect

    _fill(page, None, SAMPLE, "make it snow")
    error = page.get_by_test_id("error")
    expect(error).to_be_visible(timeout=30_000)
    expect(error).to_contain_text("an API key is needed")
    expect(error).to_contain_text("(invalid_api_key)")


def test_a_failed_edit_shows_its_error(page: Any, base_url: str, token: dict[str, str]) -> None:
    """The generator replica dies mid-video; with one try per job, the job fails with `replica_lost`."""
    from playwright.sync_api import expect

    _fill(page, token["alice"], SAMPLE, "make it rain", steps=LONG_STEPS)
    progress = page.get_by_test_id("progress")
    deadline = time.monotonic() + RUN_S
    while progress.evaluate("el => el.value") < 1:  # a denoising step reached the page
        assert time.monotonic() < deadline, "no progress shown"
        time.sleep(0.1)
    kill_replica("Generator")
    error = page.get_by_test_id("error")
    expect(error).to_be_visible(timeout=RUN_S * 1000)
    expect(error).to_contain_text("a model replica was lost in each of 1 tries")
    expect(error).to_contain_text("(replica_lost)")
    expect(page.get_by_test_id("status")).to_contain_text("failed")
    expect(page.get_by_test_id("result-image")).to_be_hidden()
