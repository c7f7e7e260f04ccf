"""Calibration against the paper: `f2f eval` on the paper's own Frame2Frame outputs reproduces its PosEdit row
(source LPIPS 0.14, target LPIPS 0.15), and the ground truth evaluated as an edit its GT row (source LPIPS 0.08),
within 0.02 (method.md; the protocol is in docs/quality.md)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from f2f import cli

pytest.importorskip("torch")

PAPER_FRAME2FRAME = {"source_lpips": 0.14, "target_lpips": 0.15}
PAPER_GROUND_TRUTH = {"source_lpips": 0.08, "target_lpips": 0.0}


def _eval(posedit, edits, out):
    result = CliRunner().invoke(cli.main, ["eval", str(posedit), "--edits", str(edits), "--out", str(out), "--metrics", "lpips"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())


def test_the_papers_posedit_rows_are_reproduced(posedit, tmp_path):
    f2f_row = _eval(posedit, posedit / "edits", tmp_path / "f2f")
    gt_row = _eval(posedit, posedit / "tgt_images", tmp_path / "gt")
    for row, paper in ((f2f_row, PAPER_FRAME2FRAME), (gt_row, PAPER_GROUND_TRUTH)):
        assert row["summary"]["evaluated"] == 58  # every PosEdit item matched its edit, whatever its extension and size
        assert row["summary"]["problems"] == 0
        for key, published in paper.items():
            assert row["summary"][key] == pytest.approx(published, abs=0.02), key
    # the undocumented extras in edits/ (a2s1.jpg, ...) are not items; the per-item rows are the 58 of annotations.json
    assert sorted(r["id"] for r in f2f_row["items"]) == sorted(r["id"] for r in gt_row["items"])
    assert "a2s1" not in {r["id"] for r in f2f_row["items"]}
