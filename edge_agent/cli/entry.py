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
from edge_agent.i18n import _

entry_app = typer.Typer(no_args_is_help=True, help=_("Confined-space entry (GB 30871-2022 "
                                                     "chapter 6): test the air before entry."))
Space = Annotated[str, typer.Argument(help=_("the space, as named in the config"))]


@entry_app.command("test", help=_("Test the air of a space on readings taken now; exit 1 if "
                                  "entry is not allowed."))
def entry_test(config: cli.ConfigOption, space: Space,
               by: Annotated[str, typer.Option(help=_("who tests: your name, recorded with it"))],
               as_json: cli.JsonOption = False) -> None:
    result = ask(config, "entry-test", space=space, by=by)
    if as_json:
        cli.out.print_json(data=result)
    else:
        table = Table(title=_("pre-entry test of {space}, by {by}").format(space=escape(space),
                                                                          by=escape(by)))
        for heading in (_("point"), _("channel"), _("value"), _("entry limit"), _("verdict"),
                        _("why")):
            table.add_column(heading)
        verdict = {True: "[green]" + _("pass") + "[/]",
                   False: "[bold white on red]" + _("FAIL") + "[/]", None: "-"}
        for c in result["channels"]:
            value = "-" if c["value"] is None else f"{c['value']:g} {c['unit']}"
            table.add_row(escape(c["point"] or ""), escape(c["channel"]), escape(value),
                          escape(c["limit"]), verdict[c["passed"]], escape(c["reason"]))
        cli.out.print(table)
        cli.out.print(("[green]" + _("entry allowed") + "[/] "
                       + _("(start it within the test's validity)")) if result["passed"] else
                      ("[bold red]" + _("entry NOT allowed") + "[/]: "
                       + _("ventilate, remove the cause, and test again")), highlight=False)
    if not result["passed"]:
        raise typer.Exit(1)


@entry_app.command("start", help=_("Start entry into a space; refused without a passed test in "
                                   "the last 30 minutes."))
def entry_start(config: cli.ConfigOption, space: Space,
                by: Annotated[str, typer.Option(help=_("who is in charge of the entry"))]
                ) -> None:
    result = ask(config, "entry-start", space=space, by=by)
    cli.out.print("[green]" + _("entry started") + "[/] " + _(
        "into {space} by {by} (session {session}): the space is watched; any alarm means "
        "evacuate").format(space=escape(space), by=escape(by), session=result["session"][:8]),
        highlight=False)


@entry_app.command("end", help=_("End the entry into a space, once everyone is out."))
def entry_end(config: cli.ConfigOption, space: Space,
              by: Annotated[str, typer.Option(help=_("who ends it: everyone is out"))]) -> None:
    ask(config, "entry-end", space=space, by=by)
    cli.out.print(_("entry into {space} ended by {by}").format(space=escape(space),
                                                               by=escape(by)), highlight=False)


@entry_app.command("status", help=_("Each space: its open session (state, since when) and its "
                                    "last test."))
def entry_status(config: cli.ConfigOption, as_json: cli.JsonOption = False) -> None:
    spaces = ask(config, "entry-status")["spaces"]
    if as_json:
        cli.out.print_json(data=spaces)
        return
    table = Table(title=_("confined spaces"))
    for heading in (_("space"), _("session"), _("since"), _("last test")):
        table.add_column(heading)
    for s in spaces:
        session, test = s["session"], s["last_test"]
        table.add_row(escape(s["space"]), escape(_session(session["state"])) if session else "-",
                      _clock(session["started_ms"]) if session else "-",
                      (_("passed at {time}") if test["passed"] else _("FAILED at {time}")).format(
                          time=_clock(test["ts"])) if test else "-")
    cli.out.print(table)


def _session(state: str) -> str:
    """A session's state as shown; in English, its code as it is."""
    return {"active": _("active"), "retest_required": _("retest_required"),
            "evacuate": _("evacuate"), "ended": _("ended"), "expired": _("expired")}.get(
                state, state)


def _clock(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts_ms / 1000))
