"""`f2f bulk MANIFEST --out DIR` (also `python -m f2f.bulk`, the Ray job entry point) and `f2f bulk from-posedit`.

Order of a run: load the config, read the manifest and check every row by
the edit's own rules (bad rows are listed and never run; with `--strict`
any bad row stops it here), claim the output folder and read its
journal (a rerun with nothing left to do writes the reports and stops here,
with no model loaded and no Ray started), load the models (a
profile's folder is checked first), join or start Ray, start the actor
pools, edit what is not done yet, then write
index.jsonl, summary.json and report.html (also when interrupted: Ctrl-C
keeps every finished item and reports the rest as pending).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from f2f.bulk.manifest import ManifestError, posedit_manifest, read_manifest
from f2f.cli_group import EXIT_INTERRUPTED, RunByDefault

if TYPE_CHECKING:
    from f2f.bulk.manifest import Manifest
    from f2f.bulk.runner import OutputFolder, RunStats
    from f2f.config import F2FConfig

PROGRESS_EVERY_S = 10.0


@click.group(cls=RunByDefault, subcommand_metavar="MANIFEST --out DIR [OPTIONS] | from-posedit FOLDER --out FILE")
def main() -> None:
    """Edit every row of a manifest (JSONL or CSV) on Ray, resumably: `bulk MANIFEST --out DIR` (= `bulk run ...`)."""


@main.command("run")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--profile", help="Model profile from the catalogue (`f2f models list`); `tiny` runs on any CPU.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="YAML config file.")
@click.option("--models", "models_dir", type=click.Path(file_okay=False, path_type=Path), help="The profile's checkpoints.")
@click.option("--input-root", type=click.Path(file_okay=False, path_type=Path), help="Relative images are found here.")
@click.option("--strict", is_flag=True, help="Stop before any work if a row is bad.")
@click.option("--max-retries", default=2, show_default=True, type=click.IntRange(0, 100), help="Reruns retry a failed item.")
@click.option("--item-timeout", type=click.FloatRange(min=1), help="Seconds an item's videos may take on a generator.")
@click.option("--generators", type=click.IntRange(1), help="Generator actors (default: from the cluster's GPUs).")
@click.option("--vlms", type=click.IntRange(1), help="VLM actors (default 1).")
@click.option("--verbose", is_flag=True, help="Let Ray's actors and the model libraries print their progress bars.")
def run_command(
    manifest: Path,
    out_dir: Path,
    profile: str | None,
    config_path: Path | None,
    models_dir: Path | None,
    input_root: Path | None,
    strict: bool,
    max_retries: int,
    item_timeout: float | None,
    generators: int | None,
    vlms: int | None,
    verbose: bool,
) -> None:
    """Edit every row of MANIFEST into OUT (items/<id>/, index.jsonl, summary.json, report.html)."""
    from f2f.config import load_config

    # 1. The config, and the manifest checked by the edit's own rules before any work
    config = load_config(config_path, {k: v for k, v in {"profile": profile, "models_dir": models_dir}.items() if v is not None})
    parsed = read_manifest(manifest, input_root, config)
    for error in parsed.errors:
        click.echo(f"f2f: bad row: {error}", err=True)
    if parsed.errors and strict:
        raise ManifestError(f"manifest: {len(parsed.errors)} bad rows (--strict); nothing was run")
    # 2. The output folder and what is left to do: a rerun with nothing left loads no model and starts no Ray
    from f2f.bulk import runner

    out = runner.OutputFolder(out_dir, parsed)
    work = runner.plan_items(parsed.items, out, config, max_retries)
    if not work.todo:
        data = _write_reports(out, parsed, config, elapsed_s=0.0, stats=None)
        click.echo(
            f"bulk: nothing to do: all {work.skipped} items finished earlier (succeeded, failed more than --max-retries "
            f"{max_retries} times, or can only fail), {len(parsed.errors)} bad rows; {json.dumps(data['by_status'])}; "
            f"report: {out_dir / 'report.html'}",
            err=True,
        )
        return
    # 3. The models, Ray and the actors
    from f2f import quiet
    from f2f.backends import force_offline, prepare_models

    quiet.model_libraries(verbose)
    prepare_models(config)
    force_offline()
    runner.connect_ray(verbose)
    import ray

    resources = runner.Resources.for_cluster(ray.cluster_resources().get("GPU", 0), vlms, generators)
    click.echo(
        f"bulk: {len(parsed.items)} items ({len(work.todo)} to do), {len(parsed.errors)} bad rows; {resources.vlms} VLM "
        f"and {resources.generators} generator actors (GPUs each: {resources.vlm_gpus:g} / {resources.generator_gpus:g})",
        err=True,
    )
    models = runner.start_actors(config, resources, item_timeout)
    # 4. The edits
    progress = _Progress()
    started = time.monotonic()
    stats = None
    try:
        edits = runner.run_items(
            work,
            out,
            config,
            models,
            concurrency=2 * resources.generators,
            on_outcome=progress,
        )
        stats = asyncio.run(edits)
    except KeyboardInterrupt:
        click.echo("\nbulk: interrupted; finished items are kept, rerun the same command to go on", err=True)
    finally:
        data = _write_reports(out, parsed, config, time.monotonic() - started, stats or progress.stats)
        click.echo(f"bulk: {json.dumps(data['by_status'])}; report: {out_dir / 'report.html'}", err=True)
    if stats is None:
        sys.exit(EXIT_INTERRUPTED)


def _write_reports(
    out: OutputFolder, parsed: Manifest, config: F2FConfig, elapsed_s: float, stats: RunStats | None
) -> dict[str, Any]:
    """index.jsonl, summary.json and report.html from the journal (the truth on disk) and this run's counts; the summary."""
    from f2f.bulk import runner
    from f2f.bulk.report import index_rows, summary, write_reports

    settings = runner.run_settings(config)
    journal = out.journal()
    keys = {item.id: item.key(settings) for item in parsed.items}
    by_id = {item_id: journal[key] for item_id, key in keys.items() if key in journal}
    rows = index_rows(parsed.items, parsed.errors, by_id)
    data = summary(rows, elapsed_s, stats.succeeded if stats else 0, stats.failed if stats else 0)
    write_reports(out.root, rows, data)
    return data


