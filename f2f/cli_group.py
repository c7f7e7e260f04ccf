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
