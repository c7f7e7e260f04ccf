"""Serve's JSON logs: a job's lines, in the ingress, the edit worker, the VLM and the generator, all name it.

One Ray and one application for the module, with serve/local.yaml's `logging_config` (JSON); one tiny edit,
then the replicas' log files that Serve writes under Ray's session directory (`logs/serve/`) are read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import running_app, submit, tiny_config, wait_for

LOCAL_CONFIG = Path(__file__).resolve().parents[2] / "serve" / "local.yaml"
DEPLOYMENTS = ("Ingress", "EditWorker", "VLM", "Generator")
JOB_FIELD = "f2f_job_id"
WRITTEN_WAIT_S = 10.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Iterator[str]:
    args = {"config": tiny_config(tiny_models, tmp_path_factory.mktemp("f2f-cache"))}
    args["jobs"] = {"dir": str(tmp_path_factory.mktemp("jobs")), "sweep_interval_s": 600}
    args["auth"] = {"required": False}
    logging_config = yaml.safe_load(LOCAL_CONFIG.read_text(encoding="utf-8"))["applications"][0]["logging_config"]
    assert logging_config["encoding"] == "JSON"
    with running_app(args, logging_config=logging_config) as url:
        yield url


def _serve_log_lines() -> dict[str, list[dict[str, Any]]]:
    """Every line of every f2f replica's Serve log file, by file name; each must be one JSON object."""
    from ray.serve._private.logging_utils import get_serve_logs_dir  # where Serve writes: this Ray's session logs

    files = sorted(Path(get_serve_logs_dir()).glob("replica_f2f_*.log"))
    lines: dict[str, list[dict[str, Any]]] = {}
    for path in files:
        lines[path.name] = []
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                lines[path.name].append(json.loads(text))
            except json.JSONDecodeError:
                pytest.fail(f"{path.name}:{number} is not JSON: {text[:200]!r}")
    return lines


def _job_lines(job_id: str) -> dict[str, list[dict[str, Any]]]:
    """The lines that name the job, by deployment (Serve's `deployment` field)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for lines in _serve_log_lines().values():
        for line in lines:
            if line.get(JOB_FIELD) == job_id:
                found.setdefault(line.get("deployment", "?").removeprefix("f2f_"), []).append(line)  # Serve: <app>_<name>
    return found


def test_every_replica_writes_the_jobs_id_on_its_json_lines(served: str) -> None:
    response = submit(served, {"prompt": "make the sun set"})
    assert response.status_code in (200, 201, 202), response.text[:300]
    job_id = response.json()["id"]
    assert wait_for(served, job_id)["status"] == "succeeded"

    deadline = time.monotonic() + WRITTEN_WAIT_S
    while not set(found := _job_lines(job_id)) >= set(DEPLOYMENTS) and time.monotonic() < deadline:
        time.sleep(0.5)
    for name, lines in found.items():
        print(f"\n{name}: {json.dumps(lines[-1])}")
    assert set(found) >= set(DEPLOYMENTS), f"no line names the job in {set(DEPLOYMENTS) - set(found)}"

    messages = {name: " | ".join(line["message"] for line in lines) for name, lines in found.items()}
    assert "created" in messages["Ingress"] and "sent to the queue" in messages["Ingress"], messages["Ingress"]
    assert "claimed" in messages["EditWorker"] and "succeeded" in messages["EditWorker"], messages["EditWorker"]
    for name in ("EditWorker", "VLM", "Generator"):  # the worker's handle calls carry the job id as Serve's request id
        assert all(line.get("request_id") == job_id for line in found[name]), (name, found[name])
        assert all(line.get("application") == "f2f" for line in found[name]), (name, found[name])
    for name in ("VLM", "Generator"):  # Serve's own line for each call the worker made
        assert any(line.get("name") == "ray.serve" and "CALL" in line["message"] for line in found[name]), found[name]
    assert {line.get("name") for line in found["EditWorker"]} >= {"f2f.serving"}  # f2f's own lines reach the file
