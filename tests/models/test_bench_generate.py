"""`bench/generate.py --tiny` runs (the CI smoke check of the GPU benchmark) and its table holds what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

pytestmark = pytest.mark.models

BENCH = Path(__file__).resolve().parents[2] / "bench" / "generate.py"


def test_the_tiny_benchmark_prints_one_row_per_mode_with_exact_modes_at_zero_distance(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    command = [sys.executable, str(BENCH), "--tiny", "--modes", "plain,fused,first_block", "--steps", "2", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| mode")]
    assert [row.split(" | ")[0] for row in rows] == ["| plain", "| fused", "| first_block (approx.)"]
    data = json.loads(out.read_text())
    by_mode = {row["mode"]: row for row in data["rows"]}
    assert by_mode["fused"]["rel_l2"] < 1e-5  # same weights, same seed: an exact switch stays on the plain latents
    assert all(row["step_s"] > 0 and row["total_s"] >= row["denoise_s"] for row in data["rows"])
    assert data["machine"]["torch"] and data["peak_tflops"] > 0


def test_the_benchmark_refuses_bad_arguments_by_name() -> None:
    for args, words in (
        (["--tiny", "--modes", "plain,warp"], "--modes: unknown warp"),
        (["--tiny", "--frames", "10"], "--frames"),
    ):
        done = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and words in done.stderr


def test_the_split_benchmark_runs_under_torchrun_and_rank_0_prints() -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2", str(BENCH), "--tiny", "--parallel", "1x2"]
    done = subprocess.run([*command, "--modes", "plain", "--steps", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "parallel 1x2" in done.stdout
    assert len([line for line in done.stdout.splitlines() if line.startswith("| plain")]) == 1  # rank 0 only
