"""What a bulk run tells its people: summary.json and report.html, made from the index.

Rules:

- The index (`index/*.parquet`, `f2f.bulk.stages.INDEX_SCHEMA_FIELDS`) is
  the truth: one record per finished attempt. `latest` keeps each key's
  last record, in row order; rows of the manifest with no record are
  pending.
- `summary.json`: counts by status (succeeded, failed, pending) and by edit
  status; this run's items that succeeded and failed, and its rate
  (`items_per_minute`: items edited, failed ones not counted); per stage
  the median and mean seconds over succeeded items.
- `report.html`: one self-contained page (inline CSS, no scripts, nothing
  fetched): failed items first, then the others in row order, at most
  `REPORT_ROWS` (the index holds them all): source | collage | edited
  thumbnails (each item's `thumb-*.jpg`, lazily loaded), prompt, temporal
  caption, chosen frame, status or reason.
- Both are written whole (`f2f.bulk.storage`), in a bucket as in a folder.
"""

from __future__ import annotations

import html
import json
import statistics
import time
from typing import Any

from f2f.bulk.storage import Location
from f2f.pipeline import STAGES

REPORT_ROWS = 5000


def latest(out: Location) -> Any:
    """Each key's latest index record (a pyarrow Table, in row order); an empty table when nothing finished yet."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from f2f.bulk.stages import index_schema

    parts = out.child("index").files(".parquet")
    if not parts:
        return index_schema().empty_table()
    table = pa.concat_tables(pq.read_table(part, filesystem=out.fs, schema=index_schema()) for part in parts)
    table = table.sort_by([("key", "ascending"), ("attempts", "ascending"), ("finished_at", "ascending")])
    keys = table["key"]
    last = [*pc.not_equal(keys.slice(0, len(keys) - 1), keys.slice(1)).to_pylist(), True] if len(keys) else []
    return table.filter(pa.array(last, pa.bool_())).sort_by("row")


def read_index(out: Location) -> list[dict[str, Any]]:
    """The latest record of every finished item, in row order, with `paths` (relative to the output folder)."""
    rows = latest(out).to_pylist()
    for row in rows:
        row["paths"] = _paths(row)
    return rows


def _paths(row: dict[str, Any]) -> dict[str, str]:
    if row["status"] != "succeeded" or not row["folder"]:
        return {}
    names = ("edited.png", "collage.png", "result.json") + (("video.mp4",) if row["video"] else ())
    return {name.split(".")[0]: f"{row['folder']}/{name}" for name in names}


def write_reports(out_url: str, manifest_rows: int, this_run: dict[str, Any]) -> dict[str, Any]:
    """summary.json and report.html in the output folder `out_url`, for a manifest of `manifest_rows` rows; the summary."""
    out = Location.of(out_url)
    rows = read_index(out)
    data = summary(rows, manifest_rows, this_run)
    out.child("summary.json").write_text(json.dumps(data, indent=2) + "\n")
    out.child("report.html").write_text(_html(rows, data))
    return data


def summary(rows: list[dict[str, Any]], manifest_rows: int, this_run: dict[str, Any]) -> dict[str, Any]:
    """The counts of the whole folder (`rows`: the latest records) and of this run (seconds, succeeded, failed)."""
    counts: dict[str, int] = {}
    edits: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        if row.get("edit_status"):
            edits[row["edit_status"]] = edits.get(row["edit_status"], 0) + 1
    if manifest_rows > len(rows):
        counts["pending"] = manifest_rows - len(rows)
    timings = [json.loads(r["timings_s"]) for r in rows if r["status"] == "succeeded" and r.get("timings_s")]
    stages: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        times = [t[stage] for t in timings if stage in t]
        if times:
            stages[stage] = {"median_s": round(statistics.median(times), 3), "mean_s": round(statistics.fmean(times), 3)}
    seconds, succeeded, failed = this_run["seconds"], this_run["succeeded"], this_run["failed"]
    return {
        "items": manifest_rows,
        "by_status": counts,
        "by_edit_status": edits,
        "this_run": {
            "finished": succeeded + failed,
            "succeeded": succeeded,
            "failed": failed,
            "seconds": round(seconds, 1),
            "items_per_minute": round(60 * succeeded / seconds, 2) if seconds > 0 else None,
        },
        "stage_seconds": stages,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}
img{max-height:160px;display:block}
.succeeded{color:#17653b}.failed,.invalid{color:#a11}.pending{color:#777}
.prompt{max-width:28em}.small{color:#666;font-size:12px}
"""


def _html(rows: list[dict[str, Any]], data: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(data["by_status"].items()))
    rate = data["this_run"]["items_per_minute"]
    head = f"<h1>f2f bulk edit</h1><p>{data['items']} rows: {html.escape(counts)}"
    head += f"; this run {rate} items/min</p>" if rate else "</p>"
    shown = sorted(rows, key=lambda r: (r["status"] != "failed", r["row"]))[:REPORT_ROWS]
    if len(rows) > len(shown):
        head += f"<p>The first {len(shown)} of {len(rows)} finished items (failed first); index/ holds them all.</p>"
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'><title>f2f bulk edit</title>",
        f"<style>{_CSS}</style></head><body>{head}",
        "<table><tr><th>row</th><th>source</th><th>collage</th><th>edited</th><th>edit</th></tr>",
    ]
    for row in shown:
        cells = [f"<td>{row['row']}<div class='small'>{html.escape(row['id'] or '')}</div></td>"]
        for kind in ("source", "collage", "edited"):
            if row["folder"]:
                thumb = html.escape(f"{row['folder']}/thumb-{kind}.jpg")
                cells.append(f"<td><img loading='lazy' src='{thumb}' alt='{kind}'></td>")
            else:
                cells.append("<td></td>")
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
