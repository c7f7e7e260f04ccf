"""`f2f bulk` before Ray starts or a model loads: a malformed manifest or another manifest's output folder is refused
with exit status 2, naming the lines and fields, and leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from f2f import cli


def manifest(tmp_path: Path, lines: list[str], name: str = "m.jsonl") -> Path:
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def bulk(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, ["bulk", *args])
    return result.exit_code, result.output


def test_a_malformed_manifest_is_refused_with_its_lines_and_fields_and_leaves_no_folder(tmp_path: Path) -> None:
    good = json.dumps({"image": "a.png", "prompt": "walk"})
    lines = [good, "{not json", json.dumps({"image": "a.png", "prompt": "walk", "options": {"speed": 2}}), "[1, 2]"]
    out = tmp_path / "out"
    code, output = bulk(str(manifest(tmp_path, lines)), "--out", str(out), "--profile", "tiny")
    assert code == 2 and "malformed, nothing was run" in output, output
    assert "line 2: line: not JSON" in output and "line 3: options.speed: unknown option" in output
    assert "line 4: line: must be a JSON object" in output and "line 1" not in output
    assert "Traceback" not in output and not out.exists()


def test_bad_values_are_not_the_scans_business(tmp_path: Path) -> None:
    """An empty prompt or an option out of range is that item's failure when it runs, not a refusal of the run."""
    from f2f.bulk.manifest import scan_manifest
    from f2f.bulk.storage import Location

    lines = [json.dumps({"image": "a.png", "prompt": ""}), json.dumps({"image": "a.png", "prompt": "x", "options": {"steps": 0}})]
    scanned = scan_manifest(Location.of(manifest(tmp_path, lines)), {}, Location.of(tmp_path / "parts"))
    assert scanned.rows == 2


def test_another_manifests_folder_and_a_wrong_suffix_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "bulk.json").write_text(json.dumps({"manifest": "/elsewhere/first.jsonl", "manifest_sha256": "0" * 64}))
    code, output = bulk(str(manifest(tmp_path, [json.dumps({"image": "a.png", "prompt": "walk"})])), "--out", str(out))
    assert code == 2 and "holds the results of another manifest (/elsewhere/first.jsonl)" in output
    assert sorted(p.name for p in out.iterdir()) == ["bulk.json"]  # its scan and index untouched
    code, output = bulk(str(manifest(tmp_path, ["a.png,walk"], "list.txt")), "--out", str(tmp_path / "c"))
    assert code == 2 and "must be a .jsonl, .csv or .parquet file (got 'list.txt')" in output and not (tmp_path / "c").exists()
