"""`f2f bulk MANIFEST --out DIR` (also `python -m f2f.bulk`, the Ray job entry point) and `f2f bulk from-posedit`.

Order of a run: load the config, scan the manifest (a malformed one is
refused here, with the lines and fields, before the output folder is
touched, Ray starts or a model loads), claim the output folder, check the
profile's models, join or start Ray, find what is not done yet (a rerun with
nothing left writes the reports and stops here, with no model loaded), print
the plan, stream the stages on Ray Data, then write summary.json and
report.html (also when interrupted: Ctrl-C keeps every finished item and
reports the rest as pending).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from f2f.bulk.manifest import posedit_manifest
from f2f.cli_group import EXIT_INTERRUPTED, RunByDefault

if TYPE_CHECKING:
    from f2f.bulk.run import RunStats

PROGRESS_EVERY_S = 10.0
EXIT_UNFINISHED = 1


@click.group(cls=RunByDefault, subcommand_metavar="MANIFEST --out DIR [OPTIONS] | from-posedit FOLDER --out FILE")
def main() -> None:
    """Edit every row of a manifest (JSONL, CSV or Parquet) on Ray Data, resumably: `bulk MANIFEST --out DIR`."""


@main.command("run")
@click.argument("manifest")
@click.option("--out", "out_dir", required=True, help="Output folder: a path or an object-store URL (s3://bucket/prefix).")
@click.option("--profile", help="Model profile from the catalogue (`f2f models list`); `tiny` runs on any CPU.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="YAML config file.")
@click.option("--models", "models_dir", type=click.Path(file_okay=False, path_type=Path), help="The profile's checkpoints.")
@click.option("--input-root", help="Relative images are found here (a path or URL; default: the manifest's folder).")
@click.option("--max-retries", default=2, show_default=True, type=click.IntRange(0, 100), help="Retries of a failed item.")
@click.option("--item-timeout", type=click.FloatRange(min=1), help="Seconds an item's videos may take on a generator.")
@click.option("--generators", type=click.IntRange(1), help="Generator actors at most (default: from the cluster's GPUs).")
@click.option("--vlms", type=click.IntRange(1), help="VLM actors at most in each VLM pool (default 1).")
@click.option("--block-rows", type=click.IntRange(1), help="Items a block (default 1; more for many cheap items).")
@click.option("--verbose", is_flag=True, help="Ray Data's progress bars, and the actors' and model libraries' output.")
def run_command(
    manifest: str,
    out_dir: str,
    profile: str | None,
    config_path: Path | None,
    models_dir: Path | None,
    input_root: str | None,
    max_retries: int,
    item_timeout: float | None,
    generators: int | None,
    vlms: int | None,
    block_rows: int | None,
    verbose: bool,
) -> None:
    """Edit every row of MANIFEST into OUT (items/, index/, summary.json, report.html)."""
    from f2f.bulk.run import BulkRun
    from f2f.bulk.storage import Location
    from f2f.config import load_config

    # 1. The config, the manifest scanned (refused if malformed), the output folder claimed
    config = load_config(config_path, {k: v for k, v in {"profile": profile, "models_dir": models_dir}.items() if v is not None})
    where = Location.of(manifest, "manifest")
    run = BulkRun(
        manifest=where,
        out=Location.of(out_dir, "--out"),
        config=config,
        input_root=Location.of(input_root, "--input-root") if input_root else None,
        max_retries=max_retries,
        item_timeout_s=item_timeout,
        vlms=vlms,
        generators=generators,
        block_rows=block_rows,
    )
    scanned = run.scan()
    # 2. The models checked (the actors load them), then the run
    from f2f import quiet
    from f2f.backends import prepare_models

    quiet.model_libraries(verbose)
    prepare_models(config)
    progress = _Progress()
    try:
        data = run.execute(scanned, verbose, progress, lambda line: click.echo(line, err=True))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    pending = data["by_status"].get("pending", 0)
    if pending:
        click.echo(
            f"bulk: {pending} items unfinished: their actors were lost more than --max-retries {max_retries} times; "
            "rerun the same command to go on",
            err=True,
        )
        sys.exit(EXIT_UNFINISHED)


class _Progress:
    """A live bar on a terminal; a line every PROGRESS_EVERY_S seconds otherwise (Ray job logs).

    Failed items are counted as failed, not as edited; the rate counts the items edited in this run.
    """

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0

    def __call__(self, stats: RunStats, failed_id: str | None, reason: str | None) -> None:
        if reason is not None:
            click.echo(f"\nbulk: {failed_id or 'an item'} failed: {reason}", err=True)
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
