"""`f2f bulk` before any model loads: rows checked by the edit's rules, `--strict`, bad rows never run; no Ray."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from f2f import cli


def manifest(tmp_path: Path, rows: list[dict]) -> Path:
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    (tmp_path / "notes.png").write_text("not an image\n")
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


BAD_ROWS = [
    {"image": "a.png", "prompt": "walk", "seeds": [-1]},
    {"image": "a.png", "prompt": "walk", "options": {"num_frames": 10}},
    {"image": "notes.png", "prompt": "walk"},
]


def test_strict_stops_on_rows_the_edits_rules_refuse_before_any_work(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"image": "a.png", "prompt": "good"}, *BAD_ROWS])
    result = CliRunner().invoke(cli.main, ["bulk", str(path), "--out", str(tmp_path / "out"), "--profile", "tiny", "--strict"])
    assert result.exit_code == 2, result.output
    assert "bad row: row 2: seeds.0: Input should be greater than or equal to 0 (got -1)" in result.output
    assert "bad row: row 3: options.num_frames: the generator produces only 8k + 1 frames" in result.output
    assert "bad row: row 4: image: not a readable image" in result.output
    assert "3 bad rows (--strict); nothing was run" in result.output
    assert not (tmp_path / "out").exists()  # no output folder claimed, no model, no Ray


def test_without_strict_bad_rows_are_recorded_with_their_reason_and_never_run(tmp_path: Path) -> None:
    path = manifest(tmp_path, BAD_ROWS)  # nothing left to run: no model loads and Ray never starts
    out = tmp_path / "out"
    for _ in range(2):  # a rerun does not try them again
        result = CliRunner().invoke(cli.main, ["bulk", str(path), "--out", str(out), "--profile", "tiny"])
        assert result.exit_code == 0, result.output
        assert "nothing to do" in result.output and "3 bad rows" in result.output
        rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
        assert [(r["row"], r["status"]) for r in rows] == [(1, "invalid"), (2, "invalid"), (3, "invalid")]
        assert rows[0]["reason"].startswith("seeds.0: ") and rows[1]["reason"].startswith("options.num_frames: ")
        assert not (out / "journal.jsonl").exists()
    assert json.loads((out / "summary.json").read_text())["by_status"] == {"invalid": 3}
