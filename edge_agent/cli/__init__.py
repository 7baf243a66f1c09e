"""The ``edge-agent`` command line: run the daemon, check configs, see a demo."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from edge_agent import __version__, i18n
from edge_agent.buffer import BufferUnavailable
from edge_agent.config import FileError, LoadedConfig, load_config
from edge_agent.errors import StartupError
from edge_agent.i18n import _

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help=_("Safety edge agent: polls gas and temperature sensors, raises alarms "
                         "locally, buffers in SQLite and forwards over MQTT."))

# Options shared by the sub-commands.
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help=_("site config (TOML)"))]
JsonOption = Annotated[bool, typer.Option("--json", help=_("print JSON"))]

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(what: str, next_step: str) -> NoReturn:
    """End a command on a foreseeable error: what is wrong, then what to do."""
    err.print("[bold red]" + _("error:") + f"[/] {escape(what)}\n{escape(next_step)}",
              highlight=False)
    raise typer.Exit(1)


def load_or_exit(path: Path) -> LoadedConfig:
    """The config, or exit with its problems; from here on the CLI speaks its language."""
    try:
        loaded = load_config(path)
    except FileError as exc:
        n = len(exc.problems)
        err.print("[bold red]" + (_("{path}: invalid config, {n} problem:") if n == 1 else _(
            "{path}: invalid config, {n} problems:")).format(path=path, n=n) + "[/]")
        for problem in exc.problems:
            err.print(f"  [red]-[/] {escape(problem)}", highlight=False)
        raise typer.Exit(1) from None
    i18n.use(loaded.site.language)
    return loaded


@app.command(help=_("Run the agent until SIGTERM or Ctrl-C."))
def run(config: ConfigOption,
        log_level: Annotated[str, typer.Option(help=_("debug, info, warning or error"))] = "info",
        ) -> None:
    # systemd may stop an agent that is still starting (loading numba takes a moment):
    # remember a SIGTERM from now on and stop cleanly once running, instead of dying.
    early_stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: early_stop.set())
    from edge_agent import daemon, log

    log.configure(log_level)
    loaded = load_or_exit(config)
    try:
        daemon.run(loaded, early_stop)
    except BufferUnavailable as exc:
        err.print(f"[bold red]{escape(str(exc))}[/]\n" + _(
            "Check buffer.path in {config} and that this user may create and write files in "
            "its directory.").format(config=config))
        raise typer.Exit(1) from None
    except StartupError as exc:
        err.print("[bold red]" + _("cannot start: {error}").format(error=escape(str(exc)))
                  + "[/]")
        raise typer.Exit(1) from None


@app.command(help=_("Run three simulated sites, a private broker and the agent, with a live "
                    "view."))
def demo(seconds: Annotated[float, typer.Option(min=10, help=_("how long the demo runs"))
                            ] = 60.0,
         keep: Annotated[bool, typer.Option(help=_("keep the demo's working directory"))
                         ] = False,
         ) -> None:
    from edge_agent.demo.run import run_demo

    raise typer.Exit(run_demo(seconds=seconds, keep=keep, console=out))


@app.command(help=_("Replay a recorded series through the agent's kernels: scores, flags and "
                    "events."))
def detect(
    input_csv: Annotated[Path, typer.Argument(metavar="INPUT.csv", help=_(
        "time, then one column of readings per series"))],
    output: Annotated[Path, typer.Option("--output", "-o", help=_("CSV to write"))],
    config: Annotated[Path | None, typer.Option(help=_("judge by this site's rules"))] = None,
    channel: Annotated[str | None, typer.Option(help=_(
        "the site channel (device.value) of a single-column file"))] = None,
) -> None:
    from edge_agent.detect import InputError, read_series, replay, write_rows

    if channel and not config:
        err.print("[bold red]" + _("--channel needs --config") + "[/] "
                  + _("(the site whose rules to apply)"))
        raise typer.Exit(1)
    loaded = load_or_exit(config) if config else None
    try:
        n = write_rows(replay(read_series(input_csv), loaded, channel), output)
    except InputError as exc:
        err.print(f"[bold red]{escape(str(exc))}[/]")
        raise typer.Exit(1) from None
    except OSError as exc:
        err.print("[bold red]" + _("cannot write {path}: {error}").format(
            path=output, error=exc.strerror) + "[/]")
        raise typer.Exit(1) from None
    out.print(_("{n} rows -> {path}").format(n=n, path=output), highlight=False)


@app.command(help=_("Print the agent's version."))
def version() -> None:
    out.print(__version__)


# The sub-apps import this module for its consoles and helpers: add them last.
from edge_agent.cli.buffer import buffer_app  # noqa: E402
from edge_agent.cli.configure import config_app  # noqa: E402
from edge_agent.cli.devices import devices_app  # noqa: E402
from edge_agent.cli.entry import entry_app  # noqa: E402
from edge_agent.cli.install import install  # noqa: E402
from edge_agent.cli.logs import logs  # noqa: E402
from edge_agent.cli.platform_tail import tail_command  # noqa: E402
from edge_agent.cli.status import alarms_app, status  # noqa: E402
from edge_agent.cli.web import web_app  # noqa: E402

app.add_typer(config_app, name="config")
app.add_typer(devices_app, name="devices")
app.add_typer(buffer_app, name="buffer")
app.add_typer(alarms_app, name="alarms")
app.add_typer(entry_app, name="entry")
app.add_typer(web_app, name="web")
app.command("status", help=_("The running agent: channels, alarms, buses, uplink and buffer, "
                              "updated live."))(status)
app.command("logs", help=_("The agent's log, readable: from the journal of the service, or from "
                           "--file."))(logs)
app.command("install", help=_("Install the systemd service, its user and a config on this "
                              "gateway (as root)."))(install)
app.command("platform-tail")(tail_command)


def main() -> None:
    app()
