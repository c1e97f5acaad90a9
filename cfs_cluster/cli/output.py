"""What `cfs` commands print: tables or the API's JSON (``--output``), and progress on a
terminal's status line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "add_output_argument",
    "output_format",
    "print_json",
    "print_table",
    "progress",
    "progress_done",
    "table",
]


def add_output_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output",
        "-o",
        choices=("table", "json"),
        default=argparse.SUPPRESS,
        help="table (default) or json: the API's own objects",
    )


def output_format(args: argparse.Namespace) -> str:
    return str(getattr(args, "output", "table"))


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None
) -> None:
    Console(soft_wrap=False).print(table(columns, rows, title))


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> Table:
    """A plain, narrow table (80 columns): no box lines, values as text ("-" for none)."""
    grid = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    for name in columns:
        grid.add_column(name, overflow="fold")
    for row in rows:
        grid.add_row(*("-" if v is None else str(v) for v in row))
    return grid


def progress(text: str) -> None:
    """Progress of a long-running command on the terminal's status line (stderr, tty only)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K{text}")
        sys.stderr.flush()


def progress_done() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
