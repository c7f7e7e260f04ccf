"""Files in a benchmark's edits folder that match no item (the shared PosEdit edits hold 23 such, `a2s1.jpg` beside
`a2_s1.jpg`) are reported as a problem of the dataset, never passed over as "0 problems"."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from f2f import cli
from f2f.eval.dataset import STRAY_NAMES_SHOWN, load_dataset

ITEMS = ("a2_s1", "a2_s2")


@pytest.fixture
def benchmark(tmp_path, posedit):
    """Two PosEdit items with their edits, and the stray kinds: misnamed edits, a file that is no image, a folder."""
    root = tmp_path / "posedit"
    for folder in ("src_images", "tgt_images"):
        (root / folder).mkdir(parents=True)
        for name in ITEMS:
            shutil.copy(posedit / folder / f"{name}.png", root / folder)
    annotations = json.loads((posedit / "annotations.json").read_text())
    (root / "annotations.json").write_text(json.dumps([a for a in annotations if a["image"][:-4] in ITEMS]))
    edits = tmp_path / "edits"
    edits.mkdir()
    for name in ITEMS:
        shutil.copy(posedit / "edits" / f"{name}.jpg", edits)
    return root, edits


def test_stray_files_are_a_problem_of_the_dataset(benchmark):
    root, edits = benchmark
    assert load_dataset(root, edits).problems == []  # every entry is an item's edit: nothing to say
    for name in ("a2s1.jpg", "a2s2.jpg", "notes.txt"):
        (edits / name).write_text("x")
    (edits / "other").mkdir()
    (edits / ".DS_Store").write_text("x")  # hidden: no one's edit, and nobody's mistake
    data = load_dataset(root, edits)
    assert [item.edit.name for item in data.items] == ["a2_s1.jpg", "a2_s2.jpg"] and not any(i.problems for i in data.items)
    assert data.problems == [
        f"stray edits: 4 files in {edits} match no item and were not evaluated: a2s1.jpg (item a2_s1?), "
        "a2s2.jpg (item a2_s2?), notes.txt, other (an item's edit is ITEM.png/.jpg/.webp or ITEM/edited.png)"
    ]
    for n in range(STRAY_NAMES_SHOWN + 2):
        (edits / f"z{n}.png").write_text("x")
    (problem,) = load_dataset(root, edits).problems
    assert problem.startswith(f"stray edits: {4 + STRAY_NAMES_SHOWN + 2} files") and ", and 6 more (an item's" in problem


def test_f2f_eval_reports_the_stray_files(benchmark, tmp_path):
    pytest.importorskip("torch")
    root, edits = benchmark
    (edits / "a2s1.jpg").write_text("x")
    result = CliRunner().invoke(
        cli.main, ["eval", str(root), "--edits", str(edits), "--out", str(tmp_path / "out"), "--metrics", "lpips"]
    )
    assert result.exit_code == 0, result.output
    line = f"f2f: problem: stray edits: 1 file in {edits} match no item and were not evaluated: a2s1.jpg (item a2_s1?)"
    assert line in result.output
    assert "2/2 items evaluated, 1 problem;" in result.output
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["problems"] == [
        line.removeprefix("f2f: problem: ") + " (an item's edit is ITEM.png/.jpg/.webp or ITEM/edited.png)"
    ]
