"""`f2f eval` end to end on a small manifest of real PosEdit images: bad rows are listed and the rest evaluated,
frames along the path, the report files, CLIP "not staged", and missing or corrupt weights."""

from __future__ import annotations

import csv
import json
import shutil
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner
from PIL import Image

from f2f import cli
from f2f.bulk.stages import INDEX_SCHEMA_FIELDS, _write_index, item_folder
from f2f.bulk.storage import Location

pytest.importorskip("torch")
pytest.importorskip("ai_edge_litert")


def _invoke(*args):
    return CliRunner().invoke(cli.main, ["eval", *map(str, args)])


@pytest.fixture
def manifest(tmp_path, posedit):
    """Six rows: good, no ground truth, kept frames, a missing edit, an unreadable edit, an edit of another shape."""
    src, tgt, edits = posedit / "src_images", posedit / "tgt_images", posedit / "edits"
    (tmp_path / "broken.png").write_text("not an image")
    Image.open(src / "a2_s1.png").resize((400, 200)).save(tmp_path / "wide.png")
    frames = tmp_path / "a27_s5" / "candidates"
    frames.mkdir(parents=True)
    shutil.copy(src / "a27_s5.png", frames / "frame_004.png")  # the path passes through the source...
    shutil.copy(tgt / "a27_s5.png", frames / "frame_008.png")  # ...and ends at the ground truth
    shutil.copy(tgt / "a27_s5.png", tmp_path / "a27_s5" / "edited.png")
    rows = [
        {"id": "good", "source": str(src / "a2_s1.png"), "edit": str(edits / "a2_s1.jpg"), "target": str(tgt / "a2_s1.png")},
        {"id": "no_gt", "source": str(src / "a2_s2.png"), "edit": str(edits / "a2_s2.jpg")},
        {"id": "frames", "source": str(src / "a27_s5.png"), "edit": "a27_s5/edited.png", "target": str(tgt / "a27_s5.png")},
        {"id": "missing", "source": str(src / "a2_s3.png"), "edit": "nowhere.png", "target": str(tgt / "a2_s3.png")},
        {"id": "broken", "source": str(src / "a2_s3.png"), "edit": "broken.png", "target": str(tgt / "a2_s3.png")},
        {"id": "wide", "source": str(src / "a2_s1.png"), "edit": "wide.png", "target": str(tgt / "a2_s1.png")},
    ]
    path = tmp_path / "edits.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bad_rows_are_listed_and_the_rest_is_evaluated(manifest, tmp_path):
    result = _invoke(manifest, "--out", tmp_path / "out", "--size", "256")  # the default metrics: lpips, pose, clip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    rows = {r["id"]: r for r in data["items"]}
    assert [r["id"] for r in data["items"] if r["evaluated"]] == ["good", "no_gt", "frames"]
    assert data["summary"]["evaluated"] == 3 and data["summary"]["items"] == 6
    assert rows["missing"]["problems"][0].startswith("unreadable edit") and "nowhere.png" in rows["missing"]["problems"][0]
    assert rows["broken"]["problems"][0].startswith("unreadable edit")
    assert rows["wide"]["problems"] == ["size mismatch: edit is 400x200, source 400x400 (aspect ratios must agree)"]
    assert rows["no_gt"]["problems"] == ["no ground truth: the row has no target (target metrics skipped)"]
    assert rows["no_gt"]["source_lpips"] > 0 and rows["no_gt"].get("target_lpips") is None
    # the summary is the mean over the rows that have each metric
    lpips = [rows[i]["source_lpips"] for i in ("good", "no_gt", "frames")]
    # metrics.json rounds the summary to 4 decimals: the mean of the rows is within that rounding (5e-5) of it
    assert data["summary"]["source_lpips"] == pytest.approx(sum(lpips) / 3, abs=1e-4)
    assert data["summary"]["target_lpips_n"] == 2 and data["summary"]["pose_pck_n"] == 2
    # the ground truth as its own edit: LPIPS 0, every joint right
    assert rows["frames"]["target_lpips"] == pytest.approx(0, abs=1e-6)  # identical inputs: exactly 0
    assert (rows["frames"]["pose_error"], rows["frames"]["pose_pck"], rows["frames"]["pose_pck_moved"]) == (0.0, 1.0, 1.0)
    assert rows["frames"]["pose_pck_source"] < 1.0  # the baseline: the source's pose is not the target's
    # CLIP is a default metric but not staged: never a number, and a line on stderr says so
    assert "clip: not staged, skipped (give --clip DIR" in result.output
    assert data["clip"] == "not staged" and data["summary"]["clip_text"] is None
    markdown = (tmp_path / "out" / "metrics.md").read_text()
    assert "| not staged | not staged | not staged |" in markdown and "- wide: size mismatch" in markdown
    with (tmp_path / "out" / "items.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["id"] for r in table] == list(rows) and table[3]["source_lpips"] == ""


def test_frames_along_the_path_are_scored_frame_by_frame(manifest, tmp_path):
    result = _invoke(manifest, "--out", tmp_path / "out", "--metrics", "lpips", "--size", "256")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["protocol"]["size"] == 256
    path = next(r for r in data["items"] if r["id"] == "frames")["path"]
    assert [step["frame"] for step in path] == [0, 4, 8]
    assert path[1]["source_lpips"] == pytest.approx(0, abs=1e-6)  # frame 4 is the source
    assert path[2]["target_lpips"] == pytest.approx(0, abs=1e-6)  # frame 8 is the ground truth
    assert path[1]["target_lpips"] > 0.05 and path[2]["source_lpips"] > 0.05
    svg = (tmp_path / "out" / "path.svg").read_text()
    assert svg.count("<polyline") == 2 and "source_lpips" in svg
    fidelity = (tmp_path / "out" / "fidelity.svg").read_text()
    assert fidelity.count("<circle") == 2  # the two items with a target
    for text in (svg, fidelity):
        assert ElementTree.fromstring(text).tag == "{http://www.w3.org/2000/svg}svg"  # well-formed SVG


def _bulk_run(folder, manifest, rows):
    """A bulk run's folder as `f2f bulk` leaves it: bulk.json naming `manifest`, the items' files under their keys and
    one index part; `rows`: (id, image, status, reason, the edit to copy as edited.png or None)."""
    pytest.importorskip("pyarrow", reason="a bulk run's index is Parquet: the bulk extra")
    records = []
    for number, (item_id, image, status, reason, edit) in enumerate(rows, 1):
        key = f"{number:032x}"
        record = {name: None for name, _ in INDEX_SCHEMA_FIELDS}
        record.update(row=number, key=key, id=item_id, image=image, prompt=f"edit {item_id}", status=status, reason=reason)
        record.update(retry=True, attempts=1, video=False)
        if edit is not None:
            (folder / item_folder(key)).mkdir(parents=True)
            Image.open(edit).save(folder / item_folder(key) / "edited.png")
            record["folder"] = item_folder(key)
        records.append(record)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bulk.json").write_text(json.dumps({"manifest": str(manifest), "manifest_sha256": "0" * 64}))
    _write_index(Location.of(folder), records, "run1")
    return folder


def test_a_bulk_run_gives_the_edits_of_a_benchmark_by_id(tmp_path, posedit):
    rows = [
        ("a2_s1", "a2_s1.png", "succeeded", None, posedit / "edits" / "a2_s1.jpg"),
        ("a2_s2", "a2_s2.png", "failed", "error: RuntimeError: actor lost", None),
    ]
    bulk = _bulk_run(tmp_path / "bulk", posedit / "m.jsonl", rows)
    result = _invoke(posedit, "--edits", bulk, "--out", tmp_path / "out", "--metrics", "lpips")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    by_id = {r["id"]: r for r in data["items"]}
    assert data["summary"]["evaluated"] == 1 and by_id["a2_s1"]["target_lpips"] > 0
    assert by_id["a2_s2"]["problems"] == ["no edit: the bulk item is failed (error: RuntimeError: actor lost)"]
    assert by_id["a4_s1"]["problems"][0].startswith("no edit: a4_s1 is not in")


def test_a_bulk_run_is_evaluated_from_its_index(tmp_path, posedit):
    """Its sources beside the manifest that bulk.json names (or absolute), its prompts and edits from the index."""
    shutil.copy(posedit / "src_images" / "a2_s1.png", tmp_path / "a2_s1.png")
    rows = [
        ("a2_s1", "a2_s1.png", "succeeded", None, posedit / "edits" / "a2_s1.jpg"),
        ("a2_s2", str(posedit / "src_images" / "a2_s2.png"), "succeeded", None, posedit / "edits" / "a2_s2.jpg"),
        ("bad", None, "failed", "invalid_row: prompt: String should have at least 1 character", None),
    ]
    bulk = _bulk_run(tmp_path / "bulk", tmp_path / "m.jsonl", rows)
    result = _invoke(bulk, "--out", tmp_path / "out", "--metrics", "lpips")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    by_id = {r["id"]: r for r in data["items"]}
    assert [r["id"] for r in data["items"] if r["evaluated"]] == ["a2_s1", "a2_s2"]
    assert by_id["a2_s1"]["source_lpips"] > 0 and by_id["a2_s2"]["source_lpips"] > 0
    assert (
        by_id["bad"]["problems"][0]
        == "no edit: the bulk item is failed (invalid_row: prompt: String should have at least 1 character)"
    )


def test_missing_or_corrupt_weights_name_the_file_and_the_install_command(manifest, tmp_path, weights):
    # lpips and pose only: the default (all three) adds a line that CLIP, not given, is skipped
    result = _invoke(manifest, "--out", tmp_path / "out", "--weights", tmp_path / "none", "--metrics", "lpips,pose")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "lpips_alex_v0.1.safetensors: metric weights missing" in result.output
    assert "f2f eval install-weights" in result.output
    corrupt = tmp_path / "corrupt"
    shutil.copytree(weights, corrupt)
    with (corrupt / "pose_detection.tflite").open("r+b") as f:
        f.truncate(1000)
    result = _invoke(manifest, "--out", tmp_path / "out", "--weights", corrupt, "--metrics", "pose")
    assert result.exit_code == 2
    assert "pose_detection.tflite: sha256" in result.output and "reinstall with `f2f eval install-weights`" in result.output
    assert not (tmp_path / "out").exists()


def test_bad_arguments_are_one_line_errors(tmp_path, posedit):
    result = _invoke(tmp_path, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "dataset: must be a PosEdit or TEdBench folder" in result.output
    result = _invoke(posedit, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "--edits: a posedit folder needs --edits" in result.output
    result = _invoke(posedit, "--edits", posedit / "edits", "--out", tmp_path / "out", "--metrics", "lpips,fid")
    assert result.exit_code == 2 and "--metrics: must be a comma-separated subset of lpips, pose, clip" in result.output


def test_the_path_is_read_from_a_kept_video(tmp_path, posedit):
    pytest.importorskip("imageio_ffmpeg")
    from f2f.canvas import letterbox
    from f2f.video import write_mp4

    source, target = (Image.open(posedit / d / "a27_s5.png").convert("RGB") for d in ("src_images", "tgt_images"))
    placed = letterbox(source, 480, 320)
    clip = [placed.image] + [letterbox(Image.blend(source, target, k / 8), 480, 320).image for k in range(1, 9)]
    item = tmp_path / "run" / "a27_s5"
    item.mkdir(parents=True)
    write_mp4(clip, item / "video.mp4", fps=8)
    target.save(item / "edited.png")
    result = {"letterbox_box": list(placed.box), "source_size": [400, 400], "candidate_frames": [4, 8]}
    (item / "result.json").write_text(json.dumps(result))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps(
            {
                "id": "a27_s5",
                "source": str(posedit / "src_images" / "a27_s5.png"),
                "edit": str(item / "edited.png"),
                "target": str(posedit / "tgt_images" / "a27_s5.png"),
            }
        )
        + "\n"
    )
    out = _invoke(manifest, "--out", tmp_path / "out", "--metrics", "lpips", "--size", "256")
    assert out.exit_code == 0, out.output
    (entry,) = json.loads((tmp_path / "out" / "metrics.json").read_text())["items"]
    path = entry["path"]
    assert [s["frame"] for s in path] == [0, 4, 8]
    # halfway, then at the target: closer to the target and further from the source frame by frame
    assert path[1]["target_lpips"] > path[2]["target_lpips"] and path[1]["source_lpips"] < path[2]["source_lpips"]
    # the last frame is the target through H.264 and the letterbox: lossy, so not 0 (0.0095 here), but far under
    # the source's distance from the target (0.16); a quarter of it also rules out the halfway blend (0.09, over half)
    assert path[2]["target_lpips"] < 0.25 * path[0]["target_lpips"]
