"""The edit path as a control on the real service: every job lists its candidate frames, and
`POST /v1/edits/{id}/select` makes another one the result (real Ray Serve, HTTP on 127.0.0.1, API keys on).

One service for the module; two keys, so that another key's select is seen to change nothing.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")

from harness import error_of, running_app, submit, tiny_config, wait_for  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(scope="module")
def base_url(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: Path, tokens: dict[str, str], jobs_dir: Path
) -> Iterator[str]:
    args = {
        "config": tiny_config(tiny_models, tmp_path_factory.mktemp("f2f-cache")),
        "jobs": {"dir": str(jobs_dir), "poll_interval_s": 0.1},
        "auth": {"keys_file": tokens["path"]},
    }
    with running_app(args) as url:
        yield url


@pytest.fixture(scope="module")
def alice(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['alice']}"}


@pytest.fixture(scope="module")
def bob(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['bob']}"}


@pytest.fixture(scope="module")
def job(base_url: str, alice: dict[str, str]) -> dict[str, Any]:
    """One succeeded job of alice's, submitted without return_frames."""
    response = submit(base_url, {"prompt": "make the sun set"}, headers=alice)
    assert response.status_code == 202, response.text[:300]
    done = wait_for(base_url, response.json()["id"], headers=alice)
    assert done["status"] == "succeeded", done["error"]
    return done


def _get(base_url: str, path: str, headers: dict[str, str]) -> bytes:
    response = httpx.get(f"{base_url}{path}", headers=headers, timeout=30)
    assert response.status_code == 200, response.text[:300]
    return response.content


def _select(base_url: str, job_id: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/edits/{job_id}/select", json=body, headers=headers, timeout=30)


def test_every_job_lists_its_candidate_frames_with_their_urls(base_url: str, job: dict[str, Any], alice: dict[str, str]) -> None:
    result = job["result"]
    candidates = result["candidate_frames"]
    assert result["has_frames"] and job["selection"] is None and len(candidates) >= 2
    expected = [{"label": i, "frame": f, "url": f"/v1/edits/{job['id']}/frames/{i}"} for i, f in enumerate([0, *candidates])]
    assert result["frames"] == expected
    images = [Image.open(io.BytesIO(_get(base_url, entry["url"], alice))) for entry in result["frames"]]
    assert {(image.format, image.size) for image in images} == {("PNG", (640, 480))}


def test_select_makes_a_frame_the_result_and_a_repeat_changes_nothing(
    base_url: str, job: dict[str, Any], alice: dict[str, str], jobs_dir: Path
) -> None:
    job_id, result = job["id"], job["result"]
    (stored,) = (jobs_dir / "jobs" / job_id / "attempts").glob("*/edited.png")  # the kept attempt's
    edited = stored.read_bytes()
    last = len(result["candidate_frames"])
    label = last if result["selected_label"] != last else 1  # another frame than the VLM's
    first = _select(base_url, job_id, {"label": label}, alice)
    assert first.status_code == 200, first.text[:300]
    chosen = first.json()
    selection = chosen["selection"]
    assert {k: selection[k] for k in ("label", "frame", "by")} == {
        "label": label,
        "frame": result["candidate_frames"][label - 1],
        "by": "alice",
    }
    assert chosen["finished_at"] <= selection["at"]
    assert chosen["result"] == result and chosen["status"] == "succeeded"  # the VLM's choice stays recorded
    assert _get(base_url, f"/v1/edits/{job_id}/image", alice) == _get(base_url, f"/v1/edits/{job_id}/frames/{label}", alice)
    assert stored.read_bytes() == edited  # the edit itself is kept

    again = _select(base_url, job_id, {"label": label}, alice)
    assert again.status_code == 200 and again.json()["selection"] == selection  # same by, same at
    assert httpx.get(f"{base_url}/v1/edits/{job_id}", headers=alice).json()["selection"] == selection

    source = _select(base_url, job_id, {"label": 0}, alice)
    assert source.status_code == 200 and source.json()["selection"]["frame"] == 0
    assert _get(base_url, f"/v1/edits/{job_id}/image", alice) == _get(base_url, f"/v1/edits/{job_id}/frames/0", alice)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"label": -1}, "invalid_input"),
        ({"label": 99}, "invalid_input"),
        ({"label": "2"}, "int_type"),
        ({"label": True}, "int_type"),
        ({"label": 1.5}, "int_type"),
        ({}, "missing"),
        ({"label": 1, "frame": 4}, "extra_forbidden"),
    ],
)
def test_bad_labels_are_typed_400s_and_change_nothing(
    base_url: str, job: dict[str, Any], alice: dict[str, str], body: dict[str, Any], code: str
) -> None:
    job_id = job["id"]
    before = httpx.get(f"{base_url}/v1/edits/{job_id}", headers=alice).json()["selection"]
    image = _get(base_url, f"/v1/edits/{job_id}/image", alice)
    response = _select(base_url, job_id, body, alice)
    assert response.status_code == 400, response.text[:300]
    error = error_of(response)
    assert error["code"] == code and error["type"] == "invalid_request_error"
    assert error["param"] == ("frame" if code == "extra_forbidden" else "label")
    if code == "invalid_input":
        count = len(job["result"]["candidate_frames"])
        assert error["message"] == f"label: must be 0 (the source) to {count} (the last candidate tile) (got {body['label']})"
    assert httpx.get(f"{base_url}/v1/edits/{job_id}", headers=alice).json()["selection"] == before
    assert _get(base_url, f"/v1/edits/{job_id}/image", alice) == image


def test_another_keys_select_and_unknown_jobs_are_404s(
    base_url: str, job: dict[str, Any], alice: dict[str, str], bob: dict[str, str]
) -> None:
    before = httpx.get(f"{base_url}/v1/edits/{job['id']}", headers=alice).json()["selection"]
    for job_id, headers in ((job["id"], bob), ("0" * 32, alice), ("not-a-job", alice)):
        response = _select(base_url, job_id, {"label": 1}, headers)
        assert response.status_code == 404 and error_of(response)["code"] == "job_not_found"
    assert httpx.get(f"{base_url}/v1/edits/{job['id']}", headers=alice).json()["selection"] == before
    unauthenticated = _select(base_url, job["id"], {"label": 1}, {})
    assert unauthenticated.status_code == 401 and error_of(unauthenticated)["code"] == "invalid_api_key"


def test_select_on_an_unfinished_or_cancelled_job_is_a_409(base_url: str, alice: dict[str, str]) -> None:
    job_id = submit(base_url, {"prompt": "slow", "steps": "1000"}, headers=alice).json()["id"]
    running = _select(base_url, job_id, {"label": 1}, alice)
    assert running.status_code == 409 and error_of(running)["code"] == "job_not_finished"
    assert httpx.delete(f"{base_url}/v1/edits/{job_id}", headers=alice).status_code == 202
    assert wait_for(base_url, job_id, headers=alice)["status"] == "cancelled"
    cancelled = _select(base_url, job_id, {"label": 1}, alice)
    assert cancelled.status_code == 409 and "cancelled" in error_of(cancelled)["message"]
