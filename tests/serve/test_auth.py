"""API keys on the real service: 401 without a valid key, every job visible only to its key, a per-key cap
(429), health and docs open, the OpenAI SDK and `f2f submit` with a key (real Ray Serve, HTTP on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")

from harness import SAMPLE, error_of, running_app, submit, tiny_config, wait_for  # noqa: E402


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path, tokens: dict[str, str]) -> Iterator[str]:
    args = {
        "config": tiny_config(tiny_models, tmp_path_factory.mktemp("f2f-cache")),
        "worker_max_concurrent_jobs": 1,
        "jobs": {"dir": str(tmp_path_factory.mktemp("jobs")), "poll_interval_s": 0.1},
        "auth": {"keys_file": tokens["path"], "max_active_jobs_per_key": 2, "retry_after_s": 9},
    }
    with running_app(args) as url:
        yield url


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_and_docs_are_open(base_url: str) -> None:
    assert httpx.get(f"{base_url}/healthz").status_code == 200
    assert httpx.get(f"{base_url}/readyz", timeout=30).status_code == 200
    spec = httpx.get(f"{base_url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer f2f_wrong"}, {"Authorization": "Basic abc"}])
def test_every_v1_route_needs_a_valid_key(base_url: str, headers: dict[str, str]) -> None:
    responses = [
        submit(base_url, {"prompt": "x"}, headers=headers),
        httpx.get(f"{base_url}/v1/edits/{'0' * 32}", headers=headers),
        httpx.delete(f"{base_url}/v1/edits/{'0' * 32}", headers=headers),
        httpx.get(f"{base_url}/v1/edits/{'0' * 32}/image", headers=headers),
        httpx.post(f"{base_url}/v1/images/edits", data={"prompt": "x"}, files={"image": ("a.png", b"")}, headers=headers),
    ]
    for response in responses:
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert error_of(response)["code"] == "invalid_api_key"


def test_a_job_is_visible_only_to_its_key(base_url: str, tokens: dict[str, str]) -> None:
    created = submit(base_url, {"prompt": "make the sun set"}, headers=_as(tokens["alice"]))
    assert created.status_code == 202, created.text[:300]
    job_id = created.json()["id"]
    job = wait_for(base_url, job_id, headers=_as(tokens["alice"]))
    assert job["status"] == "succeeded"
    for route in ("", "/image", "/events", "/frames/0"):
        other = httpx.get(f"{base_url}/v1/edits/{job_id}{route}", headers=_as(tokens["bob"]))
        assert other.status_code == 404 and error_of(other)["code"] == "job_not_found"  # as if it did not exist
    assert httpx.delete(f"{base_url}/v1/edits/{job_id}", headers=_as(tokens["bob"])).status_code == 404
    assert httpx.get(f"{base_url}/v1/edits/{job_id}/image", headers=_as(tokens["alice"])).status_code == 200


def test_idempotency_keys_are_per_api_key(base_url: str, tokens: dict[str, str]) -> None:
    a = submit(base_url, {"prompt": "add a boat"}, headers={**_as(tokens["alice"]), "Idempotency-Key": "same"})
    b = submit(base_url, {"prompt": "add a boat"}, headers={**_as(tokens["bob"]), "Idempotency-Key": "same"})
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]
    for job, token in ((a, tokens["alice"]), (b, tokens["bob"])):
        wait_for(base_url, job.json()["id"], headers=_as(token))


def test_a_key_over_its_job_cap_gets_429(base_url: str, tokens: dict[str, str]) -> None:
    slow = {"prompt": "slow", "steps": "400"}
    ids = [submit(base_url, slow, headers=_as(tokens["alice"])).json()["id"] for _ in range(2)]
    refused = submit(base_url, {"prompt": "one more"}, headers=_as(tokens["alice"]))
    assert refused.status_code == 429 and refused.headers["retry-after"] == "9"
    assert error_of(refused)["code"] == "too_many_jobs"
    other = submit(base_url, {"prompt": "bob is not capped by alice"}, headers=_as(tokens["bob"]))
    assert other.status_code == 202
    for job_id in ids:
        httpx.delete(f"{base_url}/v1/edits/{job_id}", headers=_as(tokens["alice"]))
    for job_id in ids:
        assert wait_for(base_url, job_id, headers=_as(tokens["alice"]))["status"] == "cancelled"
    wait_for(base_url, other.json()["id"], headers=_as(tokens["bob"]))


def test_the_openai_sdk_and_f2f_submit_send_the_key(base_url: str, tokens: dict[str, str], tmp_path: Path) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=tokens["bob"], max_retries=0, timeout=120)
    with SAMPLE.open("rb") as image:
        assert client.images.edit(model="f2f", image=image, prompt="make it blue").data[0].b64_json
    wrong = openai.OpenAI(base_url=f"{base_url}/v1", api_key="f2f_wrong", max_retries=0, timeout=30)
    with SAMPLE.open("rb") as image, pytest.raises(openai.AuthenticationError):
        wrong.images.edit(model="f2f", image=image, prompt="make it blue")

    from click.testing import CliRunner

    from f2f import cli

    args = ["submit", str(SAMPLE), "zoom in", "--url", base_url, "--out", str(tmp_path / "out")]
    assert CliRunner().invoke(cli.main, args, env={"F2F_API_KEY": tokens["alice"]}).exit_code == 0
    refused = CliRunner().invoke(cli.main, args, env={"F2F_API_KEY": "f2f_wrong"})
    assert refused.exit_code == cli.EXIT_USAGE and "401: the API key is not valid" in refused.output


def test_each_key_lists_only_its_own_jobs(base_url: str, tokens: dict[str, str]) -> None:
    mine = {name: submit(base_url, {"prompt": name}, headers=_as(tokens[name])).json()["id"] for name in ("alice", "bob")}
    for name, job_id in mine.items():
        wait_for(base_url, job_id, headers=_as(tokens[name]))
    for name, other in (("alice", "bob"), ("bob", "alice")):
        listed = httpx.get(f"{base_url}/v1/edits", params={"limit": 100}, headers=_as(tokens[name])).json()
        ids = {job["id"] for job in listed["data"]}
        assert mine[name] in ids and mine[other] not in ids
        # Its own process, as a user runs it: in this one, the lines Ray forwards from the replicas (which name every
        # job) would be printed into the output CliRunner captures
        command = [sys.executable, "-m", "f2f.cli", "jobs", "list", "--url", base_url]
        env = {**os.environ, "F2F_API_KEY": tokens[name], "PYTHONPATH": str(SAMPLE.parents[2])}
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0 and mine[name] in result.stdout and mine[other] not in result.stdout
    assert httpx.get(f"{base_url}/v1/edits").status_code == 401
