"""``edge-agent status`` and ``edge-agent alarms``: the running agent as a technician
sees it, read through its local socket (edge_agent/control.py), never by opening
its buses or its broker connection again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from edge_agent import cli, control
from edge_agent.i18n import _

alarms_app = typer.Typer(no_args_is_help=True, help=_(
    "The running agent's alarms: list them, acknowledge, reset, record how one was handled, "
    "shelve, take a channel out of service, see the figures."))
# Gas-panel colours (GB 16808): alarm red, fault yellow, normal green.
STYLE = {"alarm": "bold white on red", "fault": "black on yellow", "anomaly": "magenta",
         None: "green"}


# The agent's codes as the technician reads them; in English, as they are shown today.
def _class(code: str) -> str:
    return {"alarm": _("alarm"), "fault": _("fault"), "anomaly": _("anomaly")}.get(code, code)


def _quality(code: str) -> str:
    return {"good": _("good"), "bad": _("bad"), "stale": _("stale"), "comm_lost": _("comm_lost"),
            "out_of_range": _("out_of_range"), "device_fault": _("device_fault"),
            "not_ready": _("not_ready")}.get(code, code)


def _state(code: str) -> str:
    return {"unacknowledged": _("unacknowledged"), "acknowledged": _("acknowledged"),
            "returned_unacknowledged": _("returned unacknowledged"), "latched": _("latched"),
            "awaiting_handling": _("awaiting handling"),
            "ended, unacknowledged": _("ended, unacknowledged")}.get(code, code.replace("_", " "))


def _level(level: int) -> str:
    return {1: _("L1"), 2: _("L2")}.get(level, f"L{level}")


def ask(config: Path, command: str, timeout_s: float = 10.0, **fields: Any) -> dict[str, Any]:
    """The result of one command to the agent running with ``config``; exits on failure."""
    sock = control.socket_path(cli.load_or_exit(config).site.buffer.path)
    try:
        reply = control.request(sock, command, timeout_s, **fields)
    except control.Unreachable as exc:
        cli.fail(str(exc), _("start it (sudo systemctl start edge-agent, or edge-agent run "
                             "--config {config}) and check `edge-agent logs`").format(
                                 config=config))
    if not reply.get("ok"):
        error = reply.get("error", {})
        cli.fail(f"{command}: {error.get('message', reply)}",
                 _next_step(error.get("code"), error))
    return reply["result"]


def _next_step(code: str | None, error: dict[str, Any]) -> str:
    if code == "not_found" and error.get("open") is not None:
        return _("alarms that can be acknowledged: {keys} (edge-agent alarms list)").format(
            keys=", ".join(error["open"]) or _("none"))
    if code == "rolled_back":
        return _("the previous config runs again; check the devices named above and try again")
    return _("see `edge-agent logs` for the agent's side")


def _age(now_ms: int, ts_ms: int | None) -> str:
    if ts_ms is None:
        return "-"
    seconds = max(0.0, (now_ms - ts_ms) / 1000)
    return f"{seconds:.1f} s" if seconds < 60 else time.strftime(
        "%H:%M:%S", time.localtime(ts_ms / 1000))


def _value(sample: dict[str, Any]) -> str:
    v = sample["v"]
    return "-" if v is None else f"{v:g}"


def _view(status: dict[str, Any]) -> Group:
    now = status["now_ms"]
    h = status["health"]
    head = Text.assemble((f"{status['gateway']}", "bold"), " ", "  ·  ".join([
        _("at {site}").format(site=status["site"]), f"edge-agent {status['version']}",
        _("up {seconds} s").format(seconds=f"{h['uptime_s']:.0f}"),
        _("config {hash}").format(hash=status["config"]["hash"][:12]),
        _("RSS {rss} MB, CPU {cpu}%, loop lag {lag} ms").format(
            rss=f"{h['rss_bytes'] / 2**20:.0f}", cpu=h["cpu_percent"], lag=h["loop_lag_ms"])]))
    channels = Table(title=_("channels"), title_justify="left", expand=False)
    for column, justify in [(_("channel"), "left"), (_("value"), "right"), (_("unit"), "left"),
                            (_("quality"), "left"), (_("alarm"), "left"), (_("polled"), "right")]:
        channels.add_column(column, justify=justify)
    for c in sorted(status["channels"], key=lambda c: c["ch"]):
        state = c["alarm"]
        label = _("normal") if state is None else (
            {1: _("L1 alarm"), 2: _("L2 alarm")}.get(c["level"], f"L{c['level']} alarm")
            if state == "alarm" else _class(state))
        channels.add_row(escape(c["ch"]), _value(c), escape(c["u"]),
                         Text(_quality(c["q"]), style="" if c["q"] == "good" else "yellow"),
                         Text(label, style=STYLE.get(state, "")), _age(now, c["ts"]))
    buses = Table(title=_("buses"), title_justify="left")
    buses.add_column(_("bus"))
    for column in (_("requests"), _("ok %"), _("timeouts"), _("CRC errors"), _("exceptions"),
                   _("rtt p99 ms")):
        buses.add_column(column, justify="right")
    for name, b in h["buses"].items():
        rate = b.get("success_rate")
        buses.add_row(escape(name), str(b["transactions"]),
                      Text("-" if rate is None else f"{100 * rate:.1f}",
                           style="green" if rate is None or rate > 0.99 else "yellow"),
                      str(b["timeouts"]), str(b["crc_errors"]), str(b["exceptions"]),
                      "-" if b["rtt_p99_ms"] is None else f"{b['rtt_p99_ms']}")
    up, buf = status["uplink"], status["buffer"]
    link = Text.assemble(
        (_("uplink") + " ", "bold"), (_("connected"), "green") if up["connected"] else
        (_("DISCONNECTED"), "bold red"),
        " " + _("to {broker}").format(broker=up["broker"] or _("no broker yet"))
        + (" " + _("(failovers {n})").format(n=up["failovers"]) if up["failovers"] else "")
        + "  ·  " + _("delivered {samples} samples, {events} events").format(
            samples=up["delivered"]["samples"], events=up["delivered"]["events"])
        + "  ·  " + _("waiting for PUBACK {n}").format(n=up["unacknowledged"]) + "\n",
        (_("buffer") + " ", "bold"),
        _("{samples} samples, {events} events waiting, oldest {age} old").format(
            samples=buf["samples"], events=buf["events"], age=_age(now, buf["oldest_ms"])),
        ("  ·  " + _("dropped {evicted} over quota, {expired} past retention").format(
            evicted=buf["evicted"], expired=buf["expired"]), "yellow")
        if buf["evicted"] or buf["expired"] else "")
    alarms = _alarm_table(status["alarms"], now)
    jit = h["jit"]
    kernels = Text("" if jit["compiled"] else _(
        "ALARM KERNELS NOT COMPILED ({error}): running as plain Python, far slower. "
        "Supported: {supported}").format(error=jit["error"], supported=jit["supported"]),
        style="bold white on red")
    return Group(head, kernels, _protection(h["protection"], now), channels, buses, link,
                 alarms)


def _protection(protection: dict[str, Any], now: int) -> Text:
    """Shelved alarms and channels out of service, loudly: the site is not fully protected."""
    lines = [_("shelved {key} by {by} ({reason}), {left} left").format(
        key=escape(key), by=escape(s["by"]), reason=escape(s["reason"]),
        left=_left(now, s["until_ms"])) for key, s in protection["shelved"].items()]
    lines += [_("OUT OF SERVICE {channel} by {by} ({reason}), {left} left").format(
        channel=escape(c), by=escape(s["by"]), reason=escape(s["reason"]),
        left=_left(now, s["until_ms"])) for c, s in protection["out_of_service"].items()]
    if not lines:
        return Text("")
    return Text(_("NOT FULLY PROTECTING:") + " " + "; ".join(lines),
                style="bold black on yellow")


def _left(now_ms: int, until_ms: int) -> str:
    return f"{max(0, until_ms - now_ms) / 60_000:.0f} min"


def _alarm_table(active: list[dict[str, Any]], now: int) -> Table | Text:
    if not active:
        return Text(_("no active alarms or faults"), style="green")
    table = Table(title=_("open alarms and faults"), title_justify="left")
    for column in (_("key"), _("class"), _("level"), _("state"), _("since"), _("id")):
        table.add_column(column)
    for a in active:
        state = _state(a["state"])
        if a.get("escalation"):
            state += ", " + _("escalated x{n}").format(n=a["escalation"])
        if a.get("suppressed"):
            state += ", " + {"shelved": _("SHELVED"), "out_of_service": _("OUT OF SERVICE")}.get(
                a["suppressed"], a["suppressed"].replace("_", " ").upper())
        table.add_row(escape(a["key"]), Text(_class(a["class"]),
                                             style=STYLE.get(a["class"], "")),
                      "-" if a["level"] is None else _level(a["level"]), escape(state),
                      _age(now, a["raised_ms"]), a["id"][:8])
    return table


def status(config: cli.ConfigOption, as_json: cli.JsonOption = False,
           once: Annotated[bool, typer.Option("--once", help=_("print once and exit"))] = False,
           interval: Annotated[float, typer.Option(min=0.2, help=_("seconds between updates"))
                               ] = 1.0) -> None:
    if as_json:
        cli.out.print_json(data=ask(config, "status"))
        return
    if once or not cli.out.is_terminal:
        cli.out.print(_view(ask(config, "status")))
        return
    try:
        with Live(_view(ask(config, "status")), console=cli.out, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(_view(ask(config, "status")), refresh=True)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@alarms_app.command("list", help=_("Active alarms and faults, oldest first, with their "
                                   "acknowledgement state."))
def alarms_list(config: cli.ConfigOption, as_json: cli.JsonOption = False) -> None:
    active = ask(config, "alarms")["active"]
    if as_json:
        cli.out.print_json(data=active)
        return
    cli.out.print(_alarm_table(active, int(time.time() * 1000)))


AlarmArgument = Annotated[str, typer.Argument(
    help=_("the alarm's key (gas1.co:above:1) or id (its first 8 characters will do)"))]
By = Annotated[str, typer.Option(help=_("who: your name, recorded with it"))]
Reason = Annotated[str, typer.Option(help=_("why: recorded and published with it"))]
Minutes = Annotated[float, typer.Option(min=1, help=_("for how long, minutes (it ends by "
                                                      "itself)"))]
Channel = Annotated[str, typer.Argument(help=_("the channel: gas1.co"))]


def _alarm(config: Path, alarm: str) -> dict[str, str]:
    """The command fields that name an alarm: its key, or the full id of an open one."""
    if ":" in alarm or "." in alarm:
        return {"key": alarm}
    ids = [a["id"] for a in ask(config, "alarms")["active"] if a["id"].startswith(alarm)]
    if len(ids) != 1:
        cli.fail((_("no alarm id starts with {id}") if not ids else _(
            "more than one alarm id starts with {id}")).format(id=repr(alarm)),
            _("see the ids with `edge-agent alarms list`"))
    return {"alarm": ids[0]}


def _done(what: str, result: dict[str, Any]) -> None:
    about = escape(result.get("key") or result.get("channel"))
    if result.get("alarm"):
        about += " " + _("(id {id})").format(id=result["alarm"][:8])
    line = f"[green]{what}[/] " + _("{subject} by {by}").format(subject=about,
                                                                by=escape(result["by"]))
    if result.get("state"):
        line += escape(": " + _state(result["state"]))
    cli.out.print(line, highlight=False)


@alarms_app.command("ack", help=_("Acknowledge an alarm, as the platform's operator would (the "
                                  "same code path)."))
def alarms_ack(config: cli.ConfigOption, alarm: AlarmArgument, by: By,
               note: Annotated[str | None, typer.Option(help=_("a note kept with it"))] = None
               ) -> None:
    fields: dict[str, Any] = {"by": by, **_alarm(config, alarm)}
    if note:
        fields["note"] = note
    _done(_("acknowledged"), ask(config, "ack-alarm", **fields))


@alarms_app.command("reset", help=_("Reset a latched alarm: refused while the gas is still there "
                                    "or before the ack."))
def alarms_reset(config: cli.ConfigOption, alarm: AlarmArgument, by: By) -> None:
    _done(_("reset"), ask(config, "reset-alarm", by=by, **_alarm(config, alarm)))


@alarms_app.command("handle", help=_("Record how an acknowledged alarm was handled; it closes "
                                     "once it is over."))
def alarms_handle(config: cli.ConfigOption, alarm: AlarmArgument, by: By,
                  cause: Annotated[str, typer.Option(help=_("what caused the alarm"))],
                  action: Annotated[str, typer.Option(help=_("what was done about it"))]
                  ) -> None:
    result = ask(config, "handle-alarm", by=by, cause=cause, action=action,
                 **_alarm(config, alarm))
    _done(_("closed") if result["closed"] else _("handled (closes once it is over)"), result)


@alarms_app.command("shelve", help=_("Shelve a nuisance alarm for a while: still recorded and "
                                     "published, no outputs. Level-2 alarms cannot be shelved "
                                     "unless the config allows it."))
def alarms_shelve(config: cli.ConfigOption,
                  key: Annotated[str, typer.Argument(help=_("the alarm's key: gas1.co:above:1"))],
                  by: By, reason: Reason, minutes: Minutes = 60.0) -> None:
    _done(_("shelved"), ask(config, "shelve-alarm", key=key, by=by, reason=reason,
                            minutes=minutes))


@alarms_app.command("unshelve", help=_("End a shelving before it expires."))
def alarms_unshelve(config: cli.ConfigOption,
                    key: Annotated[str, typer.Argument(help=_("the shelved alarm's key"))],
                    by: By) -> None:
    _done(_("unshelved"), ask(config, "unshelve-alarm", key=key, by=by))


@alarms_app.command("out-of-service", help=_(
    "Take a channel out of service for maintenance (calibration, replacement): its alarms "
    "drive no outputs until it returns; refused while it watches an open entry."))
def alarms_out_of_service(config: cli.ConfigOption, channel: Channel, by: By, reason: Reason,
                          minutes: Minutes = 60.0) -> None:
    _done(_("out of service:"), ask(config, "out-of-service", channel=channel, by=by,
                                    reason=reason, minutes=minutes))


@alarms_app.command("return-to-service", help=_("Return a channel to service before its time "
                                                "runs out."))
def alarms_return(config: cli.ConfigOption, channel: Channel, by: By) -> None:
    _done(_("returned to service:"), ask(config, "return-to-service", channel=channel, by=by))


@alarms_app.command("stats", help=_("Alarm-management figures against the EEMUA 191 / ISA-18.2 "
                                    "targets."))
def alarms_stats(config: cli.ConfigOption, as_json: cli.JsonOption = False) -> None:
    health = ask(config, "status")["health"]
    figures, protection = health["alarm_figures"], health["protection"]
    if as_json:
        cli.out.print_json(data={**figures, "protection": protection})
        return
    table = Table(title=_("alarm management"))
    table.add_column(_("figure"))
    table.add_column(_("now"))
    table.add_column(_("target"))
    chattering = ", ".join(f"{c} ({n})" for c, n in figures["chattering"].items()) or _("none")
    for name, value, target in [
            (_("alarms in the last 10 min"), str(figures["alarms_10min"]), _("about 1")),
            (_("flood (over 10 in 10 min)"), _("YES") if figures["flood"] else _("no"), _("no")),
            (_("stale (active over 24 h)"), str(figures["stale"]), "0"),
            (_("chattering (3+ in 60 s)"), chattering, _("none")),
            (_("mean time to acknowledge"), _seconds(figures["mean_ack_s"]), ""),
            (_("mean time to clear"), _seconds(figures["mean_clear_s"]), ""),
            (_("mean time to close (handled)"), _seconds(figures["mean_close_s"]), ""),
            (_("shelved now"), str(len(protection["shelved"])), "0"),
            (_("out of service now"), str(len(protection["out_of_service"])), "0"),
            (_("awaiting acknowledgement"), str(
                protection["awaiting"]["unacknowledged"]
                + protection["awaiting"]["returned_unacknowledged"]), "0"),
            (_("awaiting handling"), str(protection["awaiting"]["awaiting_handling"]), "0")]:
        table.add_row(name, escape(value), target)
    cli.out.print(table)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"
