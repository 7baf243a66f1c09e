"""``edge-agent demo``: three simulated sites, a private broker and the agent.

The example configs in config/ are run as they are, with their buses pointed
at simulated devices on loopback, the uplink at a private mosquitto and the
buffers in a temporary directory. The live view shows what the platform
receives; part-way, each site gets a hazard from its scenario, and later the
platform's operator acknowledges the alarms with the `ack-alarm` command. Each
site's local web view is on (loopback, port 8080 and up), with the PIN DEMO_PIN.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edge_agent import log
from edge_agent._shipped import shipped_dir
from edge_agent.config import (
    Buffer,
    FileError,
    LoadedConfig,
    ModbusRtuBus,
    ModbusRtuOverTcpBus,
    Mqtt,
    SerialBus,
    Web,
    load_config,
)
from edge_agent.daemon import Agent
from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.platform import GatewayView, PlatformSubscriber
from edge_agent.profiles import Profile
from edge_agent.uplink.payloads import Topics
from edge_agent.web.pin import hash_pin
from simulators import (
    FrameSimulator,
    LineSimulator,
    ModbusRtuSimulator,
    ModbusTcpSimulator,
    Scenario,
    SimulatedDevice,
    load_scenario,
)
from simulators.pty import pty_pair

# example config -> (device, hazard) pairs the demo injects part-way
SITES = {
    "confined_space": [("bottom", "h2s_release")],
    "plating_shop": [("sulfide-bath", "exhaust_fan_stop"),
                     ("cyanide-line", "cyanide_bath_acidified")],
    "lithium_warehouse": [("bay-b", "cell_venting"), ("bay-b-h2", "cell_off_gassing")],
}
DEMO_PIN = "2468"
WEB_PORT = 8080  # the first site's; the next ones count up (or any free port)


@dataclass
class DemoSite:
    name: str
    hazards: list[tuple[str, str]]
    loaded: LoadedConfig
    devices: dict[str, SimulatedDevice]
    agent: Agent | None = None

    def inject(self) -> None:
        for device, hazard in self.hazards:
            self.devices[device].inject(hazard)


def _scenario(site: str, profile: Profile) -> Scenario | None:
    """The site's own scenario for its main device model, else the model's scenario."""
    for name in (site, profile.name):
        try:
            scenario, _ = load_scenario(name)
        except FileError:
            continue
        if scenario.profile == profile.name:
            return scenario
    return None


def _web_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def _start_site(name: str, hazards: list[tuple[str, str]], workdir: Path, broker_port: int,
                stack: contextlib.ExitStack, web_port: int, pin_hash: str) -> DemoSite:
    """Simulate every device of the example config on the kind of bus it is on, and
    point the config at them, at the private broker and at a buffer in ``workdir``.
    """
    loaded = load_config(shipped_dir("config") / f"{name}.toml")
    site = loaded.site
    devices = {}
    for i, d in enumerate(site.devices):
        profile = loaded.profiles.get(d.profile)
        devices[d.name] = SimulatedDevice(profile, d.unit_id or 1, _scenario(name, profile),
                                          seed=i)
    buses = []
    for bus in site.buses:
        on_bus = [devices[d.name] for d in site.devices if d.bus == bus.name]
        if isinstance(bus, SerialBus | ModbusRtuBus):
            device_end, agent_end = stack.enter_context(pty_pair(workdir / f"{name}-{bus.name}"))
            if isinstance(bus, ModbusRtuBus):
                server = ModbusRtuSimulator(on_bus, device_end, baudrate=bus.baudrate)
            else:
                kind = FrameSimulator if on_bus[0].profile.transport == "frame" else LineSimulator
                server = kind(on_bus[0], device_end, baudrate=bus.baudrate)
            buses.append(bus.model_copy(update={"port": agent_end}))
        else:
            framing = "rtu" if isinstance(bus, ModbusRtuOverTcpBus) else "socket"
            server = ModbusTcpSimulator(on_bus, port=free_port(), framing=framing)
            buses.append(bus.model_copy(update={"host": "127.0.0.1", "port": server.port}))
        stack.enter_context(server)
    mqtt = Mqtt(host="127.0.0.1", port=broker_port, tls="off", reconnect_max_s=2)
    web = Web(enabled=True, port=_web_port(web_port), pin_hash=pin_hash)
    site = site.model_copy(update={"buses": buses, "mqtt": mqtt, "web": web,
                                   "buffer": Buffer(path=workdir / f"{name}.db")})
    return DemoSite(name, hazards, LoadedConfig(path=loaded.path, site=site,
                                                profiles=loaded.profiles), devices)


def run_demo(seconds: float, keep: bool, console: Console) -> int:
    """Run the demo; return 0 when every polled sample reached the broker."""
    log.configure("error")  # the live view shows the alarms; errors still show
    if not console.is_terminal:
        console.width = max(console.width, 110)  # a log file: room for the summary table
    workdir = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    broker = Mosquitto(workdir=workdir).start()
    platform = PlatformSubscriber(broker.port).start()
    stack = contextlib.ExitStack()
    try:
        pin_hash = hash_pin(DEMO_PIN)
        sites = [_start_site(name, hazards, workdir, broker.port, stack, WEB_PORT + i, pin_hash)
                 for i, (name, hazards) in enumerate(SITES.items())]
        console.print(f"[bold]edge-agent demo[/]: {len(sites)} sites, broker on "
                      f"127.0.0.1:{broker.port}, working directory {workdir}")
        console.print("web view (technician PIN " + DEMO_PIN + "): " + ", ".join(
            f"{s.name} http://127.0.0.1:{s.loaded.site.web.port}/" for s in sites))
        asyncio.run(_run(sites, platform, seconds, console))
        return _summary(sites, platform, console)
    finally:
        platform.stop()
        stack.close()
        broker.stop()
        if keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def _run(sites: list[DemoSite], platform: PlatformSubscriber, seconds: float,
               console: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for site in sites:
        site.agent = Agent(site.loaded)
    runs = [asyncio.create_task(s.agent.run(stop)) for s in sites if s.agent]
    start = time.monotonic()
    inject_at = min(max(3.0, seconds * 0.2), 15.0)
    ack_at = inject_at + (seconds - inject_at) / 2
    close_at = ack_at + (seconds - ack_at) / 2
    injected = acked = closed = False
    live = Live(_view(sites, platform, 0, seconds), console=console, auto_refresh=False,
                transient=False) if console.is_terminal else contextlib.nullcontext()
    seen_events = 0
    with live:
        while not stop.is_set():
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                break
            if not injected and elapsed >= inject_at:
                for site in sites:
                    site.inject()
                injected = True
            if not acked and elapsed >= ack_at:
                _acknowledge(sites, platform)
                acked = True
            if not closed and elapsed >= close_at:
                _close(sites, platform)
                closed = True
            if isinstance(live, Live):
                live.update(_view(sites, platform, elapsed, seconds), refresh=True)
            else:
                seen_events = _print_new_events(sites, platform, console, seen_events)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
    if not isinstance(live, Live):
        _print_new_events(sites, platform, console, seen_events)
    console.print("stopping: the agents deliver what is still buffered ...")
    stop.set()
    await asyncio.gather(*runs)
    polled = {s.loaded.site.gateway_id: s.agent.counters["samples"] for s in sites if s.agent}
    # The broker acknowledged everything; give its fan-out to the platform a moment.
    await asyncio.to_thread(platform.wait_for, lambda: all(
        len(platform.gateways[g].sample_seqs) >= n for g, n in polled.items()), 5.0)


def _acknowledge(sites: list[DemoSite], platform: PlatformSubscriber) -> None:
    """The platform's operator acknowledges every active alarm, as a platform would."""
    for site in sites:
        view = platform.gateways[site.loaded.site.gateway_id]
        for key, raised in list(view.active.items()):
            if raised["class"] == "alarm":
                _command(site, platform, "ack-alarm", key=key, by="platform operator")


