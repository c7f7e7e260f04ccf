"""bench/perf_table.py: docs/performance.md's GPU figures are generated from the results files, and kept in step."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import perf_table  # noqa: E402
from generate import Row  # noqa: E402


def results_file(tmp_path: Path) -> Path:
    row = dict(step_s=1.8, denoise_s=9.0, steps=5, vae_s=6.1, text_s=0.05, first_s=40.2, peak_gib=38.5, tflops=366.7)
    rows = [
        Row(mode="plain", paper_s=96.1, speedup=1.0, **row),
        Row(mode="first_block", paper_s=None, approximate=True, max_abs_diff=0.2, rel_l2=0.01, **{**row, "denoise_s": 6.0}),
    ]
    data = {
        "setup": {"model": "CogVideoX-5B-I2V", "width": 720, "height": 480, "frames": 49, "timed_steps": 5, "guidance": 6.0}
        | {"dtype": "bfloat16", "parallel": "1x1", "step_flops": 6.6e14},
        "machine": {"date": "2026-12-24", "gpu": "NVIDIA H200", "driver": "580.159.04", "cuda": "13.0", "torch": "2.11.0"},
        "ceilings": [
            {"name": "matmul bfloat16", "shape": "8192x8192x8192", "ms": 1.4, "tflops": 785.4},
            {"name": "attention cudnn", "shape": "2x48x17776x64", "skipped": "RuntimeError: no cuDNN"},
        ],
        "rows": [asdict(r) for r in rows],
        "skipped": {"fp8": "the 400 s budget was spent"},
    }
    path = tmp_path / "2026-12-24-nvidia-h200.json"
    path.write_text(json.dumps(data))
    return path


def test_a_results_file_becomes_a_section_with_the_card_the_ceilings_and_every_mode(tmp_path: Path) -> None:
    block = perf_table.render([results_file(tmp_path)])
    assert "### NVIDIA H200, 2026-12-24 (`bench/results/2026-12-24-nvidia-h200.json`)" in block
    assert "driver 580.159.04" in block and "5 timed steps" in block
    assert "| matmul bfloat16 | 8192x8192x8192 | 1.400 | 785 |" in block
    assert "not run: RuntimeError: no cuDNN" in block
    plain = next(line for line in block.splitlines() if line.startswith("| plain"))
    assert "| 1.800 | 9.00 (5) |" in plain and "| 96.1 |" in plain and "| 47% |" in plain  # 366.7 of 785.4 TFLOP/s
    cache = next(line for line in block.splitlines() if line.startswith("| first_block (approx.)"))
    assert "| - |" in cache  # no 50-step estimate for a cache
    assert "Not run: `fp8`: the 400 s budget was spent." in block


def test_without_results_the_block_says_none_were_measured() -> None:
    assert "No results yet" in perf_table.render([])


def test_docs_performance_shows_what_the_results_files_give() -> None:
    assert perf_table.main(["--check"]) == 0, "run: python bench/perf_table.py"
