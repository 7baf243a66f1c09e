"""``edge-agent logs``: the agent's log, from the journal (the service) or a file,
as readable lines: time, level, event and its fields, errors in red.

The agent logs one JSON object per line when not on a terminal (edge_agent/log.py);
lines that are not JSON are shown as they are.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from edge_agent import cli
from edge_agent.i18n import _

STYLE = {"error": "bold red", "critical": "bold red", "warning": "yellow", "debug": "dim"}


def render(line: str) -> str:
    """One log line as rich markup."""
    try:
        record: dict[str, Any] = json.loads(line)
        if not isinstance(record, dict) or "event" not in record:
            raise ValueError
    except ValueError:
        return escape(line)
    level = str(record.pop("level", "info"))
    when = str(record.pop("timestamp", ""))[:23].replace("T", " ")
    event = record.pop("event")
    fields = "  ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in record.items())
    style = STYLE.get(level, "")
    head = f"[{style}]{escape(f'{level:<7} {event}')}[/]" if style else escape(
        f"{level:<7} {event}")
    return f"[dim]{escape(when)}[/] {head}  {escape(fields)}"


def _file_lines(path: Path, lines: int, follow: bool) -> Iterator[str]:
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        cli.fail(_("cannot read {path}: {error}").format(path=path, error=exc.strerror),
                 _("give the agent's log file with --file, or leave it out to read the journal"))
    with handle:
        yield from collections.deque((line.rstrip("\n") for line in handle), maxlen=lines)
        while follow:
            line = handle.readline()
            if line:
                yield line.rstrip("\n")
            else:
                time.sleep(0.2)  # tail -f: wait for the file to grow


def _journal_lines(unit: str, lines: int, follow: bool) -> Iterator[str]:
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        cli.fail(_("journalctl not found: no systemd journal on this machine"),
                 _("give the agent's log file with --file PATH"))
    command = [journalctl, "-u", unit, "-n", str(lines), "-o", "cat", "--no-pager"]
    with subprocess.Popen([*command, *(["-f"] if follow else [])], stdout=subprocess.PIPE,
                          text=True, errors="replace") as journal:
        assert journal.stdout is not None
        try:
            yield from (line.rstrip("\n") for line in journal.stdout)
        finally:
            journal.terminate()
    if journal.returncode not in (0, -15):
        cli.fail(_("journalctl exited with {code}").format(code=journal.returncode),
                 _("run it yourself: {command} (the user may need to be in the systemd-journal "
                   "group)").format(command=" ".join(command)))


def _show(lines: Iterable[str]) -> None:
    for line in lines:
        cli.out.print(render(line), highlight=False)


def logs(
    follow: Annotated[bool, typer.Option("--follow", "-f", help=_("keep printing new lines"))
                      ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help=_(
        "how many of the last lines"))] = 50,
    file: Annotated[Path | None, typer.Option(help=_("a log file instead of the journal"))
                    ] = None,
    unit: Annotated[str, typer.Option(help=_("the systemd unit"))] = "edge-agent",
) -> None:
    source = _file_lines(file, lines, follow) if file else _journal_lines(unit, lines, follow)
    try:
        _show(source)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