def _close(sites: list[DemoSite], platform: PlatformSubscriber) -> None:
    """The safety officer closes the loop: every alarm not yet acknowledged is, and
    each gets its cause and action; those that are over close at once.
    """
    for site in sites:
        view = platform.gateways[site.loaded.site.gateway_id]
        acked = {e["id"] for e in view.events if e["transition"] == "acknowledged"}
        for alarm in {e["id"] for e in view.events
                      if e["class"] == "alarm" and e["transition"] == "raised"}:
            if alarm not in acked:
                _command(site, platform, "ack-alarm", alarm=alarm, by="safety officer")
            _command(site, platform, "handle-alarm", alarm=alarm, by="safety officer",
                     cause="hazard injected by the demo", action="none: a demonstration")


def _command(site: DemoSite, platform: PlatformSubscriber, name: str, **fields: str) -> None:
    config = site.loaded.site
    prefix = Topics.for_site(config.mqtt.topic_prefix, config.site_id, config.gateway_id).prefix
    platform.client.publish(f"{prefix}/cmd/{name}", json.dumps(fields), qos=1)


def _view(sites: list[DemoSite], platform: PlatformSubscriber, elapsed: float,
          seconds: float) -> Group:
    table = Table(title=f"what the platform receives  ({elapsed:4.0f} s of {seconds:.0f} s)",
                  expand=False)
    for column in ("site", "channel", "value", "unit", "quality", "alarm", "age"):
        table.add_column(column, justify="right" if column in ("value", "age") else "left")
    now_ms = time.time() * 1000
    for site in sites:
        view = platform.gateways[site.loaded.site.gateway_id]
        for device in site.loaded.site.devices:
            for name in device.channels:
                channel = f"{device.name}.{name}"
                sample = view.latest.get(channel)
                alarms = [a for a in view.active.values() if a.get("channel") == channel]
                table.add_row(site.name, channel, *_cells(sample, alarms, now_ms))
    events = Text()
    for site in sites:
        for event in platform.gateways[site.loaded.site.gateway_id].events[-3:]:
            events.append(_event_line(site.name, event) + "\n",
                          style="red" if event["transition"] == "raised" else "green")
    return Group(table, events)


