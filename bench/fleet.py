"""A fleet of gateways on one broker: N agents (the real Agent class, in one process
and one event loop, sharing the compiled kernels) against one local mosquitto.

Each agent polls its own simulated 4-gas detector every second (one simulator
serves them all, on one port per 200 units). Part-way the broker is stopped and
started again on the same port: how the agents come back shows whether the
full-jitter backoff spreads them. Then CO rises on every detector at once, and
each gateway's alarm is timed from its sample to a platform subscriber.

Figures: reconnect spread after the broker restart (p50, p90, max seconds, and
the most agents that connected within any 100 ms), messages/s acknowledged by
the broker, alarm latency p50/p99 under that burst, and rows lost (must be 0).

    python bench/fleet.py [N ...]        (default: 100; 500 full agents in one process
                                         means over 2,000 threads, too many for 2 cores)
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import math
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from edge_agent import log
from edge_agent.config import load_config
from edge_agent.daemon import Agent
from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.platform import PlatformSubscriber
from edge_agent.profiles import ProfileLibrary
from simulators import ModbusTcpSimulator, SimulatedDevice
from tests.support import last_seq

UNITS_PER_SERVER = 200
SITE = """gateway_id = "gw-{i:04d}"
site_id = "fleet"
[[buses]]
name = "field"
type = "modbus-tcp"
host = "127.0.0.1"
port = {port}
timeout_ms = 3000
[[devices]]
name = "gas1"
bus = "field"
unit_id = {unit}
profile = "generic_4gas"
poll_interval_s = 1.0
[devices.channels.co]
limits = [{{ level = 1, above = 24, deadband = 1 }}]
[mqtt]
host = "127.0.0.1"
port = {broker}
tls = "off"
reconnect_max_s = 30
[buffer]
path = "{buffer}"
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


async def fleet_run(n: int, work: Path) -> dict[str, float]:
    library = ProfileLibrary()
    devices = [SimulatedDevice(library.get("generic_4gas"), unit_id=1 + i % UNITS_PER_SERVER)
               for i in range(n)]
    for device in devices:
        device.pin("co", 2)
    with contextlib.ExitStack() as stack:
        # Persistent, like a production broker: the platform's sessions and what is
        # queued for them survive the restart, so a row lost would be the agent's.
        broker = stack.enter_context(Mosquitto(workdir=work / "broker", persistent=True))
        servers = [stack.enter_context(ModbusTcpSimulator(
            devices[k:k + UNITS_PER_SERVER], port=free_port()))
            for k in range(0, n, UNITS_PER_SERVER)]
        arrivals: list[tuple[float, dict]] = []
        lock = threading.Lock()
        platform = PlatformSubscriber(broker.port, topic="edge/v1/fleet/+/alarm",
                                      client_id="fleet-platform", clean_session=False)
        original = platform._on_message

        def timed(client, userdata, msg) -> None:
            with lock:
                arrivals.append((time.time() * 1000, json.loads(msg.payload)))
            original(client, userdata, msg)

        platform.client.on_message = timed
        platform.start()
        stack.callback(platform.stop)
        telemetry = PlatformSubscriber(broker.port, topic="edge/v1/fleet/+/telemetry",
                                       client_id="fleet-telemetry", clean_session=False).start()
        stack.callback(telemetry.stop)
        agents = []
        for i in range(n):
            folder = work / f"gw{i:04d}"
            folder.mkdir()
            config = folder / "site.toml"
            config.write_text(SITE.format(i=i, port=servers[i // UNITS_PER_SERVER].port,
                                          unit=1 + i % UNITS_PER_SERVER, broker=broker.port,
                                          buffer=folder / "buffer.db"))
            agents.append(Agent(load_config(config)))
        stop = asyncio.Event()
        started = time.monotonic()
        runs = [asyncio.create_task(a.run(stop)) for a in agents]
        await _until(lambda: all(a.uplink.connects for a in agents), 120)
        up_s = time.monotonic() - started
        await asyncio.sleep(10)  # steady polling

        before = [a.uplink.connects for a in agents]
        broker.stop()
        await asyncio.sleep(5)  # a broker restart, as after an upgrade
        broker.start()
        back_at = time.monotonic()
        reconnect_s: dict[int, float] = {}
        while len(reconnect_s) < n and time.monotonic() - back_at < 120:
            for i, a in enumerate(agents):
                if i not in reconnect_s and a.uplink.connects > before[i]:
                    reconnect_s[i] = time.monotonic() - back_at
            await asyncio.sleep(0.01)
        await asyncio.sleep(5)

        for device in devices:  # a release reaches every site at once
            device.pin("co", 40)
        await _until(lambda: _raised(arrivals, lock) >= n, 60)
        await asyncio.sleep(3)
        stop.set()
        await asyncio.gather(*runs)
        elapsed = time.monotonic() - started
        latencies = [t - e["ts"] for t, e in arrivals
                     if e.get("key") == "gas1.co:above:1" and e["transition"] == "raised"]
        messages = sum(a.uplink.delivered["messages"] for a in agents)
        lost = 0
        for i in range(n):
            last = last_seq(work / f"gw{i:04d}" / "buffer.db")
            got = telemetry.gateways[f"gw-{i:04d}"].sample_seqs | {
                e["seq"] for e in platform.gateways[f"gw-{i:04d}"].events}
            lost += len(set(range(1, last + 1)) - got)
        spread = sorted(reconnect_s.values())
        bursts = max(sum(1 for s in spread if lo <= s < lo + 0.1)
                     for lo in [x / 10 for x in range(int(10 * spread[-1]) + 1)])
    return {"agents": n, "start_all_connected_s": round(up_s, 1),
            "reconnected": len(spread), "reconnect_p50_s": round(statistics.median(spread), 2),
            "reconnect_p90_s": round(percentile(spread, 90), 2),
            "reconnect_max_s": round(spread[-1], 2), "most_within_100ms": bursts,
            "messages_per_s": round(messages / elapsed), "alarms": len(latencies),
            "alarm_p50_ms": round(statistics.median(latencies), 1),
            "alarm_p99_ms": round(percentile(latencies, 99), 1), "rows_lost": lost}


def _raised(arrivals: list, lock: threading.Lock) -> int:
    with lock:
        return sum(1 for _, e in arrivals if e.get("transition") == "raised")


async def _until(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the fleet did not get there in time")
        await asyncio.sleep(0.05)


def main() -> None:
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: where a large fleet waits
    sizes = [int(a) for a in sys.argv[1:]] or [100]
    log.configure("error")
    results = []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"edge-agent-fleet-{n}-"))
        try:
            results.append(asyncio.run(fleet_run(n, work)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        r = results[-1]
        print(f"{n} agents: all connected {r['start_all_connected_s']} s after start; after a "
              f"broker restart {r['reconnected']} reconnected, p50 {r['reconnect_p50_s']} s, p90 "
              f"{r['reconnect_p90_s']} s, max {r['reconnect_max_s']} s, at most "
              f"{r['most_within_100ms']} in one 100 ms; {r['messages_per_s']} messages/s acked; "
              f"{r['alarms']} simultaneous alarms p50 {r['alarm_p50_ms']} ms p99 "
              f"{r['alarm_p99_ms']} ms; rows lost {r['rows_lost']}", flush=True)
    print(json.dumps({f"n{r['agents']}": r for r in results}))


if __name__ == "__main__":
    main()
