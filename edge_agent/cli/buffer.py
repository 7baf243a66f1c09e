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
from edge_agent.i18n import _

buffer_app = typer.Typer(no_args_is_help=True, help=_("Inspect, copy or empty the local buffer "
                                                      "of undelivered samples and events."))


def _buffer_path(config: Path) -> Path:
    path = cli.load_or_exit(config).site.buffer.path
    if not path.is_file():
        cli.fail(_("no buffer at {path} (buffer.path in {config})").format(
            path=path, config=config),
                 _("the agent creates it on its first start; check that it has run"))
    return path


def _rows(table: str) -> str:
    """A buffer table (or all) as the technician reads it; in English, its name."""
    return {"samples": _("samples"), "events": _("events"),
            "all": _("samples and events")}[table]


def _when(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


@contextmanager
def _sqlite_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        cli.fail(_("cannot use the buffer {path}: {error}").format(path=path, error=exc),
                 _("if the agent holds it busy, try again; if the file is damaged, restart the "
                   "agent: it moves a corrupt buffer aside and begins a new one"))


@buffer_app.command("stats", help=_("Rows waiting for delivery, their age, the file's size and "
                                    "what was dropped."))
def stats(config: cli.ConfigOption, as_json: cli.JsonOption = False) -> None:
    path = _buffer_path(config)
    with _sqlite_errors(path):
        figures = buffer.stats(path)
    if as_json:
        cli.out.print_json(data=figures)
        return
    table = Table(title=_("buffer {path}").format(path=escape(str(path))),
                  title_justify="left")
    table.add_column("")
    table.add_column(_("rows"), justify="right")
    table.add_column(_("oldest"))
    table.add_column(_("newest"))
    for name in ("events", "samples"):
        rows = figures[name]
        table.add_row(_rows(name), str(rows["rows"]), _when(rows["oldest_ms"]),
                      _when(rows["newest_ms"]))
    cli.out.print(table)
    summary = _("{mib} MiB on disk, schema {schema}, epoch {epoch}, last seq {seq}, "
                "{alarms} active alarm(s)").format(
        mib=f"{figures['bytes'] / 2**20:.1f}", schema=figures["schema_version"],
        epoch=figures["epoch"], seq=figures["last_seq"], alarms=figures["active_alarms"])
    cli.out.print(summary, highlight=False)
    dropped = _("dropped undelivered: {evicted} sample(s) over the quota, {expired} past "
                "retention").format(evicted=figures["evicted"], expired=figures["expired"])
    style = "yellow" if figures["evicted"] + figures["expired"] else "green"
    cli.out.print(f"[{style}]{dropped}[/]", highlight=False)


@buffer_app.command("export", help=_("Copy every undelivered event and sample to JSON lines "
                                     "(events first)."))
def export(config: cli.ConfigOption,
           output: Annotated[Path, typer.Option("--output", "-o", help=_(
               "JSON lines file to write, - for stdout"))],
           ) -> None:
    path = _buffer_path(config)
    try:
        sink = sys.stdout if str(output) == "-" else output.open("w", encoding="utf-8")
    except OSError as exc:
        cli.fail(_("cannot write {path}: {error}").format(path=output, error=exc.strerror),
                 _("choose a writable path"))
    count = 0
    with _sqlite_errors(path), sink if sink is not sys.stdout else nullcontext():
        for row in buffer.export(path):
            sink.write(json.dumps(row, separators=(",", ":")) + "\n")
            count += 1
    cli.err.print(_("{n} rows -> {path}").format(n=count, path=output), highlight=False)


@buffer_app.command("purge", help=_("Delete undelivered rows for good (the platform will never "
                                    "get them)."))
def purge(config: cli.ConfigOption,
          table: Annotated[Literal["samples", "events", "all"],
                           typer.Option(help=_("what to delete; events are alarm records"))
                           ] = "samples",
          before: Annotated[datetime | None, typer.Option(
              help=_("only rows older than this local time, e.g. 2026-11-01T00:00"))] = None,
          yes: Annotated[bool, typer.Option("--yes", help=_("do not ask"))] = False) -> None:
    path = _buffer_path(config)
    scope = _("older than {time}").format(time=f"{before:%Y-%m-%d %H:%M}") if before else _("all")
    question = _("Delete {scope} undelivered {rows} in {path}? The platform will never receive "
                 "them").format(scope=scope, rows=_rows(table), path=path)
    if not yes and not typer.confirm(question):
        cli.err.print(_("nothing deleted"))
        raise typer.Exit(1)
    before_ms = int(before.timestamp() * 1000) if before else None
    with _sqlite_errors(path), closing(buffer.Buffer(path)) as store:
        for name in ["samples", "events"] if table == "all" else [table]:
            cli.out.print(_("deleted {n} {rows}").format(n=store.purge(name, before_ms),
                                                         rows=_rows(name)), highlight=False)
