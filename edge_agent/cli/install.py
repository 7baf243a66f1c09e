"""``edge-agent install``: make this gateway run the agent as a service.

It creates the system user (in the dialout group, for RS-485 adapters), the
config directory with a skeleton config (an existing config is never touched),
and the hardened unit pointing at this copy of the agent, then enables it. It
does not start the service: a technician fills in and validates the config
first. ``--root DIR`` stages the files under DIR and prints the commands it
would run, so a build or a test can check the result without root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edge_agent import cli
from edge_agent._shipped import shipped_dir
from edge_agent.i18n import _

USER = "edge-agent"
UNIT_EXEC = "/opt/edge-agent/venv/bin/edge-agent"  # where the shipped unit expects us


def _run(command: list[str], staged: bool) -> None:
    cli.out.print((_("would run: {command}") if staged else _("run: {command}")).format(
        command=escape(" ".join(command))), highlight=False)
    if staged:
        return
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        cli.fail(_("{command} failed: {error}").format(command=" ".join(command),
                                                        error=result.stderr.strip()),
                 _("fix what it says and run edge-agent install again (it can be re-run)"))


def _program() -> Path:
    """The edge-agent the unit runs: the one invoked when it is this agent's script, so
    that a link on its path (/opt/edge-agent/venv, which install.sh moves on an upgrade
    and moves back on a rollback) stays in the unit; else the one beside this Python.
    """
    beside = Path(sys.executable).with_name("edge-agent")
    invoked = Path(sys.argv[0]).absolute()
    if invoked.name == "edge-agent" and invoked.exists() and beside.exists() \
            and invoked.resolve() == beside.resolve():
        return invoked
    return beside


def _user_exists() -> bool:
    import pwd

    try:
        pwd.getpwnam(USER)
    except KeyError:
        return False
    return True


def install(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help=_("site config to install; default: a skeleton to fill in"))
                      ] = None,
    root: Annotated[Path | None, typer.Option(
        help=_("stage the files under this directory and only print the commands"))] = None,
) -> None:
    staged = root is not None
    if not staged and os.geteuid() != 0:
        cli.fail(_("installing a service needs root"), _("run: sudo {program} install").format(
            program=Path(sys.argv[0]).resolve()))
    if not staged and not shutil.which("systemctl"):
        cli.fail(_("systemctl not found: this machine does not run systemd"),
                 _("install on a Debian or Raspberry Pi OS gateway, or use --root to stage"))
    executable = _program()
    if not executable.exists():
        cli.fail(_("{path} not found").format(path=executable),
                 _("install the agent into a virtualenv (pip install edge-agent) and run that "
                   "virtualenv's edge-agent install"))
    if executable.resolve().is_relative_to("/home") or str(executable).startswith("/root"):
        cli.fail(_("the agent is installed under {path}, which the service cannot see "
                   "(ProtectHome=yes)").format(path=executable.parent),
                 _("install it under /opt: python3 -m venv /opt/edge-agent/venv && "
                   "/opt/edge-agent/venv/bin/pip install edge-agent"))
    source = config or shipped_dir("config") / "skeleton.toml"
    if config is not None:
        cli.load_or_exit(config)  # a config given here must be valid
    base = root or Path("/")
    etc, unit_dir = base / "etc" / "edge-agent", base / "etc" / "systemd" / "system"

    if not staged and _user_exists():
        cli.out.print(_("user {user} exists").format(user=USER))
    else:
        _run(["useradd", "--system", "--home-dir", "/var/lib/edge-agent", "--shell",
              "/usr/sbin/nologin", "--groups", "dialout", "--user-group", USER], staged)
    etc.mkdir(parents=True, exist_ok=True)
    target = etc / "site.toml"
    if target.exists():
        cli.out.print(_("{kept} the existing {path}").format(kept="[yellow]" + _("kept") + "[/]",
                                                             path=target))
    else:
        shutil.copyfile(source, target)
        target.chmod(0o640)
        cli.out.print(_("wrote {path} (from {source})").format(path=target, source=source.name))
    etc.chmod(0o770)  # group-writable: a config pushed with set-config replaces site.toml
    _run(["chown", "-R", f"root:{USER}", str(etc)], staged)

    unit = (shipped_dir("systemd") / "edge-agent.service").read_text()
    unit_dir.mkdir(parents=True, exist_ok=True)
    (unit_dir / "edge-agent.service").write_text(unit.replace(UNIT_EXEC, str(executable)))
    cli.out.print(_("wrote {path} (ExecStart {command})").format(
        path=unit_dir / "edge-agent.service", command=executable))
    _run(["systemctl", "daemon-reload"], staged)
    _run(["systemctl", "enable", "edge-agent"], staged)
    cli.out.print(
        "\n[bold]" + _("next:") + "[/]\n  1. " + escape(_(
            "edit {path}: gateway_id, site_id, the bus, the devices, [mqtt]").format(path=target))
        + f"\n  2. sudo -u {USER} {executable} config validate {target}\n"
        f"  3. sudo -u {USER} {executable} devices scan -c {target} --bus field\n"
        "  4. sudo systemctl start edge-agent\n"
        f"  5. sudo -u {USER} {executable} status -c {target}", highlight=False)
