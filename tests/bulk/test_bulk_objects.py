"""A bulk run whose manifest, images and outputs are all in an S3 bucket (moto's S3 server on 127.0.0.1): the same
URLs as the service's object storage, read and written by every stage through pyarrow's filesystem; a rerun resumes
from the bucket's index. Zero-cost fake models (`zero_cost.py`), a driver process with a Ray of its own."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("ray.data")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from zero_cost import result_of  # noqa: E402

ENV = {"RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _driver(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV, "AWS_ENDPOINT_URL": endpoint, "PYTHONPATH": f"{HERE.parents[1]}:{HERE}"}
    command = [sys.executable, str(HERE / "zero_cost.py"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_manifest_images_and_outputs_in_a_bucket(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from f2f.bulk.storage import Location

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket)
    inputs = Location.of("s3://f2f/catalogue")
    for n in range(3):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), (80 * n, 90, 160)).save(buffer, format="PNG")
        inputs.child(f"img{n}.png").write_bytes(buffer.getvalue())
    rows = [{"id": f"item{n}", "image": f"img{n}.png", "prompt": "make it red"} for n in range(3)]
    rows.append({"id": "gone", "image": "missing.png", "prompt": "make it red"})
    inputs.child("m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    done = _driver(s3_bucket, "s3://f2f/catalogue/m.jsonl", "s3://f2f/runs/one")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = result_of(done.stdout)["summary"]
    assert summary["by_status"] == {"succeeded": 3, "failed": 1}

    out = Location.of("s3://f2f/runs/one")
    from f2f.bulk.report import read_index

    index = {row["id"]: row for row in read_index(out)}
    assert index["gone"]["reason"].startswith("unreadable: image: cannot read missing.png")
    for n in range(3):
        row = index[f"item{n}"]
        edited = Image.open(io.BytesIO(out.child(row["paths"]["edited"]).read_bytes()))
        assert row["status"] == "succeeded" and edited.size == (40, 30)
        assert out.child(row["folder"], "thumb-source.jpg").exists()
    assert json.loads(out.child("summary.json").read_bytes())["items"] == 4
    assert b"<table>" in out.child("report.html").read_bytes()

    again = _driver(s3_bucket, "s3://f2f/catalogue/m.jsonl", "s3://f2f/runs/one")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 items, 1 to do" in again.stderr  # only the missing image is tried again, from the bucket's index
