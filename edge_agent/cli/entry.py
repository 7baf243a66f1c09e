"""``edge-agent entry``: confined-space entry from the gateway's own terminal, through
the running agent (the same code path as the platform's ``cmd/entry-*``).
"""

from __future__ import annotations

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
