"""What `f2f eval` writes into OUT: metrics.json, items.csv, metrics.md and SVG plots.

- `metrics.json`: `summary` (the mean of every metric over the items that
  have it, and how many), `protocol`, `clip` (the model, or "not staged"),
  `dataset`, `edits`, `layout`, `items` (every row: metrics, problems, path).
- `items.csv`: one line per item, the metric columns and the problems.
- `metrics.md`: the summary as a markdown table (CLIP columns say "not staged"
  when no CLIP model was given, never a number), then every problem.
- `fidelity.svg`: per item, source LPIPS (fidelity) against edit accuracy
  (target LPIPS where there is ground truth, else 1 - CLIP text score).
- `path.svg`: when frames were kept, every metric along the path, frame by frame.

Plots are plain SVG written here (no plotting library).
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Any

from f2f.eval.harness import COLUMNS, Evaluation

CLIP_COLUMNS = ("clip_i_source", "clip_i_target", "clip_text")


def write_report(out: Path, evaluation: Evaluation, meta: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    summary = evaluation.summary()
    data = {"summary": summary, "clip": evaluation.clip, **meta, "items": evaluation.rows}
    files = {
        "metrics.json": json.dumps(data, indent=2) + "\n",
        "items.csv": _csv(evaluation.rows),
        "metrics.md": _markdown(summary, evaluation, meta),
        "fidelity.svg": fidelity_plot(evaluation.rows),
    }
    paths = [r for r in evaluation.rows if r.get("path")]
    if paths:
        files["path.svg"] = path_plot(paths)
    for name, text in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
    return [out / name for name in files]


def _fmt(value: Any, column: str, clip: str) -> str:
    if column in CLIP_COLUMNS and clip in ("not staged", "not asked for"):
        return clip
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "evaluated", *COLUMNS, "problems"])
    for row in rows:
        values = ["" if row.get(c) is None else f"{row[c]:.6g}" for c in COLUMNS]
        writer.writerow([row["id"], row["evaluated"], *values, "; ".join(row["problems"])])
    return buffer.getvalue()


def _markdown(summary: dict[str, Any], evaluation: Evaluation, meta: dict[str, Any]) -> str:
    shown = [c for c in COLUMNS if summary[f"{c}_n"] or c in CLIP_COLUMNS]
    lines = [
        f"# f2f eval: {meta.get('dataset')}",
        "",
        f"{summary['evaluated']} of {summary['items']} items evaluated; edits: {meta.get('edits')}; CLIP: {evaluation.clip}.",
        f"Protocol: {json.dumps(meta.get('protocol'))}.",
        "",
        "| " + " | ".join(shown) + " |",
        "|" + "---|" * len(shown),
        "| " + " | ".join(_fmt(summary[c], c, evaluation.clip) for c in shown) + " |",
        "",
        "| metric | items |",
        "|---|---|",
        *(f"| {c} | {summary[f'{c}_n']} |" for c in shown),
    ]
    problems = [(r["id"], p) for r in evaluation.rows for p in r["problems"]]
    if problems:
        lines += ["", f"## Problems ({len(problems)})", "", *(f"- {i}: {p}" for i, p in problems)]
    return "\n".join(lines) + "\n"


# --- plots -----------------------------------------------------------------------------------------

_W, _H, _M = 640, 420, 60
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _svg(title: str, xlabel: str, ylabel: str, body: list[str], xr: tuple[float, float], yr: tuple[float, float]) -> str:
    ticks = []
    for k in range(5):
        fx, fy = xr[0] + (xr[1] - xr[0]) * k / 4, yr[0] + (yr[1] - yr[0]) * k / 4
        x, y = _M + (_W - 2 * _M) * k / 4, _H - _M - (_H - 2 * _M) * k / 4
        ticks.append(f"<text x='{x:.0f}' y='{_H - _M + 16}' text-anchor='middle'>{fx:.3g}</text>")
        ticks.append(f"<text x='{_M - 6}' y='{y + 4:.0f}' text-anchor='end'>{fy:.3g}</text>")
    return "\n".join(
        [
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H}' font-family='sans-serif' font-size='11'>",
            "<rect width='100%' height='100%' fill='white'/>",
            f"<text x='{_W / 2}' y='20' text-anchor='middle' font-size='14'>{html.escape(title)}</text>",
            f"<line x1='{_M}' y1='{_H - _M}' x2='{_W - _M}' y2='{_H - _M}' stroke='black'/>",
            f"<line x1='{_M}' y1='{_M}' x2='{_M}' y2='{_H - _M}' stroke='black'/>",
            f"<text x='{_W / 2}' y='{_H - 20}' text-anchor='middle'>{html.escape(xlabel)}</text>",
            f"<text x='16' y='{_H / 2}' text-anchor='middle' transform='rotate(-90 16 {_H / 2})'>{html.escape(ylabel)}</text>",
            *ticks,
            *body,
            "</svg>\n",
        ]
    )


def _scale(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values, default=0.0), max(values, default=1.0)
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _xy(x: float, y: float, xr: tuple[float, float], yr: tuple[float, float]) -> tuple[float, float]:
    return (_M + (_W - 2 * _M) * (x - xr[0]) / (xr[1] - xr[0]), _H - _M - (_H - 2 * _M) * (y - yr[0]) / (yr[1] - yr[0]))


def fidelity_plot(rows: list[dict[str, Any]]) -> str:
    """Source LPIPS (x) against edit accuracy (y: target LPIPS, else 1 - CLIP text score), one dot per item."""
    with_target = any(r.get("target_lpips") is not None for r in rows)
    ykey = "target_lpips" if with_target else "clip_text"
    points = [
        (r["source_lpips"], r[ykey] if with_target else 1 - r[ykey], r["id"])
        for r in rows
        if r.get("source_lpips") is not None and r.get(ykey) is not None
    ]
    xr, yr = _scale([p[0] for p in points]), _scale([p[1] for p in points])
    body = []
    for x, y, name in points:
        px, py = _xy(x, y, xr, yr)
        dot = f"<circle cx='{px:.1f}' cy='{py:.1f}' r='3.5' fill='#1f77b4' fill-opacity='0.7'>"
        body.append(f"{dot}<title>{html.escape(name)}</title></circle>")
    ylabel = "target LPIPS (lower: closer to the ground truth)" if with_target else "1 - CLIP text score"
    return _svg(
        f"fidelity against edit accuracy ({len(points)} items)", "source LPIPS (lower: more faithful)", ylabel, body, xr, yr
    )


def path_plot(rows: list[dict[str, Any]]) -> str:
    """The mean of every metric over the items, frame by frame along the path (frame 0 is the source)."""
    keys = [
        k
        for k in ("source_lpips", "target_lpips", "clip_text", "clip_i_source", "pose_error")
        if any(k in s for r in rows for s in r["path"])
    ]
    series = {}
    for key in keys:
        by_frame: dict[int, list[float]] = {}
        for row in rows:
            for step in row["path"]:
                if step.get(key) is not None:
                    by_frame.setdefault(step["frame"], []).append(step[key])
        series[key] = sorted((f, sum(v) / len(v)) for f, v in by_frame.items())
    xr = _scale([f for s in series.values() for f, _ in s])
    yr = _scale([v for s in series.values() for _, v in s])
    body = []
    for n, (key, points) in enumerate(series.items()):
        colour = _COLOURS[n % len(_COLOURS)]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (_xy(f, v, xr, yr) for f, v in points))
        body.append(f"<polyline points='{coords}' fill='none' stroke='{colour}' stroke-width='2'/>")
        body.append(f"<text x='{_M + 8}' y='{_M + 14 * n}' fill='{colour}'>{key}</text>")
    return _svg(f"metrics along the path (mean of {len(rows)} items)", "frame", "metric", body, xr, yr)
