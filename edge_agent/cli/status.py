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

alarms_app = typer.Typer(no_args_is_help=True, help="The running agent's active alarms: list "
                                                     "them, acknowledge one, see the figures.")
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
        ("DISCONNECTED", "bold red"), f" to {up['broker']}  ·  delivered "
        f"{up['delivered']['samples']} samples, {up['delivered']['events']} events  ·  "
        f"waiting for PUBACK {up['unacknowledged']}\n",
        ("buffer ", "bold"), f"{buf['samples']} samples, {buf['events']} events waiting, "
        f"oldest {_age(now, buf['oldest_ms'])} old", (f"  ·  dropped {buf['evicted']} "
        f"over quota, {buf['expired']} past retention", "yellow")
        if buf["evicted"] or buf["expired"] else "")
    alarms = _alarm_table(status["alarms"], now)
    return Group(head, channels, buses, link, alarms)


def _alarm_table(active: list[dict[str, Any]], now: int) -> Table | Text:
    if not active:
        return Text("no active alarms or faults", style="green")
    table = Table(title="active alarms and faults", title_justify="left")
    for column in ("key", "class", "level", "state", "since", "id"):
        table.add_column(column)
    for a in active:
        table.add_row(escape(a["key"]), Text(a["class"], style=STYLE.get(a["class"], "")),
                      "-" if a["level"] is None else f"L{a['level']}", a["state"],
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


@alarms_app.command("ack")
def alarms_ack(config: cli.ConfigOption,
               alarm: Annotated[str, typer.Argument(help="the alarm's key (gas1.co:above:1) "
                                                    "or id (its first 8 characters will do)")],
               by: Annotated[str, typer.Option(help="who acknowledges: your name")]) -> None:
    """Acknowledge an alarm, as the platform's operator would (the same code path)."""
    fields: dict[str, Any] = {"by": by}
    if ":" in alarm or "." in alarm:
        fields["key"] = alarm
    else:
        ids = [a["id"] for a in ask(config, "alarms")["active"] if a["id"].startswith(alarm)]
        if len(ids) != 1:
            cli.fail(f"{'no' if not ids else 'more than one'} alarm id starts with {alarm!r}",
                     "see the ids with `edge-agent alarms list`")
        fields["alarm"] = ids[0]
    result = ask(config, "ack-alarm", **fields)
    cli.out.print(f"[green]acknowledged[/] {escape(result['key'])} (id {result['alarm'][:8]}) "
                  f"by {escape(result['by'])}", highlight=False)


@alarms_app.command("stats")
def alarms_stats(config: cli.ConfigOption, as_json: cli.JsonOption = False) -> None:
    """Alarm-management figures against the EEMUA 191 / ISA-18.2 targets."""
    figures = ask(config, "status")["health"]["alarm_figures"]
    if as_json:
        cli.out.print_json(data=figures)
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
            ("mean time to clear", _seconds(figures["mean_clear_s"]), "")]:
        table.add_row(name, escape(value), target)
    cli.out.print(table)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"
