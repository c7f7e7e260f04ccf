"""The click group of every f2f command line: f2f's own errors become one line and an exit status."""

from __future__ import annotations

import sys
from typing import Any

import click

from f2f.errors import EditCancelled, F2FError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class F2FGroup(click.Group):
    """Turns f2f's own errors into one line on stderr and exit status 2 (130 for a cancelled edit)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EditCancelled as exc:
            click.echo(f"f2f: {exc}", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except F2FError as exc:
            click.echo(f"f2f: error: {exc}", err=True)
            sys.exit(EXIT_USAGE)


class RunByDefault(F2FGroup):
    """A group whose first word, when it is no subcommand nor an option, is the argument of its `run` command.

    `f2f bulk MANIFEST ...` is `f2f bulk run MANIFEST ...`; `f2f eval DATASET ...` is `f2f eval run DATASET ...`.
    """

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """`f2f bulk --help` lists the options of `run`, which `f2f bulk MANIFEST ...` runs, with the group's own."""
        options = [p for p in (*self.commands["run"].params, *self.get_params(ctx)) if isinstance(p, click.Option)]
        records = [record for option in options if (record := option.get_help_record(ctx)) is not None]
        with formatter.section("Options"):
            formatter.write_dl(records)
        self.format_commands(ctx, formatter)
