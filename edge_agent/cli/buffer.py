"""``edge-agent buffer``: what the gateway holds that the platform has not yet
acknowledged, a copy of it, and (on purpose only) its removal.

stats and export read the file without writing, so they are safe while the agent
runs; purge takes the same write lock as the agent and waits for its turn.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from edge_agent import buffer, cli

buffer_app = typer.Typer(no_args_is_help=True, help="Inspect, copy or empty the local buffer "
                                                      "of undelivered samples and events.")



def _buffer_path(config: Path) -> Path:
    path = cli.load_or_exit(config).site.buffer.path
    if not path.is_file():
        cli.fail(f"no buffer at {path} (buffer.path in {config})",
                 "the agent creates it on its first start; check that it has run")
    return path


def _when(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


@contextmanager
def _sqlite_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        cli.fail(f"cannot use the buffer {path}: {exc}",
                 "if the agent holds it busy, try again; if the file is damaged, restart the "
                 "agent: it moves a corrupt buffer aside and begins a new one")


@buffer_app.command("stats")
def stats(config: cli.ConfigOption,
          as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Rows waiting for delivery, their age, the file's size and what was dropped."""
    path = _buffer_path(config)
    with _sqlite_errors(path):
        figures = buffer.stats(path)
    if as_json:
        cli.out.print_json(data=figures)
        return
    table = Table(title=f"buffer {escape(str(path))}", title_justify="left")
    for column in ("", "rows", "oldest", "newest"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for name in ("events", "samples"):
        rows = figures[name]
        table.add_row(name, str(rows["rows"]), _when(rows["oldest_ms"]), _when(rows["newest_ms"]))
    cli.out.print(table)
    cli.out.print(f"{figures['bytes'] / 2**20:.1f} MiB on disk, schema {figures['schema_version']}"
                  f", epoch {figures['epoch']}, last seq {figures['last_seq']}, "
                  f"{figures['active_alarms']} active alarm(s)", highlight=False)
    dropped = figures["evicted"] + figures["expired"]
    style = "yellow" if dropped else "green"
    cli.out.print(f"[{style}]dropped undelivered: {figures['evicted']} sample(s) over the quota, "
                  f"{figures['expired']} past retention[/]", highlight=False)


@buffer_app.command("export")
def export(config: cli.ConfigOption,
           output: Annotated[Path, typer.Option("--output", "-o",
                                                help="JSON lines file to write, - for stdout")],
           ) -> None:
    """Copy every undelivered event and sample to JSON lines (events first)."""
    path = _buffer_path(config)
    try:
        sink = sys.stdout if str(output) == "-" else output.open("w", encoding="utf-8")
    except OSError as exc:
        cli.fail(f"cannot write {output}: {exc.strerror}", "choose a writable path")
    count = 0
    with _sqlite_errors(path), sink if sink is not sys.stdout else nullcontext():
        for row in buffer.export(path):
            sink.write(json.dumps(row, separators=(",", ":")) + "\n")
            count += 1
    cli.err.print(f"{count} rows -> {output}", highlight=False)


@buffer_app.command("purge")
def purge(config: cli.ConfigOption,
          table: Annotated[Literal["samples", "events", "all"],
                           typer.Option(help="what to delete; events are alarm records")
                           ] = "samples",
          before: Annotated[datetime | None, typer.Option(
              help="only rows older than this local time, e.g. 2026-11-01T00:00")] = None,
          yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False) -> None:
    """Delete undelivered rows for good (the platform will never get them)."""
    path = _buffer_path(config)
    tables = ["samples", "events"] if table == "all" else [table]
    scope = f"older than {before:%Y-%m-%d %H:%M}" if before else "all"
    if not yes and not typer.confirm(f"Delete {scope} undelivered {' and '.join(tables)} "
                                     f"in {path}? The platform will never receive them"):
        cli.err.print("nothing deleted")
        raise typer.Exit(1)
    before_ms = int(before.timestamp() * 1000) if before else None
    with _sqlite_errors(path), closing(buffer.Buffer(path)) as store:
        for name in tables:
            cli.out.print(f"deleted {store.purge(name, before_ms)} {name}", highlight=False)