class _Progress:
    """A live bar on a terminal; a line every PROGRESS_EVERY_S seconds otherwise (Ray job logs).

    Failed items are counted as failed, not as edited; the rate counts the items edited in this run.
    """

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0
        self.stats: RunStats | None = None  # the run's counts, also when it is interrupted

    def __call__(self, stats: RunStats, outcome: Any) -> None:
        self.stats = stats
        if outcome is not None and outcome.status == "failed":
            click.echo(f"\nbulk: {outcome.id} failed: {outcome.reason}", err=True)
        now = time.monotonic()
        if self.tty:
            width = 30
            filled = int(width * stats.finished / max(stats.total, 1))
            click.echo(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.line(stats, now)}", err=True, nl=_over(stats))
        elif now - self.last_line >= PROGRESS_EVERY_S or _over(stats):
            click.echo(f"bulk: {self.line(stats, now)}", err=True)
            self.last_line = now

    @staticmethod
    def line(stats: RunStats, now: float) -> str:
        """`12/20 finished: 9 edited, 1 failed, 2 earlier; 4.5 edits/min, ETA 1.8 min` (the ETA from every finished item)."""
        minutes = (now - stats.started) / 60
        edit_rate = stats.succeeded / minutes if minutes > 0 else 0.0
        finish_rate = (stats.succeeded + stats.failed) / minutes if minutes > 0 else 0.0
        eta = f"{(stats.total - stats.finished) / finish_rate:.1f} min" if finish_rate > 0 else "?"
        counts = f"{stats.succeeded} edited, {stats.failed} failed, {stats.skipped} earlier"
        return f"{stats.finished}/{stats.total} finished: {counts}; {edit_rate:.1f} edits/min, ETA {eta}"


def _over(stats: RunStats) -> bool:
    return stats.finished == stats.total


@main.command("from-posedit")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The JSONL to write.")
@click.option("--text", type=click.Choice(["instruction", "target"]), default="instruction", show_default=True)
def from_posedit(folder: Path, out_file: Path, text: str) -> None:
    """Write a manifest for the PosEdit layout (annotations.json, src_images/): instructions or target captions."""
    rows = posedit_manifest(folder.resolve(), text)
    out_file.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    click.echo(f"wrote {len(rows)} rows to {out_file}")
