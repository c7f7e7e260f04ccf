"""What a bulk run tells its people: index.jsonl, summary.json and report.html, rebuilt from the journal.

Rules:

- `index.jsonl`: one line per manifest row, in manifest order: `row`, `id`,
  `status` (succeeded, failed, invalid: a bad row, pending: not run yet),
  `reason`, `edit_status`, `caption`, `selected_frame`, `seed`, `attempts`,
  `timings_s`, `paths` (relative to DIR).
- `summary.json`: counts by status and by edit status; this run's items
  that succeeded and failed, and its rate (`items_per_minute`: items edited,
  failed ones not counted: a run whose items all fail at once edits 0 a
  minute); per stage the median and mean seconds over succeeded items.
- `report.html`: one self-contained page (inline CSS, no scripts, nothing
  fetched) listing every row: source | collage | edited thumbnails (JPEG
  files in `thumbs/`, lazily loaded so thousands of rows stay light),
  prompt, temporal caption, chosen frame, status or reason. It needs only
  the DIR folder beside it.
- Every file is written atomically.
"""

from __future__ import annotations

import html
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from f2f.bulk.manifest import Item, RowError
from f2f.pipeline import STAGES


def index_rows(items: list[Item], errors: list[RowError], journal_by_id: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per manifest row, in row order."""
    rows: list[dict[str, Any]] = []
    for item in items:
        entry = journal_by_id.get(item.id)
        base = {"row": item.row, "id": item.id, "image": str(item.image), "prompt": item.prompt}
        if entry is None:
            rows.append({**base, "status": "pending", "reason": None})
            continue
        paths = {}
        if entry["status"] == "succeeded":
            names = ("edited.png", "collage.png", "result.json", "video.mp4")
            paths = {name.split(".")[0]: f"items/{item.id}/{name}" for name in names if name != "video.mp4" or item.options.video}
        keep = ("status", "reason", "edit_status", "caption", "selected_frame", "seed", "attempts", "timings_s")
        rows.append({**base, **{k: entry.get(k) for k in keep}, "paths": paths})
    for error in errors:
        rows.append({"row": error.row, "id": None, "status": "invalid", "reason": f"{error.field}: {error.message}"})
    return sorted(rows, key=lambda r: r["row"])


def summary(rows: list[dict[str, Any]], run_seconds: float, run_succeeded: int, run_failed: int = 0) -> dict[str, Any]:
    """The counts of the whole folder (`rows`) and of this run (its seconds, its items that succeeded and failed)."""
    counts: dict[str, int] = {}
    edits: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        if row.get("edit_status"):
            edits[row["edit_status"]] = edits.get(row["edit_status"], 0) + 1
    stages: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        times = [r["timings_s"][stage] for r in rows if r["status"] == "succeeded" and stage in (r.get("timings_s") or {})]
        if times:
            stages[stage] = {"median_s": round(statistics.median(times), 3), "mean_s": round(statistics.fmean(times), 3)}
    return {
        "items": len(rows),
        "by_status": counts,
        "by_edit_status": edits,
        "this_run": {
            "finished": run_succeeded + run_failed,
            "succeeded": run_succeeded,
            "failed": run_failed,
            "seconds": round(run_seconds, 1),
            "items_per_minute": round(60 * run_succeeded / run_seconds, 2) if run_seconds > 0 else None,
        },
        "stage_seconds": stages,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_reports(root: Path, rows: list[dict[str, Any]], summary_data: dict[str, Any]) -> None:
    """index.jsonl, summary.json and report.html in `root`."""
    _atomic_text(root / "index.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    _atomic_text(root / "summary.json", json.dumps(summary_data, indent=2) + "\n")
    _atomic_text(root / "report.html", _html(root, rows, summary_data))


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}
img{max-height:160px;display:block}
.succeeded{color:#17653b}.failed,.invalid{color:#a11}.pending{color:#777}
.prompt{max-width:28em}.small{color:#666;font-size:12px}
"""


def _html(root: Path, rows: list[dict[str, Any]], data: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(data["by_status"].items()))
    rate = data["this_run"]["items_per_minute"]
    head = f"<h1>f2f bulk edit</h1><p>{data['items']} rows: {html.escape(counts)}"
    head += f"; this run {rate} items/min</p>" if rate else "</p>"
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'><title>f2f bulk edit</title>",
        f"<style>{_CSS}</style></head><body>{head}",
        "<table><tr><th>row</th><th>source</th><th>collage</th><th>edited</th><th>edit</th></tr>",
    ]
    for row in rows:
        cells = [f"<td>{row['row']}<div class='small'>{html.escape(row['id'] or '')}</div></td>"]
        for kind in ("source", "collage", "edited"):
            thumb = f"thumbs/{row['id']}-{kind}.jpg"
            present = row["id"] is not None and (root / thumb).is_file()
            cells.append(f"<td><img loading='lazy' src='{html.escape(thumb)}' alt='{kind}'></td>" if present else "<td></td>")
        status = row["status"] + (f" ({row['edit_status']})" if row.get("edit_status") else "")
        text = f"<div class='prompt'><b>{html.escape(row.get('prompt') or '')}</b></div>"
        if row.get("caption"):
            text += f"<div class='prompt'>caption: {html.escape(row['caption'])}</div>"
        if row.get("selected_frame") is not None:
            text += f"<div>frame {row['selected_frame']}, seed {row.get('seed')}</div>"
        text += f"<div class='{row['status']}'>{html.escape(status)}</div>"
        if row.get("reason"):
            text += f"<div class='small'>{html.escape(row['reason'])}</div>"
        cells.append(f"<td>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table></body></html>\n")
    return "\n".join(lines)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
