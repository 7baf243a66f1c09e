"""``edge-agent entry``: confined-space entry from the gateway's own terminal, through
the running agent (the same code path as the platform's ``cmd/entry-*``).
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edge_agent import cli
from edge_agent.cli.status import ask

entry_app = typer.Typer(no_args_is_help=True, help="Confined-space entry (GB 30871-2022 "
                                                   "chapter 6): test the air before entry.")
VERDICT = {True: "[green]pass[/]", False: "[bold white on red]FAIL[/]", None: "-"}


@entry_app.command("test")
def entry_test(config: cli.ConfigOption,
               space: Annotated[str, typer.Argument(help="the space, as named in the config")],
               by: Annotated[str, typer.Option(help="who tests: your name, recorded with it")],
               as_json: cli.JsonOption = False) -> None:
    """Test the air of a space on readings taken now; exit 1 if entry is not allowed."""
    result = ask(config, "entry-test", space=space, by=by)
    if as_json:
        cli.out.print_json(data=result)
    else:
        table = Table(title=f"pre-entry test of {escape(space)}, by {escape(by)}")
        for heading in ("point", "channel", "value", "entry limit", "verdict", "why"):
            table.add_column(heading)
        for c in result["channels"]:
            value = "-" if c["value"] is None else f"{c['value']:g} {c['unit']}"
            table.add_row(escape(c["point"] or ""), escape(c["channel"]), escape(value),
                          escape(c["limit"]), VERDICT[c["passed"]], escape(c["reason"]))
        cli.out.print(table)
        cli.out.print("[green]entry allowed[/] (start it within the test's validity)"
                      if result["passed"] else "[bold red]entry NOT allowed[/]: ventilate, "
                      "remove the cause, and test again", highlight=False)
    if not result["passed"]:
        raise typer.Exit(1)


@entry_app.command("start")
def entry_start(config: cli.ConfigOption,
                space: Annotated[str, typer.Argument(help="the space, as named in the config")],
                by: Annotated[str, typer.Option(help="who is in charge of the entry")]) -> None:
    """Start entry into a space; refused without a passed test in the last 30 minutes."""
    result = ask(config, "entry-start", space=space, by=by)
    cli.out.print(f"[green]entry started[/] into {escape(space)} by {escape(by)} (session "
                  f"{result['session'][:8]}): the space is watched; any alarm means evacuate",
                  highlight=False)


@entry_app.command("end")
def entry_end(config: cli.ConfigOption,
              space: Annotated[str, typer.Argument(help="the space, as named in the config")],
              by: Annotated[str, typer.Option(help="who ends it: everyone is out")]) -> None:
    """End the entry into a space, once everyone is out."""
    ask(config, "entry-end", space=space, by=by)
    cli.out.print(f"entry into {escape(space)} ended by {escape(by)}", highlight=False)


@entry_app.command("status")
def entry_status(config: cli.ConfigOption, as_json: cli.JsonOption = False) -> None:
    """Each space: its open session (state, since when) and its last test."""
    spaces = ask(config, "entry-status")["spaces"]
    if as_json:
        cli.out.print_json(data=spaces)
        return
    table = Table(title="confined spaces")
    for heading in ("space", "session", "since", "last test"):
        table.add_column(heading)
    for s in spaces:
        session, test = s["session"], s["last_test"]
        table.add_row(escape(s["space"]), escape(session["state"]) if session else "-",
                      _clock(session["started_ms"]) if session else "-",
                      f"{'passed' if test['passed'] else 'FAILED'} at {_clock(test['ts'])}"
                      if test else "-")
    cli.out.print(table)


def _clock(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts_ms / 1000))
