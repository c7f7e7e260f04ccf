"""Bulk reports from the Parquet index (latest records, summary, HTML, progress), what a rerun retries, the actor
pools' plan and the output folder's owner; no Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from f2f.bulk import report
from f2f.bulk.command import _Progress
from f2f.bulk.manifest import ManifestError
from f2f.bulk.run import Plan, RunStats, _done, _latest, claim_folder, run_settings
from f2f.bulk.stages import INDEX_SCHEMA_FIELDS, _write_index, index_schema
from f2f.bulk.storage import Location
from f2f.config import load_config

pa = pytest.importorskip("pyarrow", reason="f2f bulk needs its extra: pip install 'f2f[bulk]'")

TIMINGS = {"caption": 1.0, "generate": 4.0, "select": 1.0, "total": 6.0}


def record(row: int, status: str, attempts: int = 1, **extra: Any) -> dict[str, Any]:
    """An index record as `f2f.bulk.stages.finish` writes it (key `k<row>`, folder only when succeeded)."""
    key = f"k{row:031d}"
    values: dict[str, Any] = {name: None for name, _ in INDEX_SCHEMA_FIELDS}
    values.update(
        row=row,
        key=key,
        id=f"item{row}",
        image=f"img{row}.png",
        prompt=f"edit {row}",
        status=status,
        retry=True,
        attempts=attempts,
        video=False,
        nodes="{}",
        finished_at=float(attempts),
    )
    if status == "succeeded":
        values.update(folder=f"items/{key[:2]}/{key[2:4]}/{key}", edit_status="edited", timings_s=json.dumps(TIMINGS))
    values.update(extra)
    return values


def write_parts(out: Path, *parts: list[dict[str, Any]]) -> Location:
    root = Location.of(out)
    for records in parts:
        _write_index(root, records, "run1")
    return root


# --- the index: each key's latest record ------------------------------------------------------------


def test_latest_keeps_each_keys_record_with_the_most_attempts_in_row_order(tmp_path: Path) -> None:
    root = write_parts(
        tmp_path,
        [record(3, "succeeded", attempts=3), record(1, "failed", attempts=1, reason="error: first")],
        [record(2, "failed", attempts=1), record(3, "failed", attempts=2, reason="timeout: slow")],
        [record(3, "failed", attempts=1), record(1, "succeeded", attempts=2)],
    )
    assert len(list((tmp_path / "index").glob("part-*.parquet"))) == 3
    table = report.latest(root)
    assert table.schema == index_schema()
    assert [(r["row"], r["status"], r["attempts"]) for r in table.to_pylist()] == [
        (1, "succeeded", 2),
        (2, "failed", 1),
        (3, "succeeded", 3),
    ]


def test_latest_of_a_folder_with_no_index_is_an_empty_table(tmp_path: Path) -> None:
    table = report.latest(Location.of(tmp_path))
    assert table.num_rows == 0 and table.schema == index_schema()
    assert report.read_index(Location.of(tmp_path)) == []


def test_read_index_gives_the_paths_of_succeeded_items_only(tmp_path: Path) -> None:
    root = write_parts(
        tmp_path,
        [record(1, "succeeded"), record(2, "failed", reason="invalid_row: prompt: empty"), record(3, "succeeded", video=True)],
    )
    rows = report.read_index(root)
    folder = rows[0]["folder"]
    assert rows[0]["paths"] == {
        "edited": f"{folder}/edited.png",
        "collage": f"{folder}/collage.png",
        "result": f"{folder}/result.json",
    }
    assert rows[1]["paths"] == {} and rows[1]["reason"] == "invalid_row: prompt: empty"
    assert rows[2]["paths"]["video"] == f"{rows[2]['folder']}/video.mp4"
    assert {"id", "image", "prompt", "status", "reason"} <= set(rows[0])


# --- summary.json ------------------------------------------------------------------------------------

ROWS = [
    record(1, "succeeded", caption="c", selected_frame=8, seed=3),
    record(2, "failed", reason="unreadable: image: cannot read img2.png"),
    record(
        4,
        "succeeded",
        edit_status="fallback",
        timings_s=json.dumps({"caption": 3.0, "generate": 8.0, "select": 1.0, "total": 12.0}),
    ),
]


def test_summary_counts_statuses_pending_rows_and_stage_times() -> None:
    data = report.summary(ROWS, 5, {"seconds": 30, "succeeded": 2, "failed": 1})
    assert data["items"] == 5
    assert data["by_status"] == {"succeeded": 2, "failed": 1, "pending": 2}  # 5 manifest rows, 3 finished
    assert data["by_edit_status"] == {"edited": 1, "fallback": 1}
    assert data["this_run"] == {"finished": 3, "succeeded": 2, "failed": 1, "seconds": 30, "items_per_minute": 4.0}
    assert data["stage_seconds"]["generate"] == {"median_s": 6.0, "mean_s": 6.0}
    assert data["stage_seconds"]["total"]["median_s"] == 9.0
    assert "rank" not in data["stage_seconds"]  # no record timed it


def test_a_folder_with_every_row_finished_has_no_pending_count() -> None:
    assert "pending" not in report.summary(ROWS, 3, {"seconds": 1, "succeeded": 0, "failed": 0})["by_status"]


def test_failed_items_are_not_counted_as_edited_nor_in_the_rate() -> None:
    """Every item failing at once is 0 items a minute, not thousands; a failed item's timings are not a stage's."""
    failed = record(2, "failed", reason="error: boom", timings_s=json.dumps({"generate": 100.0}))
    data = report.summary([failed], 1, {"seconds": 0.01, "succeeded": 0, "failed": 1})
    assert data["this_run"]["items_per_minute"] == 0.0 and data["this_run"]["failed"] == 1
    assert data["by_status"] == {"failed": 1} and data["stage_seconds"] == {}


def test_a_run_of_no_seconds_has_no_rate() -> None:
    assert report.summary(ROWS, 3, {"seconds": 0.0, "succeeded": 0, "failed": 0})["this_run"]["items_per_minute"] is None


# --- report.html ------------------------------------------------------------------------------------


def test_write_reports_writes_the_summary_and_a_self_contained_page(tmp_path: Path) -> None:
    write_parts(
        tmp_path,
        [
            record(1, "succeeded", caption="A <b>bold</b> move.", selected_frame=8, seed=3),
            record(2, "failed", reason="invalid_image: image: not an image", prompt="<script>x</script>"),
        ],
        [record(3, "failed", reason="timeout: its videos took longer than 5 s on a generator")],
    )
    data = report.write_reports(str(tmp_path), 4, {"seconds": 60, "succeeded": 1, "failed": 2})
    assert json.loads((tmp_path / "summary.json").read_text())["by_status"] == data["by_status"]
    assert data["by_status"] == {"succeeded": 1, "failed": 2, "pending": 1}
    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page  # nothing runs, nothing fetched
    assert "A &lt;b&gt;bold&lt;/b&gt; move." in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "invalid_image: image: not an image" in page and "frame 8, seed 3" in page
    folder = record(1, "succeeded")["folder"]
    for kind in ("source", "collage", "edited"):
        assert f"src='{folder}/thumb-{kind}.jpg'" in page
    assert page.count("<img ") == 3  # the failed items have no thumbnails
    order = [page.index(f"<div class='small'>item{row}</div>") for row in (2, 3, 1)]
    assert order == sorted(order)  # failed first, then the rest, each in row order
    assert not list(tmp_path.glob("*.tmp"))


def test_the_page_shows_at_most_report_rows_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "REPORT_ROWS", 2)
    write_parts(tmp_path, [record(1, "succeeded"), record(2, "succeeded"), record(3, "failed", reason="r")])
    report.write_reports(str(tmp_path), 3, {"seconds": 1, "succeeded": 0, "failed": 0})
    page = (tmp_path / "report.html").read_text()
    assert "The first 2 of 3 finished items (failed first)" in page
    assert "item3" in page and "item1" in page and "item2" not in page


def test_the_progress_line_counts_failed_items_as_failed_and_only_edits_in_the_rate() -> None:
    stats = RunStats(total=10, skipped=2, succeeded=3, failed=3, started=0.0)
    assert _Progress.line(stats, now=120.0) == "8/10 finished: 3 edited, 3 failed, 2 earlier; 1.5 edits/min, ETA 0.7 min"
    every_one_failed = RunStats(total=4, failed=4, started=0.0)
    assert _Progress.line(every_one_failed, now=0.01).startswith("4/4 finished: 0 edited, 4 failed, 0 earlier; 0.0 edits/min")


# --- what a rerun does again ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "max_retries", "done"),
    [
        pytest.param({"status": None, "retry": None, "attempts": None}, 2, False, id="never-finished"),
        pytest.param({"status": "succeeded", "retry": True, "attempts": 1}, 2, True, id="succeeded"),
        pytest.param({"status": "failed", "retry": True, "attempts": 1}, 2, False, id="model-error"),
        pytest.param({"status": "failed", "retry": False, "attempts": 1}, 2, True, id="can-only-fail"),
        pytest.param({"status": "failed", "retry": True, "attempts": 2}, 2, False, id="one-retry-left"),
        pytest.param({"status": "failed", "retry": True, "attempts": 3}, 2, True, id="had-its-retries"),
        pytest.param({"status": "failed", "retry": True, "attempts": 1}, 0, True, id="no-retries"),
    ],
)
def test_done_rows_are_succeeded_can_only_fail_or_had_their_retries(row: dict[str, Any], max_retries: int, done: bool) -> None:
    assert _done({"key": "k", "row": 1, **row}, max_retries) is done


def test_latest_of_a_key_group_is_its_record_with_the_most_attempts() -> None:
    group = pa.table({"key": ["k", "k", "k"], "status": ["failed", "succeeded", "failed"], "attempts": [1, 3, 2]})
    assert _latest(group).to_pylist() == [{"key": "k", "status": "succeeded", "attempts": 3}]


def test_run_settings_are_the_config_fields_that_change_an_edit() -> None:
    tiny = load_config(None, {"profile": "tiny"})
    settings = run_settings(tiny)
    assert set(settings) == {"profile", "video", "caption", "selection", "seed", "num_seeds"}
    assert settings["profile"] == "tiny" and json.dumps(settings)  # JSON: part of every key


# --- the actor pools' plan ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        (0, (1, 1, 0.0, 0.0)),
        (1, (1, 1, 0.15, 0.7)),
        (2, (1, 1, 0.5, 1)),
        (4, (1, 3, 0.5, 1)),
        (8, (1, 7, 0.5, 1)),
    ],
)
def test_actor_pools_follow_the_cluster_gpus(gpus: float, expected: tuple[float, ...]) -> None:
    plan = Plan.for_cluster(gpus)
    assert (plan.vlms, plan.generators, plan.vlm_gpus, plan.generator_gpus) == expected
    assert plan.block_rows == 1


def test_explicit_pool_sizes_and_block_rows_win() -> None:
    plan = Plan.for_cluster(4, vlms=2, generators=1, block_rows=16)
    assert (plan.vlms, plan.generators, plan.vlm_gpus, plan.generator_gpus, plan.block_rows) == (2, 1, 0.5, 1, 16)
    assert Plan.for_cluster(0, generators=3).generators == 3


def test_the_plan_describes_every_pool() -> None:
    text = Plan.for_cluster(4).describe()
    assert "caption: up to 1 VLM actors" in text and "generate: up to 3 actors (1 GPU each)" in text
    assert "1 item(s) a block" in text


# --- the output folder's owner ------------------------------------------------------------------------


def manifest(tmp_path: Path, name: str, sha256: str) -> tuple[Location, str]:
    return Location.of(tmp_path / name), sha256


def test_an_output_folder_belongs_to_one_manifest(tmp_path: Path) -> None:
    out = Location.of(tmp_path / "out")
    claim_folder(out, *manifest(tmp_path, "a.jsonl", "a" * 64))
    owner = json.loads((tmp_path / "out" / "bulk.json").read_text())
    assert owner == {"manifest": str(tmp_path / "a.jsonl"), "manifest_sha256": "a" * 64}
    claim_folder(out, *manifest(tmp_path, "a.jsonl", "a" * 64))  # the same manifest: a resume
    with pytest.raises(ManifestError) as caught:
        claim_folder(out, *manifest(tmp_path, "b.jsonl", "b" * 64))
    assert "holds the results of another manifest" in str(caught.value) and "a.jsonl" in str(caught.value)
    assert json.loads((tmp_path / "out" / "bulk.json").read_text()) == owner


def test_the_same_manifest_under_another_name_is_the_same_owner(tmp_path: Path) -> None:
    out = Location.of(tmp_path / "out")
    claim_folder(out, *manifest(tmp_path, "a.jsonl", "a" * 64))
    claim_folder(out, *manifest(tmp_path, "renamed.jsonl", "a" * 64))
    assert json.loads((tmp_path / "out" / "bulk.json").read_text())["manifest"] == str(tmp_path / "renamed.jsonl")