def _cells(sample: dict | None, alarms: list[dict], now_ms: float) -> list[Text | str]:
    if sample is None:
        return ["-", "", "waiting", "", ""]
    level = max((a["level"] for a in alarms), default=0)
    # Panel colours of GB 15322.1 / GB 16808: alarm red, fault yellow, normal green.
    style = ("bold red" if level == 2 else "red" if level == 1
             else "yellow" if sample["q"] != "good" else "green")
    value = "-" if sample["v"] is None else f"{sample['v']:.1f}"
    alarm = " ".join(_rule(a) for a in alarms)
    return [Text(value, style=style), sample["u"], Text(sample["q"], style=style),
            Text(alarm or "normal", style=style), f"{(now_ms - sample['ts']) / 1000:.1f} s"]


def _rule(event: dict) -> str:
    """The rule an alarm event is about, in a few words: "L2 above 14.2", "L2 stel"."""
    kind = event.get("kind", "")
    if kind in ("threshold", "rate"):
        return f"L{event['level']} {event['direction']} {event['setpoint']}"
    if kind == "combined":
        return f"L{event['level']} rule {event['rule']}"
    return f"L{event['level']} {kind}" if "level" in event else kind


def _event_line(site: str, event: dict) -> str:
    what = event.get("channel") or event.get("device") or event["key"]
    if event["transition"] == "closed":
        detail = f"by {event.get('handled_by')}: {event.get('cause')}"
    elif event["transition"] == "escalated":
        detail = f"(escalation {event.get('escalation')})"
    elif "by" in event:  # a person's act: acknowledged, handled, reset, shelved ...
        detail = f"by {event.get('by')}"
    elif event["class"] == "alarm" and "value" in event:
        detail = f"{event['value']} {event.get('unit', '')} ({_rule(event)})"
    elif event["class"] == "alarm":
        detail = f"({_rule(event)})"
    elif event["class"] == "anomaly":
        detail = f"score {event.get('score')}"
    else:
        detail = event.get("error") or event.get("kind") or ""
    return f"{site}: {event['class']} {event['transition']} {what} {detail}".rstrip()


def _print_new_events(sites: list[DemoSite], platform: PlatformSubscriber, console: Console,
                      seen: int) -> int:
    events = [(s.name, e) for s in sites
              for e in platform.gateways[s.loaded.site.gateway_id].events]
    events.sort(key=lambda pair: pair[1]["ts"])
    for name, event in events[seen:]:
        console.print(_event_line(name, event), highlight=False)
    return len(events)


def _summary(sites: list[DemoSite], platform: PlatformSubscriber, console: Console) -> int:
    table = Table(title="demo summary")
    for column in ("site", "gateway", "polled", "at platform", "alarms", "handled / closed",
                   "acked msgs", "left in buffer"):
        table.add_column(column, justify="left" if column in ("site", "gateway") else "right")
    complete = True
    for site in sites:
        agent = site.agent
        assert agent is not None
        gateway = site.loaded.site.gateway_id
        view: GatewayView = platform.gateways[gateway]
        polled, arrived = agent.counters["samples"], len(view.sample_seqs)
        raised, handled, closed = (sum(1 for e in view.events if e["class"] == "alarm"
                                       and e["transition"] == t)
                                   for t in ("raised", "handled", "closed"))
        depth = agent.final_depth or {}
        ok = arrived == polled and not any(depth.values())
        complete &= ok
        table.add_row(site.name, gateway, str(polled),
                      Text(str(arrived), style="green" if ok else "bold red"), str(raised),
                      f"{handled} / {closed}",
                      str(agent.uplink.delivered["messages"]),
                      str(sum(depth.values())) if depth else "?")
    console.print(table)
    if complete:
        console.print("[green]every polled sample reached the broker; the buffers are empty.[/]\n"
                      "polled: samples the agents read; at platform: distinct samples the "
                      "platform subscriber received; handled: alarms given a cause and an "
                      "action, closed once also over (the closed loop); acked msgs: MQTT "
                      "messages the broker acknowledged (PUBACK).")
        return 0
    console.print("[bold red]some polled samples did not reach the broker.[/]")
    return 1
