"""Bulk edits end to end on a real Ray head (started with `ray start`, loopback only, dashboard on 127.0.0.1).

Real PosEdit images plus broken rows; every job is a separate driver process
(`python -m f2f.bulk`, or `ray job submit`), as users run it. One head for
the module: two clusters do not fit two cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
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
    """Four real PosEdit rows (one wants its video), an image corrupt behind a good header, a missing image, an
    empty prompt and an option out of range: each of the last four is that item's failure, not the run's."""
    folder = tmp_path_factory.mktemp("manifest")
    rows = _posedit(4)
    whole = Path(rows[0]["image"]).read_bytes()
    (folder / "broken.png").write_bytes(whole[: len(whole) // 2])  # the check reads headers: it fails when decoded
    rows[1]["options"] = {"video": True}
    rows += [
        {"id": "broken", "image": "broken.png", "prompt": "make it red"},
        {"id": "no-file", "image": "missing.png", "prompt": "x"},
        {"id": "empty", "image": rows[0]["image"], "prompt": ""},
        {"id": "steps", "image": rows[0]["image"], "prompt": "x", "options": {"steps": 0}},
    ]
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _bulk(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "f2f.bulk", *args], env=env, capture_output=True, text=True, timeout=timeout)


def _records(out: Path) -> list[dict]:
    """Every index record (one per finished attempt), as the Parquet parts hold them."""
    import pyarrow.parquet as pq

    return [row for part in sorted((out / "index").glob("*.parquet")) for row in pq.read_table(part).to_pylist()]


def _index(out: Path) -> list[dict]:
    """The latest record of every finished item, in row order."""
    from f2f.bulk.report import read_index
    from f2f.bulk.storage import Location

    return read_index(Location.of(out))


def test_a_manifest_runs_to_every_output(head: dict[str, str], manifest: Path, config_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _bulk(head, str(manifest), "--out", str(out), "--config", str(config_file))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bulk: 8/8 finished: 4 edited, 4 failed" in done.stderr  # the progress lines of a non-terminal run
    assert "plan: caption: up to 1 VLM actors" in done.stderr and "no-file failed: unreadable: image" in done.stderr

    index = _index(out)
    assert [row["row"] for row in index] == list(range(1, 9))
    failed = {r["id"]: r for r in index if r["status"] == "failed"}
    assert set(failed) == {"broken", "no-file", "empty", "steps"}
    assert failed["broken"]["reason"].startswith("invalid_image: image:") and not failed["broken"]["retry"]
    assert failed["no-file"]["reason"].startswith("unreadable: image: cannot read missing.png") and failed["no-file"]["retry"]
    assert failed["empty"]["reason"].startswith("invalid_row: prompt:") and not failed["empty"]["retry"]
    assert failed["steps"]["reason"].startswith("invalid_row: options.steps:") and not failed["steps"]["retry"]
    succeeded = [r for r in index if r["status"] == "succeeded"]
    assert len(succeeded) == 4
    for row in succeeded:
        key = row["key"]
        folder = out / "items" / key[:2] / key[2:4] / key  # sharded by key: no folder holds every item
        assert row["folder"] == str(folder.relative_to(out)) and row["paths"]["edited"] == f"{row['folder']}/edited.png"
        assert Image.open(folder / "edited.png").size == (400, 400) and Image.open(folder / "collage.png").format == "PNG"
        assert json.loads((folder / "result.json").read_text())["status"] == row["edit_status"]
        assert row["edit_status"] in {"edited", "no_edit", "fallback"} and row["caption"] and row["seed"] == 3
        assert {"caption", "generate", "select", "total"} <= set(json.loads(row["timings_s"]))
        assert set(json.loads(row["nodes"])) == {"decode", "caption", "generate", "select", "finish"}
        assert row["image_sha256"] == hashlib.sha256(Path(row["image"]).read_bytes()).hexdigest()
        assert (folder / "video.mp4").exists() == (row["row"] == 2) == ("video" in row["paths"])
        for kind in ("source", "collage", "edited"):
            assert max(Image.open(folder / f"thumb-{kind}.jpg").size) <= 320

    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == 8 and summary["by_status"] == {"succeeded": 4, "failed": 4}
    assert summary["this_run"]["finished"] == 8 and summary["this_run"]["items_per_minute"] > 0
    assert set(summary["stage_seconds"]) == {"caption", "generate", "select", "rank", "align", "total"}  # f2f.pipeline.STAGES
    report = (out / "report.html").read_text()
    assert report.count("<tr>") == 9 and "<script" not in report
    for row in succeeded:
        assert f"{row['folder']}/thumb-edited.jpg" in report

    # Again, one retry allowed: only the missing image is tried again (the others can only fail)
    again = _bulk(head, str(manifest), "--out", str(out), "--config", str(config_file), "--max-retries", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "8 items, 1 to do" in again.stderr
    records = _records(out)
    assert len(records) == 9 and sorted(r["attempts"] for r in records if r["id"] == "no-file") == [1, 2]
    third = _bulk(head, str(manifest), "--out", str(out), "--config", str(config_file), "--max-retries", "1")
    assert third.returncode == 0 and "nothing to do: all 8 items finished earlier" in third.stderr and "plan:" not in third.stderr
    assert len(_records(out)) == 9


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
    index = _index(out)
    assert [r["status"] for r in index] == ["succeeded", "succeeded"]
    assert json.loads((out / index[0]["paths"]["result"]).read_text())["caption"]


def test_an_item_over_its_timeout_fails_and_the_run_goes_on(head: dict[str, str], config_file: Path, tmp_path: Path) -> None:
    rows = _posedit(2)
    # Four videos of 193 frames x 1000 steps: about 60 s on a 2-core Xeon (2026-12-06), three times the timeout. One
    # such video alone took 16 s there: under the timeout, so the item succeeded and the test failed on that machine.
    rows[0]["seeds"] = [1, 2, 3, 4]
    rows[0]["options"] = {"steps": 1000, "num_frames": 193}
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    # 20 s: over a tiny edit even on a loaded 2-core machine (a few seconds alone), far under the slow one's minutes
    done = _bulk(head, str(path), "--out", str(out), "--config", str(config_file), "--item-timeout", "20")
    assert done.returncode == 0, done.stderr[-3000:]
    index = _index(out)
    assert index[0]["status"] == "failed" and index[0]["reason"].startswith("timeout: its videos took longer than 20 s")
    assert index[1]["status"] == "succeeded", index[1]  # the generator was freed: the cancelled video stopped


def _tiny_profiles() -> list[str]:
    """The first tiny profile (by name) of each way the bulk stages differ by family, besides `tiny`'s (the tests
    above: a letterboxed canvas, temporal captions): a free canvas, and ChronoEdit's instruction captions with its
    one-candidate clip, which the select stage does not put to the VLM. What else differs by family is inside the
    backends, which the service tier runs on every tiny profile (`tests/serve/test_profiles.py`)."""
    from f2f.catalogue import load_catalogue
    from f2f.config import load_config

    catalogue = load_catalogue()
    picked: dict[tuple[bool, str | None], str] = {}
    for name in ["tiny", *sorted(catalogue.profiles)]:
        if catalogue.is_tiny(name):
            config = load_config(overrides={"profile": name})
            picked.setdefault((config.video.width is None, config.caption.style), name)
    return [name for name in picked.values() if name != "tiny"]


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
    (entry,) = _index(out)
    assert entry["status"] == "succeeded", entry
    folder = out / entry["folder"]
    assert Image.open(folder / "edited.png").size == Image.open(row["image"]).size
    from f2f.config import load_config

    video = load_config(config, {"profile": profile}).video
    assert json.loads((folder / "result.json").read_text())["canvas"]["fit"] == ("free" if video.width is None else "letterbox")
