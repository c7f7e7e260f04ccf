"""Bulk runs at scale with zero-cost fake models (`zero_cost.py`): the driver's memory does not grow with the number
of items, and a driver killed halfway through a 10,000-item run leaves a rerun only the rest.

Each run is its own driver process with its own local Ray (RAY_ADDRESS=local), as `f2f bulk` runs on a laptop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.data")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from zero_cost import result_of, write_manifest  # noqa: E402

ENV = {"RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": f"{REPO}:{HERE}"}
BLOCK_ROWS = "250"  # cheap items: large blocks (the orchestration's cost per item is what is measured here)


def _driver(manifest: Path, out: Path) -> list[str]:
    return [sys.executable, str(HERE / "zero_cost.py"), str(manifest), str(out), "--block-rows", BLOCK_ROWS]


def _run(manifest: Path, out: Path) -> dict:
    done = subprocess.run(_driver(manifest, out), env={**os.environ, **ENV}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return result_of(done.stdout)


def _finished(out: Path) -> int:
    """Index records written so far (Parquet footers only)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part).metadata.num_rows for part in (out / "index").glob("*.parquet"))


def _succeeded_keys(out: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [
        key
        for part in (out / "index").glob("*.parquet")
        for key, status in zip(*pq.read_table(part, columns=["key", "status"]).to_pydict().values(), strict=True)
        if status == "succeeded"
    ]


def _peak_rss_mb(pid: int) -> float:
    """A live process's peak resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def test_driver_memory_is_flat_and_a_killed_run_leaves_only_the_rest(tmp_path: Path) -> None:
    small = _run(write_manifest(tmp_path / "small" / "m.jsonl", 1_000), tmp_path / "small-out")
    assert small["summary"]["by_status"] == {"succeeded": 1_000}

    big, out = write_manifest(tmp_path / "big" / "m.jsonl", 10_000), tmp_path / "big-out"
    driver = subprocess.Popen(_driver(big, out), env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (out / "index").is_dir() or _finished(out) < 5_000:
        assert driver.poll() is None and time.monotonic() < deadline, "the run ended or stalled before halfway"
        time.sleep(0.5)
    peak_halfway = _peak_rss_mb(driver.pid)  # after scanning all 10,000 rows and streaming half of them
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    settled = -1
    while settled != _finished(out):  # a task may still be finishing its batch as its cluster goes down
        settled = _finished(out)
        time.sleep(2)
    before = len(set(_succeeded_keys(out)))
    assert 5_000 <= before < 10_000

    resumed = _run(big, out)
    keys = _succeeded_keys(out)
    assert len(keys) == len(set(keys)) == 10_000  # every item finished exactly once: none redone
    assert resumed["summary"]["by_status"] == {"succeeded": 10_000}
    assert resumed["summary"]["this_run"]["finished"] == 10_000 - before

    # Ten times the items, the same bound: what the driver holds does not grow with them
    bound = 1.25 * small["peak_rss_mb"]
    assert peak_halfway <= bound and resumed["peak_rss_mb"] <= bound, (small, peak_halfway, resumed["peak_rss_mb"])
