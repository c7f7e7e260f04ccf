"""Bulk reports from the journal (index rows, summary, HTML, progress), what a rerun retries, the actor pool defaults; no Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from f2f.bulk.command import _Progress
from f2f.bulk.manifest import Item, Manifest, RowError, RowOptions
from f2f.bulk.report import index_rows, summary, write_reports
from f2f.bulk.runner import Outcome, OutputFolder, Resources, RunStats, plan_items, run_settings
from f2f.config import load_config

TINY = load_config(None, {"profile": "tiny"})


def _item(row: int, item_id: str, video: bool = False) -> Item:
    return Item(row, item_id, Path(f"/data/{item_id}.png"), f"edit {item_id}", None, RowOptions(video=video), "0" * 64)


def _entry(item_id: str, status: str, **extra: object) -> dict:
    return {"id": item_id, "key": "k", "status": status, "attempts": 1, **extra}


JOURNAL = {
    "a": _entry("a", "succeeded", edit_status="edited", caption="A <b>bold</b> move.", selected_frame=8, seed=3,
                timings_s={"caption": 1.0, "generate": 4.0, "select": 1.0, "total": 6.0}),
    "b": _entry("b", "failed", reason="invalid_image: image: not an image"),
    "v": _entry("v", "succeeded", edit_status="fallback", caption="c", selected_frame=4, seed=3,
                timings_s={"caption": 3.0, "generate": 8.0, "select": 1.0, "total": 12.0}),
}  # fmt: skip


def test_index_has_one_row_per_manifest_row_in_order() -> None:
    items = [_item(1, "a"), _item(2, "b"), _item(4, "pending"), _item(5, "v", video=True)]
    rows = index_rows(items, [RowError(3, "prompt", "Field required")], JOURNAL)
    assert [(r["row"], r["status"]) for r in rows] == [
        (1, "succeeded"), (2, "failed"), (3, "invalid"), (4, "pending"), (5, "succeeded")
    ]  # fmt: skip
    assert rows[2]["reason"] == "prompt: Field required" and rows[2]["id"] is None
    assert rows[0]["paths"] == {"edited": "items/a/edited.png", "collage": "items/a/collage.png", "result": "items/a/result.json"}
    assert rows[4]["paths"]["video"] == "items/v/video.mp4"
    assert rows[1]["reason"].startswith("invalid_image") and rows[1]["paths"] == {}


def test_summary_counts_statuses_and_stage_times() -> None:
    rows = index_rows([_item(1, "a"), _item(2, "b"), _item(3, "v")], [], JOURNAL)
    data = summary(rows, run_seconds=30, run_succeeded=2, run_failed=1)
    assert data["by_status"] == {"succeeded": 2, "failed": 1} and data["by_edit_status"] == {"edited": 1, "fallback": 1}
    assert data["this_run"] == {"finished": 3, "succeeded": 2, "failed": 1, "seconds": 30, "items_per_minute": 4.0}
    assert data["stage_seconds"]["generate"] == {"median_s": 6.0, "mean_s": 6.0}
    assert data["stage_seconds"]["total"]["median_s"] == 9.0


def test_report_escapes_text_and_links_only_existing_thumbnails(tmp_path: Path) -> None:
    (tmp_path / "thumbs").mkdir()
    (tmp_path / "thumbs" / "a-edited.jpg").write_bytes(b"jpg")
    rows = index_rows([_item(1, "a"), _item(2, "b")], [], JOURNAL)
    write_reports(tmp_path, rows, summary(rows, 10, 1, 1))
    page = (tmp_path / "report.html").read_text()
    assert "A &lt;b&gt;bold&lt;/b&gt; move." in page and "<b>bold</b>" not in page
    assert "thumbs/a-edited.jpg" in page and "thumbs/a-source.jpg" not in page
    assert "invalid_image: image: not an image" in page and "<script" not in page
    assert len((tmp_path / "index.jsonl").read_text().splitlines()) == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_failed_items_are_not_counted_as_edited_nor_in_the_rate() -> None:
    """Every item failing at once is 0 items a minute, not thousands."""
    rows = index_rows([_item(2, "b")], [], JOURNAL)
    data = summary(rows, run_seconds=0.01, run_succeeded=0, run_failed=1)
    assert data["this_run"]["items_per_minute"] == 0.0 and data["this_run"]["failed"] == 1
    assert data["by_status"] == {"failed": 1}


def test_the_progress_line_counts_failed_items_as_failed_and_only_edits_in_the_rate() -> None:
    stats = RunStats(total=10, skipped=2, succeeded=3, failed=3, started=0.0)
    assert _Progress.line(stats, now=120.0) == "8/10 finished: 3 edited, 3 failed, 2 earlier; 1.5 edits/min, ETA 0.7 min"
    every_one_failed = RunStats(total=4, failed=4, started=0.0)
    assert _Progress.line(every_one_failed, now=0.01).startswith("4/4 finished: 0 edited, 4 failed, 0 earlier; 0.0 edits/min")


def _outcome(item: Item, status: str, attempts: int, retry: bool = True) -> Outcome:
    return Outcome(item.id, item.key(run_settings(TINY)), item.row, status, attempts, reason="r", retry=retry)


def test_a_rerun_retries_failed_items_but_not_those_that_can_only_fail(tmp_path: Path) -> None:
    items = [_item(1, "flaky"), _item(2, "broken"), _item(3, "tried"), _item(4, "done"), _item(5, "new")]
    out = OutputFolder(tmp_path / "out", Manifest(tmp_path / "m.jsonl", "0" * 64, items, []))
    out.record(_outcome(items[0], "failed", 1))  # a model error: worth another try
    out.record(_outcome(items[1], "failed", 1, retry=False))  # an InvalidInput of the row's own data
    out.record(_outcome(items[2], "failed", 3))  # had its retries
    out.record(_outcome(items[3], "succeeded", 1))
    plan = plan_items(items, out, TINY, max_retries=2)
    assert [(item.id, attempts) for item, _, attempts in plan.todo] == [("flaky", 1), ("new", 0)]
    assert plan.skipped == 3


def test_a_journal_line_written_before_retry_existed_is_retried(tmp_path: Path) -> None:
    item = _item(1, "old")
    out = OutputFolder(tmp_path / "out", Manifest(tmp_path / "m.jsonl", "0" * 64, [item], []))
    entry = _outcome(item, "failed", 1).to_json()
    del entry["retry"]
    out.journal_path.write_text(json.dumps(entry) + "\n")
    assert [i.id for i, _, _ in plan_items([item], out, TINY, max_retries=2).todo] == ["old"]


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        (0, (1, 1, 0, 0)),
        (1, (1, 1, 0.3, 0.7)),
        (4, (1, 3, 1, 1)),
        (8, (1, 7, 1, 1)),
    ],
)
def test_actor_pools_follow_the_cluster_gpus(gpus: float, expected: tuple) -> None:
    r = Resources.for_cluster(gpus)
    assert (r.vlms, r.generators, r.vlm_gpus, r.generator_gpus) == expected


def test_explicit_actor_counts_win() -> None:
    r = Resources.for_cluster(4, vlms=2, generators=1)
    assert (r.vlms, r.generators, r.generator_gpus) == (2, 1, 1)
