"""`bench/families.py --tiny`: every family's architecture at tiny sizes on the CPU, and its refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

pytestmark = pytest.mark.models

BENCH = Path(__file__).resolve().parents[2] / "bench" / "families.py"
FAMILIES = [
    "cogvideox-5b",
    "cogvideox1.5-5b",
    "wan2.1-i2v-14b-480p",
    "wan2.2-i2v-a14b",
    "wan2.2-i2v-a14b-lightning",
    "wan2.2-ti2v-5b",
    "ltx-video",
    "chronoedit-14b",
    "chronoedit-14b-distill",
    "chronoedit-14b-think",
]


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """One tiny run of every family, plain only (compiling each on 2 cores would take minutes), 2 timed steps."""
    out = tmp_path_factory.mktemp("families") / "rows.json"
    done = run("--tiny", "--modes", "plain", "--steps", "2", "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(out.read_text())


def test_the_tiny_run_writes_one_row_per_family_with_positive_timings(tiny_run: Any) -> None:
    done, data = tiny_run
    assert [row["profile"] for row in data["rows"]] == FAMILIES, data["skipped"]
    for row in data["rows"]:
        assert row["mode"] == "plain" and row["timed_steps"] == 2
        assert min(row["step_s"], row["text_s"], row["prep_s"], row["vae_s"]) > 0
        assert row["edit_s"] == pytest.approx(row["text_s"] + row["prep_s"] + row["steps"] * row["step_s"] + row["vae_s"])
    steps = {row["profile"]: row["steps"] for row in data["rows"]}
    assert steps["wan2.2-i2v-a14b"] == 40 and steps["wan2.2-i2v-a14b-lightning"] == 4  # the profile's, not the timed
    assert data["machine"]["torch"] and data["skipped"] == {}
    assert len([line for line in done.stdout.splitlines() if "(estimate)" in line]) == len(FAMILIES)


def test_an_unknown_family_is_refused_by_its_flag() -> None:
    done = run("--tiny", "--families", "warp", timeout=120)
    assert done.returncode == 2 and "--families: unknown warp" in done.stderr


def test_a_spent_budget_starts_no_family_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    done = run("--tiny", "--families", "cogvideox-5b,ltx-video", "--modes", "plain", "--budget-s", "0", "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["rows"] == [] and set(data["skipped"]) == {"cogvideox-5b plain", "ltx-video plain"}
    assert "# ltx-video plain: skipped (the 0 s budget was spent)" in done.stdout


def test_the_gpu_run_families_phase_rehearses_on_a_cpu(tmp_path: Path) -> None:
    """PHASE=families bench/gpu-run.sh without nvidia-smi: the import check, then families.py (tiny), not generate.py."""
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(tmp_path),
        "PHASE": "families",
        "FAMILIES": "cogvideox-5b,ltx-video",
    }
    done = subprocess.run(["bash", str(BENCH.with_name("gpu-run.sh"))], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "gpu run: imports ok" in (tmp_path / "machine.txt").read_text()
    (result,) = tmp_path.glob("*-cpu-families.json")
    data = json.loads(result.read_text())
    assert [row["profile"] for row in data["rows"]] == ["cogvideox-5b", "ltx-video"]
    assert data["setup"]["timed_steps"] == 1 and not (tmp_path / "single.log").exists()
