"""Bulk edits end to end on a real Ray head (started with `ray start`, loopback only, dashboard on 127.0.0.1).

Real PosEdit images plus broken rows; every job is a separate driver process
(`python -m f2f.bulk`, or `ray job submit`), as users run it. One head for
the module: two clusters do not fit two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from PIL import Image

POSEDIT = Path(__file__).resolve().parents[3] / "shared" / "data" / "posedit"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
PYTHON = sys.executable
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def head() -> Iterator[dict[str, str]]:
    """A Ray head on loopback with the dashboard (job submission); the environment a driver needs to join it."""
    if not POSEDIT.is_dir():
        pytest.skip("the PosEdit data (shared/data/posedit) is not beside the repository")
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket paths must stay short
    port, dashboard = _free_port(), _free_port()
    env = {**os.environ, **LOOPBACK_ENV}
    start = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2"]
    start += ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard)]
    start += ["--temp-dir", temp, "--object-store-memory", str(200 * 1024**2), "--disable-usage-stats"]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{port}", "F2F_DASHBOARD": f"http://127.0.0.1:{dashboard}"}
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "f2f.yaml"
    path.write_text(yaml.safe_dump({"profile": "tiny", "seed": 3, "cache_dir": str(path.parent / "cache")}))
    return path


def _posedit(n: int) -> list[dict]:
    annotations = json.loads((POSEDIT / "annotations.json").read_text())[:n]
    return [
        {"id": Path(a["image"]).stem, "image": str(POSEDIT / "src_images" / a["image"]), "prompt": a["instruction"]}
        for a in annotations
    ]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real PosEdit rows (one wants its video), an image corrupt behind a good header, and three bad rows."""
    folder = tmp_path_factory.mktemp("manifest")
    rows = _posedit(4)
    whole = Path(rows[0]["image"]).read_bytes()
    (folder / "broken.png").write_bytes(whole[: len(whole) // 2])  # the check reads headers: it fails when decoded
    rows[1]["options"] = {"video": True}
    rows += [
        {"id": "broken", "image": "broken.png", "prompt": "make it red"},  # fails when edited, not before
        {"id": "no-file", "image": "missing.png", "prompt": "x"},
        {"id": "extra", "image": "broken.png", "prompt": "x", "colour": "red"},
        {"id": rows[0]["id"], "image": rows[0]["image"], "prompt": "a duplicate id"},
    ]
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _bulk(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "f2f.bulk", *args], env=env, capture_output=True, text=True, timeout=timeout)


def _journal(out: Path) -> list[dict]:
    """The journal's entries (a line torn by a killed driver is left out, as the runner does)."""
    entries = []
    for line in (out / "journal.jsonl").read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def test_a_manifest_runs_to_every_output(head: dict[str, str], manifest: Path, config_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _bulk(head, str(manifest), "--out", str(out), "--config", str(config_file))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "row 6: image: cannot read" in done.stderr and "row 7: colour: unknown key" in done.stderr
    assert "row 8: id:" in done.stderr and "already used by row 1" in done.stderr
    assert "bulk: 5/5 finished: 4 edited, 1 failed" in done.stderr  # the progress lines of a non-terminal run

    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [row["row"] for row in index] == list(range(1, 9))
    by_status = {status: [r for r in index if r["status"] == status] for status in ("succeeded", "failed", "invalid")}
    assert len(by_status["succeeded"]) == 4 and len(by_status["invalid"]) == 3
    assert [r["id"] for r in by_status["failed"]] == ["broken"] and "invalid_image" in by_status["failed"][0]["reason"]
    for row in by_status["succeeded"]:
        folder = out / "items" / row["id"]
        assert Image.open(folder / "edited.png").size == (400, 400) and Image.open(folder / "collage.png").format == "PNG"
        assert json.loads((folder / "result.json").read_text())["status"] == row["edit_status"]
        assert row["edit_status"] in {"edited", "no_edit", "fallback"} and row["caption"] and row["seed"] == 3
        assert {"caption", "generate", "select", "total"} <= set(row["timings_s"])
        assert (folder / "video.mp4").exists() == (row["row"] == 2) == ("video" in row["paths"])

    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == 8 and summary["by_status"] == {"succeeded": 4, "failed": 1, "invalid": 3}
    assert summary["this_run"]["finished"] == 5 and summary["this_run"]["items_per_minute"] > 0
    assert set(summary["stage_seconds"]) == {"caption", "generate", "select", "rank", "align", "total"}  # f2f.pipeline.STAGES

    report = (out / "report.html").read_text()
    assert report.count("<tr>") == 9 and "<script" not in report
    for row in by_status["succeeded"]:
        for kind in ("source", "collage", "edited"):
            assert f"thumbs/{row['id']}-{kind}.jpg" in report
            assert max(Image.open(out / "thumbs" / f"{row['id']}-{kind}.jpg").size) <= 320

    again = _bulk(head, str(manifest), "--out", str(out), "--config", str(config_file), "--max-retries", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    journal = _journal(out)
    assert len(journal) == 5 and "nothing to do" in again.stderr  # the corrupt image can only fail: not tried again
    assert [(e["attempts"], e["retry"]) for e in journal if e["id"] == "broken"] == [(1, False)]


def test_strict_and_a_foreign_output_folder_stop_before_any_work(
    head: dict[str, str], manifest: Path, config_file: Path, tmp_path: Path
) -> None:
    strict = _bulk(head, str(manifest), "--out", str(tmp_path / "a"), "--config", str(config_file), "--strict")
    assert strict.returncode == 2 and "3 bad rows (--strict)" in strict.stderr and not (tmp_path / "a").exists()
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(_posedit(1)[0]) + "\n")
    first = _bulk(head, str(other), "--out", str(tmp_path / "b"), "--config", str(config_file))
    assert first.returncode == 0, first.stderr[-3000:]
    refused = _bulk(head, str(manifest), "--out", str(tmp_path / "b"), "--config", str(config_file))
    assert refused.returncode == 2 and "holds the results of another manifest" in refused.stderr
    assert "Traceback" not in refused.stderr
    not_a_manifest = tmp_path / "list.txt"
    not_a_manifest.write_text("a.png,make it red\n")
    bad = _bulk(head, str(not_a_manifest), "--out", str(tmp_path / "c"), "--config", str(config_file))
    assert bad.returncode == 2 and "must be a .jsonl or .csv file" in bad.stderr


def test_an_interrupted_run_resumes_without_redoing_work(head: dict[str, str], config_file: Path, tmp_path: Path) -> None:
    rows = [{**row, "options": {"steps": 60}} for row in _posedit(8)]  # slow enough to interrupt
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    command = [PYTHON, "-m", "f2f.bulk", str(path), "--out", str(out), "--config", str(config_file)]
    driver = subprocess.Popen(command, env=head, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "journal.jsonl").exists() or len(_journal(out)) < 2:
        assert driver.poll() is None and time.monotonic() < deadline, "the run ended or stalled before it could be interrupted"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)  # no clean-up at all: the journal is all that is left
    driver.wait(30)
    before = {entry["key"] for entry in _journal(out) if entry["status"] == "succeeded"}
    assert 2 <= len(before) < 8

    resumed = _bulk(head, str(path), "--out", str(out), "--config", str(config_file))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    journal = _journal(out)
    keys = [entry["key"] for entry in journal if entry["status"] == "succeeded"]
    assert len(keys) == len(set(keys)) == 8  # every item finished exactly once: none redone
    summary = json.loads((out / "summary.json").read_text())
    assert summary["by_status"] == {"succeeded": 8} and summary["this_run"]["finished"] == 8 - len(before)

    # Once more, with nothing left: it says so and stops before Ray (this address answers nothing) or any model
    nowhere = {**head, "RAY_ADDRESS": f"127.0.0.1:{_free_port()}"}
    again = _bulk(nowhere, str(path), "--out", str(out), "--config", str(config_file), timeout=60)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to do: all 8 items finished earlier" in again.stderr and "actors" not in again.stderr
    assert len(_journal(out)) == len(journal)  # nothing recorded
    assert json.loads((out / "summary.json").read_text())["by_status"] == {"succeeded": 8}


def test_the_same_job_through_ray_job_submit(head: dict[str, str], config_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    rows = _posedit(2)
    path.write_text("id,image,prompt,steps\n" + "".join(f'{r["id"]},{r["image"]},"{r["prompt"]}",3\n' for r in rows))
    out = tmp_path / "out"
    entrypoint = f"{PYTHON} -m f2f.bulk {path} --out {out} --config {config_file}"  # the head's python, absolute
    repo = Path(__file__).resolve().parents[2]
    submit = [RAY, "job", "submit", "--address", head["F2F_DASHBOARD"], "--working-dir", str(repo), "--", *entrypoint.split()]
    done = subprocess.run(submit, env=head, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "bulk: 2/2 finished" in done.stdout + done.stderr  # the job's logs, streamed back
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [r["status"] for r in index] == ["succeeded", "succeeded"]
    assert json.loads((out / "items" / rows[0]["id"] / "result.json").read_text())["caption"]


def test_an_item_over_its_timeout_fails_and_the_run_goes_on(head: dict[str, str], config_file: Path, tmp_path: Path) -> None:
    rows = _posedit(2)
    # Four videos of 193 frames x 1000 steps: about 60 s on a 2-core Xeon (2026-12-06), three times the timeout. One
    # such video alone took 16 s there: under the timeout, so the item succeeded and the test failed on that machine.
    rows[0]["seeds"] = [1, 2, 3, 4]
    rows[0]["options"] = {"steps": 1000, "num_frames": 193}
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    started = time.monotonic()
    # 20 s: over a tiny edit even on a loaded 2-core machine (a few seconds alone), far under the slow one's minutes
    done = _bulk(head, str(path), "--out", str(out), "--config", str(config_file), "--item-timeout", "20")
    assert done.returncode == 0, done.stderr[-3000:]
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert index[0]["status"] == "failed" and index[0]["reason"].startswith("timeout: its videos took longer than 20 s")
    assert index[1]["status"] == "succeeded", index[1]  # the generator was freed: the cancelled video stopped
    assert time.monotonic() - started < 120


def _tiny_profiles() -> list[str]:
    """The tiny profiles beyond `tiny` (the tests above): one per generator family and VLM sibling."""
    from f2f.catalogue import load_catalogue

    catalogue = load_catalogue()
    return [name for name in catalogue.profiles if name != "tiny" and catalogue.is_tiny(name)]


@pytest.mark.parametrize("profile", _tiny_profiles())
def test_every_tiny_profile_runs_a_bulk_edit(head: dict[str, str], profile: str, tmp_path: Path) -> None:
    row = _posedit(1)[0]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps(row) + "\n")
    config = tmp_path / "f2f.yaml"
    config.write_text(yaml.safe_dump({"seed": 3, "cache_dir": str(tmp_path / "cache")}))
    out = tmp_path / "out"
    done = _bulk(head, str(manifest), "--out", str(out), "--config", str(config), "--profile", profile)
    assert done.returncode == 0, done.stderr[-3000:]
    (entry,) = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert entry["status"] == "succeeded", entry
    folder = out / "items" / row["id"]
    assert Image.open(folder / "edited.png").size == Image.open(row["image"]).size
    from f2f.config import load_config

    video = load_config(config, {"profile": profile}).video
    assert json.loads((folder / "result.json").read_text())["canvas"]["fit"] == ("free" if video.width is None else "letterbox")
