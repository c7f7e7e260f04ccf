"""The `f2f` command line.

Errors a user can cause (bad image, bad text, bad config, no backend) print
one line, ``f2f: error: <field>: <rule> (got <value>)``, and exit with
status 2; never a traceback.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import click

from f2f.backends import build_backends
from f2f.config import config_to_yaml, load_config
from f2f.errors import EditCancelled, F2FError
from f2f.imageio import open_image
from f2f.pipeline import check_inputs, edit
from f2f.protocols import Progress
from f2f.result import write_outputs

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Group(click.Group):
    """Turns f2f's own errors into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EditCancelled as exc:
            click.echo(f"f2f: {exc}", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except F2FError as exc:
            click.echo(f"f2f: error: {exc}", err=True)
            sys.exit(EXIT_USAGE)


@click.group(cls=_Group)
@click.version_option(package_name="f2f", prog_name="f2f")
def main() -> None:
    """Frame2Frame: edit images through image-to-video generation."""


_config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="YAML config file (see `f2f config show`)."
)


@main.command("edit")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("text")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the outputs.")
@_config_option
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Seed of the first video (default: config, else random).")
@click.option("--save-frames", is_flag=True, help="Also write the candidate frames to OUT/candidates/.")
def edit_command(image: Path, text: str, out_dir: Path, config_path: Path | None, seed: int | None, save_frames: bool) -> None:
    """Edit IMAGE as TEXT asks; write edited.png, collage.png and result.json to OUT."""
    config = load_config(config_path, {"seed": seed} if seed is not None else None)
    source, text, seeds = check_inputs(open_image(image, config.input), text, None, config)
    vlm, generator = build_backends(config)
    result = asyncio.run(edit(source, text, vlm=vlm, generator=generator, config=config, seeds=seeds, progress=_Printer()))
    for path in write_outputs(result, out_dir, save_frames):
        click.echo(f"wrote {path}")
    click.echo(f"status: {result.status}  frame: {result.outcome.frame}  seed: {result.seed}")
    click.echo(f"caption: {result.caption}" + ("  (fallback: the VLM's caption was unusable)" if result.caption_fallback else ""))


class _Printer:
    """Progress on stderr: the stage, the denoising step i/n and the time since the start."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def __call__(self, event: Progress) -> None:
        elapsed = time.perf_counter() - self.start
        step = f" step {event.step}/{event.total}" if event.total else ""
        end = "\r" if self.tty and event.total and event.step != event.total else "\n"
        click.echo(f"[{elapsed:7.1f}s] {event.stage}{step}{end}", err=True, nl=False)


@main.group("config")
def config_group() -> None:
    """Inspect configuration."""


@config_group.command("show")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def config_show(file: Path | None) -> None:
    """Print the effective config: the defaults updated by FILE."""
    click.echo(config_to_yaml(load_config(file)), nl=False)


if __name__ == "__main__":
    main()
