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

alarms_app = typer.Typer(no_args_is_help=True, help="The running agent's alarms: list them, "
                         "acknowledge, reset, record how one was handled, shelve, take a "
                         "channel out of service, see the figures.")
# Gas-panel colours (GB 16808): alarm red, fault yellow, normal green.
STYLE = {"alarm": "bold white on red", "fault": "black on yellow", "anomaly": "magenta",
         None: "green"}


def ask(config: Path, command: str, timeout_s: float = 10.0, **fields: Any) -> dict[str, Any]:
    """The result of one command to the agent running with ``config``; exits on failure."""
    sock = control.socket_path(cli.load_or_exit(config).site.buffer.path)
    try:
        reply = control.request(sock, command, timeout_s, **fields)
    except control.Unreachable as exc:
        cli.fail(str(exc), f"start it (sudo systemctl start edge-agent, or edge-agent run "
                 f"--config {config}) and check `edge-agent logs`")
    if not reply.get("ok"):
        error = reply.get("error", {})
        cli.fail(f"{command}: {error.get('message', reply)}",
                 _next_step(error.get("code"), error))
    return reply["result"]


def _next_step(code: str | None, error: dict[str, Any]) -> str:
    if code == "not_found" and error.get("open") is not None:
        return ("alarms that can be acknowledged: " + (", ".join(error["open"]) or "none")
                + " (edge-agent alarms list)")
    if code == "rolled_back":
        return "the previous config runs again; check the devices named above and try again"
    return "see `edge-agent logs` for the agent's side"


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
    head = Text.assemble(
        (f"{status['gateway']}", "bold"), f" at {status['site']}  ·  edge-agent "
        f"{status['version']}  ·  up {h['uptime_s']:.0f} s  ·  config "
        f"{status['config']['hash'][:12]}  ·  RSS {h['rss_bytes'] / 2**20:.0f} MB, CPU "
        f"{h['cpu_percent']}%, loop lag {h['loop_lag_ms']} ms")
    channels = Table(title="channels", title_justify="left", expand=False)
    for column in ("channel", "value", "unit", "quality", "alarm", "polled"):
        channels.add_column(column, justify="right" if column in ("value", "polled") else "left")
    for c in sorted(status["channels"], key=lambda c: c["ch"]):
        state = c["alarm"]
        label = "normal" if state is None else (f"L{c['level']} alarm" if state == "alarm"
                                                  else state)
        channels.add_row(escape(c["ch"]), _value(c), escape(c["u"]),
                         Text(c["q"], style="" if c["q"] == "good" else "yellow"),
                         Text(label, style=STYLE.get(state, "")), _age(now, c["ts"]))
    buses = Table(title="buses", title_justify="left")
    for column in ("bus", "requests", "ok %", "timeouts", "CRC errors", "exceptions",
                   "rtt p99 ms"):
        buses.add_column(column, justify="left" if column == "bus" else "right")
    for name, b in h["buses"].items():
        rate = b.get("success_rate")
        buses.add_row(escape(name), str(b["transactions"]),
                      Text("-" if rate is None else f"{100 * rate:.1f}",
                           style="green" if rate is None or rate > 0.99 else "yellow"),
                      str(b["timeouts"]), str(b["crc_errors"]), str(b["exceptions"]),
                      "-" if b["rtt_p99_ms"] is None else f"{b['rtt_p99_ms']}")
    up, buf = status["uplink"], status["buffer"]
    link = Text.assemble(
        ("uplink ", "bold"), ("connected", "green") if up["connected"] else
        ("DISCONNECTED", "bold red"), f" to {up['broker'] or 'no broker yet'}"
        + (f" (failovers {up['failovers']})" if up["failovers"] else "") + "  ·  delivered "
        f"{up['delivered']['samples']} samples, {up['delivered']['events']} events  ·  "
        f"waiting for PUBACK {up['unacknowledged']}\n",
        ("buffer ", "bold"), f"{buf['samples']} samples, {buf['events']} events waiting, "
        f"oldest {_age(now, buf['oldest_ms'])} old", (f"  ·  dropped {buf['evicted']} "
        f"over quota, {buf['expired']} past retention", "yellow")
        if buf["evicted"] or buf["expired"] else "")
    alarms = _alarm_table(status["alarms"], now)
    jit = h["jit"]
    kernels = Text("" if jit["compiled"] else f"ALARM KERNELS NOT COMPILED ({jit['error']}): "
                   f"running as plain Python, far slower. Supported: {jit['supported']}",
                   style="bold white on red")
    return Group(head, kernels, _protection(h["protection"], now), channels, buses, link,
                 alarms)


