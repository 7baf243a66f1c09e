"""``edge-agent demo``: three simulated sites, a private broker and the agent.

The example configs in config/ are run as they are, with their buses pointed
at simulated devices on loopback, the uplink at a private mosquitto and the
buffers in a temporary directory. The live view shows what the platform
receives; part-way, each site gets a hazard from its scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
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
from edge_agent.config import Buffer, LoadedConfig, Mqtt, load_config
from edge_agent.daemon import Agent
from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.platform import GatewayView, PlatformSubscriber
from simulators import ModbusTcpSimulator, SimulatedDevice, load_scenario

SITES = {  # example config and scenario -> the hazard the demo injects
    "confined_space": "h2s_release",
    "plating_shop": "exhaust_fan_stop",
    "lithium_warehouse": "cell_venting",
}


@dataclass
class DemoSite:
    name: str
    hazard: str
    loaded: LoadedConfig
    simulator: ModbusTcpSimulator
    devices: list[SimulatedDevice]
    agent: Agent | None = None


def pointed_at(loaded: LoadedConfig, *, modbus_port: int, broker_port: int,
               buffer: Path) -> LoadedConfig:
    """The same site config, with its buses, uplink and buffer on this machine."""
    site = loaded.site
    buses = [bus.model_copy(update={"host": "127.0.0.1", "port": modbus_port})
             for bus in site.buses]
    mqtt = Mqtt(host="127.0.0.1", port=broker_port, tls="off", reconnect_max_s=2)
    site = site.model_copy(update={"buses": buses, "mqtt": mqtt, "buffer": Buffer(path=buffer)})
    return LoadedConfig(path=loaded.path, site=site, profiles=loaded.profiles)


def _start_site(name: str, hazard: str, workdir: Path, broker_port: int) -> DemoSite:
    loaded = load_config(shipped_dir("config") / f"{name}.toml")
    scenario, _ = load_scenario(name, loaded.profiles)
    devices = [SimulatedDevice(loaded.profiles.get(d.profile), d.unit_id, scenario, seed=i)
               for i, d in enumerate(loaded.site.devices)]
    simulator = ModbusTcpSimulator(devices, port=free_port()).start()
    loaded = pointed_at(loaded, modbus_port=simulator.port, broker_port=broker_port,
                        buffer=workdir / f"{name}.db")
    return DemoSite(name, hazard, loaded, simulator, devices)


def run_demo(seconds: float, keep: bool, console: Console) -> int:
    """Run the demo; return 0 when every polled sample reached the broker."""
    log.configure("error")  # the live view shows the alarms; errors still show
    if not console.is_terminal:
        console.width = max(console.width, 110)  # a log file: room for the summary table
    workdir = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    broker = Mosquitto(workdir=workdir).start()
    sites: list[DemoSite] = []
    platform = PlatformSubscriber(broker.port).start()
    try:
        sites = [_start_site(name, hazard, workdir, broker.port)
                 for name, hazard in SITES.items()]
        console.print(f"[bold]edge-agent demo[/]: {len(sites)} sites, broker on "
                      f"127.0.0.1:{broker.port}, working directory {workdir}")
        asyncio.run(_run(sites, platform, seconds, console))
        return _summary(sites, platform, console)
    finally:
        platform.stop()
        for site in sites:
            site.simulator.stop()
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
    injected = False
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
                    site.devices[-1].inject(site.hazard)
                injected = True
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
    alarm = " ".join(f"L{a['level']} {a['direction']} {a['setpoint']}" for a in alarms)
    return [Text(value, style=style), sample["u"], Text(sample["q"], style=style),
            Text(alarm or "normal", style=style), f"{(now_ms - sample['ts']) / 1000:.1f} s"]


def _event_line(site: str, event: dict) -> str:
    what = event.get("channel") or event.get("device") or event["key"]
    detail = (f"{event.get('value')} {event.get('unit', '')} (L{event.get('level')} "
              f"{event.get('direction')} {event.get('setpoint')})" if event["class"] == "alarm"
              else event.get("error") or "")
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
    for column in ("site", "gateway", "polled", "at platform", "alarms", "acked msgs",
                   "left in buffer"):
        table.add_column(column, justify="left" if column in ("site", "gateway") else "right")
    complete = True
    for site in sites:
        agent = site.agent
        assert agent is not None
        gateway = site.loaded.site.gateway_id
        view: GatewayView = platform.gateways[gateway]
        polled, arrived = agent.counters["samples"], len(view.sample_seqs)
        raised = sum(1 for e in view.events if e["class"] == "alarm"
                     and e["transition"] == "raised")
        depth = agent.final_depth or {}
        ok = arrived == polled and not any(depth.values())
        complete &= ok
        table.add_row(site.name, gateway, str(polled),
                      Text(str(arrived), style="green" if ok else "bold red"), str(raised),
                      str(agent.uplink.delivered["messages"]),
                      str(sum(depth.values())) if depth else "?")
    console.print(table)
    if complete:
        console.print("[green]every polled sample reached the broker; the buffers are empty.[/]\n"
                      "polled: samples the agents read; at platform: distinct samples the "
                      "platform subscriber received; acked msgs: MQTT messages the broker "
                      "acknowledged (PUBACK).")
        return 0
    console.print("[bold red]some polled samples did not reach the broker.[/]")
    return 1
