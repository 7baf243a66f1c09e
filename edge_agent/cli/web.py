"""``edge-agent web``: the local web view's PIN, hashed for the config."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from edge_agent import cli
from edge_agent.i18n import _
from edge_agent.web.pin import MIN_LENGTH, hash_pin

web_app = typer.Typer(no_args_is_help=True, help=_("The local web view for technicians and "
                                                   "site staff."))


@web_app.command("hash-pin")
def hash_pin_command(
    stdin: Annotated[bool, typer.Option("--stdin", help=_("read the PIN from standard input "
                                                          "(a script), not the terminal"))
                     ] = False,
) -> None:
    """Hash a technicians' PIN for web.pin_hash; the PIN itself is never stored."""
    if stdin:
        pin = sys.stdin.readline().rstrip("\n")
    else:
        pin = typer.prompt(_("PIN"), hide_input=True, confirmation_prompt=True)
    if len(pin) < MIN_LENGTH:
        cli.fail(_("the PIN is too short"),
                 _("use at least {n} characters; more is better").format(n=MIN_LENGTH))
    cli.out.print(f'pin_hash = "{hash_pin(pin)}"', highlight=False)
    cli.err.print(escape(_("Put this line in the [web] table of the site config.")),
                  highlight=False)