def _protection(protection: dict[str, Any], now: int) -> Text:
    """Shelved alarms and channels out of service, loudly: the site is not fully protected."""
    lines = [f"shelved {escape(key)} by {escape(s['by'])} ({escape(s['reason'])}), "
             f"{_left(now, s['until_ms'])} left" for key, s in protection["shelved"].items()]
    lines += [f"OUT OF SERVICE {escape(c)} by {escape(s['by'])} ({escape(s['reason'])}), "
              f"{_left(now, s['until_ms'])} left"
              for c, s in protection["out_of_service"].items()]
    if not lines:
        return Text("")
    return Text("NOT FULLY PROTECTING: " + "; ".join(lines), style="bold black on yellow")


def _left(now_ms: int, until_ms: int) -> str:
    return f"{max(0, until_ms - now_ms) / 60_000:.0f} min"


def _alarm_table(active: list[dict[str, Any]], now: int) -> Table | Text:
    if not active:
        return Text("no active alarms or faults", style="green")
    table = Table(title="open alarms and faults", title_justify="left")
    for column in ("key", "class", "level", "state", "since", "id"):
        table.add_column(column)
    for a in active:
        state = a["state"].replace("_", " ")
        if a.get("escalation"):
            state += f", escalated x{a['escalation']}"
        if a.get("suppressed"):
            state += f", {a['suppressed'].replace('_', ' ').upper()}"
        table.add_row(escape(a["key"]), Text(a["class"], style=STYLE.get(a["class"], "")),
                      "-" if a["level"] is None else f"L{a['level']}", escape(state),
                      _age(now, a["raised_ms"]), a["id"][:8])
    return table


def status(config: cli.ConfigOption, as_json: cli.JsonOption = False,
           once: Annotated[bool, typer.Option("--once", help="print once and exit")] = False,
           interval: Annotated[float, typer.Option(min=0.2, help="seconds between updates")
                               ] = 1.0) -> None:
    """The running agent: channels, alarms, buses, uplink and buffer, updated live."""
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


@alarms_app.command("list")
def alarms_list(config: cli.ConfigOption, as_json: cli.JsonOption = False) -> None:
    """Active alarms and faults, oldest first, with their acknowledgement state."""
    active = ask(config, "alarms")["active"]
    if as_json:
        cli.out.print_json(data=active)
        return
    cli.out.print(_alarm_table(active, int(time.time() * 1000)))


AlarmArgument = Annotated[str, typer.Argument(
    help="the alarm's key (gas1.co:above:1) or id (its first 8 characters will do)")]
By = Annotated[str, typer.Option(help="who: your name, recorded with it")]
Reason = Annotated[str, typer.Option(help="why: recorded and published with it")]
Minutes = Annotated[float, typer.Option(min=1, help="for how long, minutes (it ends by itself)")]


def _alarm(config: Path, alarm: str) -> dict[str, str]:
    """The command fields that name an alarm: its key, or the full id of an open one."""
    if ":" in alarm or "." in alarm:
        return {"key": alarm}
    ids = [a["id"] for a in ask(config, "alarms")["active"] if a["id"].startswith(alarm)]
    if len(ids) != 1:
        cli.fail(f"{'no' if not ids else 'more than one'} alarm id starts with {alarm!r}",
                 "see the ids with `edge-agent alarms list`")
    return {"alarm": ids[0]}


def _done(what: str, result: dict[str, Any]) -> None:
    about = result.get("key") or result.get("channel")
    ident = f" (id {result['alarm'][:8]})" if result.get("alarm") else ""
    state = f": {result['state'].replace('_', ' ')}" if result.get("state") else ""
    cli.out.print(f"[green]{what}[/] {escape(about)}{ident} by {escape(result['by'])}"
                  f"{escape(state)}", highlight=False)


@alarms_app.command("ack")
def alarms_ack(config: cli.ConfigOption, alarm: AlarmArgument, by: By,
               note: Annotated[str | None, typer.Option(help="a note kept with it")] = None
               ) -> None:
    """Acknowledge an alarm, as the platform's operator would (the same code path)."""
    fields: dict[str, Any] = {"by": by, **_alarm(config, alarm)}
    if note:
        fields["note"] = note
    _done("acknowledged", ask(config, "ack-alarm", **fields))


@alarms_app.command("reset")
def alarms_reset(config: cli.ConfigOption, alarm: AlarmArgument, by: By) -> None:
    """Reset a latched alarm: refused while the gas is still there or before the ack."""
    _done("reset", ask(config, "reset-alarm", by=by, **_alarm(config, alarm)))


@alarms_app.command("handle")
def alarms_handle(config: cli.ConfigOption, alarm: AlarmArgument, by: By,
                  cause: Annotated[str, typer.Option(help="what caused the alarm")],
                  action: Annotated[str, typer.Option(help="what was done about it")]) -> None:
    """Record how an acknowledged alarm was handled; it closes once it is over."""
    result = ask(config, "handle-alarm", by=by, cause=cause, action=action,
                 **_alarm(config, alarm))
    _done("closed" if result["closed"] else "handled (closes once it is over)", result)


@alarms_app.command("shelve")
def alarms_shelve(config: cli.ConfigOption,
                  key: Annotated[str, typer.Argument(help="the alarm's key: gas1.co:above:1")],
                  by: By, reason: Reason, minutes: Minutes = 60.0) -> None:
    """Shelve a nuisance alarm for a while: still recorded and published, no outputs.
    Level-2 alarms cannot be shelved unless the config allows it.
    """
    _done("shelved", ask(config, "shelve-alarm", key=key, by=by, reason=reason,
                         minutes=minutes))


@alarms_app.command("unshelve")
def alarms_unshelve(config: cli.ConfigOption,
                    key: Annotated[str, typer.Argument(help="the shelved alarm's key")],
                    by: By) -> None:
    """End a shelving before it expires."""
    _done("unshelved", ask(config, "unshelve-alarm", key=key, by=by))


@alarms_app.command("out-of-service")
def alarms_out_of_service(
        config: cli.ConfigOption,
        channel: Annotated[str, typer.Argument(help="the channel: gas1.co")],
        by: By, reason: Reason, minutes: Minutes = 60.0) -> None:
    """Take a channel out of service for maintenance (calibration, replacement): its
    alarms drive no outputs until it returns; refused while it watches an open entry.
    """
    _done("out of service:", ask(config, "out-of-service", channel=channel, by=by,
                                 reason=reason, minutes=minutes))


@alarms_app.command("return-to-service")
def alarms_return(config: cli.ConfigOption,
                  channel: Annotated[str, typer.Argument(help="the channel: gas1.co")],
                  by: By) -> None:
    """Return a channel to service before its time runs out."""
    _done("returned to service:", ask(config, "return-to-service", channel=channel, by=by))


@alarms_app.command("stats")
def alarms_stats(config: cli.ConfigOption, as_json: cli.JsonOption = False) -> None:
    """Alarm-management figures against the EEMUA 191 / ISA-18.2 targets."""
    health = ask(config, "status")["health"]
    figures, protection = health["alarm_figures"], health["protection"]
    if as_json:
        cli.out.print_json(data={**figures, "protection": protection})
        return
    table = Table(title="alarm management")
    table.add_column("figure")
    table.add_column("now")
    table.add_column("target")
    chattering = ", ".join(f"{c} ({n})" for c, n in figures["chattering"].items()) or "none"
    for name, value, target in [
            ("alarms in the last 10 min", str(figures["alarms_10min"]), "about 1"),
            ("flood (over 10 in 10 min)", "YES" if figures["flood"] else "no", "no"),
            ("stale (active over 24 h)", str(figures["stale"]), "0"),
            ("chattering (3+ in 60 s)", chattering, "none"),
            ("mean time to acknowledge", _seconds(figures["mean_ack_s"]), ""),
            ("mean time to clear", _seconds(figures["mean_clear_s"]), ""),
            ("mean time to close (handled)", _seconds(figures["mean_close_s"]), ""),
            ("shelved now", str(len(protection["shelved"])), "0"),
            ("out of service now", str(len(protection["out_of_service"])), "0"),
            ("awaiting acknowledgement", str(protection["awaiting"]["unacknowledged"]
                                             + protection["awaiting"]["returned_unacknowledged"]),
             "0"),
            ("awaiting handling", str(protection["awaiting"]["awaiting_handling"]), "0")]:
        table.add_row(name, escape(value), target)
    cli.out.print(table)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"
