"""A fleet of gateways on one broker: N agents (the real Agent class, with simulated
detectors) against one local mosquitto.

The agents run in worker processes of at most 50 agents each (one event loop per
process, sharing the compiled kernels): a real gateway has its own cores, 500 agents
with their writer and uplink threads in one interpreter would measure the GIL rather
than the broker, and paho's select() fails on descriptors above 1023, which 100 agents
in one process reach. Each agent polls its own simulated 4-gas detector (one simulator
serves 200 of them); the poll interval grows with N (N/100 s) so that the two cores here
carry the same sample rate at every fleet size while the broker carries N connections.
Part-way the broker is stopped and started again on the same port: how the agents come
back shows whether the full-jitter backoff spreads them. Then CO rises on every
detector at once, and each gateway's alarm is timed from its sample to a platform
subscriber.

Figures: reconnect spread after the broker restart (p50, p90, max seconds, and the
most agents that connected within any 100 ms), messages/s acknowledged by the broker,
alarm latency p50/p99 under that burst, and rows lost (must be 0).

With --cluster the broker is a 3-node NATS cluster speaking MQTT (edge_agent/demo/
nats.py): each agent is given the three nodes, starting with its own home node, so the
fleet is spread over them; the platform listens on node 3. CO rises on every site
before, during and after a failover: node 1 is SIGKILLed just before the second
burst. Figures: the failover time of the agents that were on node 1 (kill to their
reconnect: p50, p99, and a histogram in 0.5 s steps, which the jitter must spread),
messages/s at the cluster, alarm latency p50/p99 in each burst, and rows lost.

    python bench/fleet.py [--cluster] [N ...]        (default: 100 500)
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import math
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edge_agent import log
from edge_agent.config import load_config
from edge_agent.daemon import Agent
from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.nats import NatsCluster
from edge_agent.demo.platform import PlatformSubscriber
from edge_agent.profiles import ProfileLibrary
from simulators import ModbusTcpSimulator, SimulatedDevice
from tests.support import last_seq

UNITS_PER_SERVER = 200
AGENTS_PER_PROCESS = 50
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
poll_interval_s = {interval}
[devices.channels.co]
limits = [{{ level = 1, above = 24, deadband = 1 }}]
[mqtt]
{broker}
tls = "off"
reconnect_max_s = 30
[buffer]
path = "{buffer}"
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def run_agents(configs: list[Path], first: int, connects, messages, ready, stop) -> None:
    """A worker process: build these agents, wait at `ready` for the others, run them
    until `stop` is set, and publish each agent's connect count and acknowledged
    messages into the shared arrays at `first` + i.
    """
    log.configure("error")
    faulthandler.register(signal.SIGUSR1)
    agents = [Agent(load_config(c)) for c in configs]
    ready.wait()
    asyncio.run(_run_agents(agents, first, connects, messages, stop))


async def _run_agents(agents, first, connects, messages, stop) -> None:
    # Each agent stops its uplink on the loop's default executor, which has only
    # cpu + 4 threads: 50 agents stopping at once would queue behind each other.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(len(agents) + 4))
    done = asyncio.Event()
    runs = [asyncio.create_task(a.run(done)) for a in agents]
    while not stop.is_set():
        for i, a in enumerate(agents):
            connects[first + i] = a.uplink.connects
        await asyncio.sleep(0.01)
    done.set()
    await asyncio.gather(*runs)
    for i, a in enumerate(agents):
        messages[first + i] = a.uplink.delivered["messages"]


class Fleet:
    """N simulated detectors and N agents in worker processes, each agent's [mqtt]
    broker lines given by ``mqtt(i)``; started with ``start``, stopped with ``stop``.
    """

    def __init__(self, n: int, work: Path, stack: contextlib.ExitStack, mqtt) -> None:
        library = ProfileLibrary()
        self.n = n
        self.devices = [SimulatedDevice(library.get("generic_4gas"),
                                        unit_id=1 + i % UNITS_PER_SERVER) for i in range(n)]
        for device in self.devices:  # clean air, so the only alarms are the CO bursts'
            device.pin("o2", 20.9)
            device.pin("co", 2)
        spawn = multiprocessing.get_context("spawn")
        self.connects = spawn.Array("i", n, lock=False)
        self.messages = spawn.Array("i", n, lock=False)
        self._stop = spawn.Event()
        servers = [stack.enter_context(ModbusTcpSimulator(
            self.devices[k:k + UNITS_PER_SERVER], port=free_port()))
            for k in range(0, n, UNITS_PER_SERVER)]
        configs = []
        for i in range(n):
            folder = work / f"gw{i:04d}"
            folder.mkdir()
            configs.append(folder / "site.toml")
            configs[-1].write_text(SITE.format(
                i=i, port=servers[i // UNITS_PER_SERVER].port, unit=1 + i % UNITS_PER_SERVER,
                interval=max(1.0, n / 100), broker=mqtt(i), buffer=folder / "buffer.db"))
        slices = range(0, n, AGENTS_PER_PROCESS)
        self._ready = spawn.Barrier(len(slices) + 1)
        self.workers = [spawn.Process(target=run_agents, daemon=True, args=(
            configs[k:k + AGENTS_PER_PROCESS], k, self.connects, self.messages, self._ready,
            self._stop)) for k in slices]
        stack.callback(self._stop.set)

    async def start(self) -> None:
        for w in self.workers:
            w.start()
        await asyncio.to_thread(self._ready.wait, 300)  # every worker has built its agents

    async def stop(self) -> None:
        self._stop.set()
        for w in self.workers:
            await asyncio.to_thread(w.join, 120)
            if w.exitcode is None:
                os.kill(w.pid, signal.SIGUSR1)  # its threads' stacks, on stderr
                await asyncio.sleep(1)
            if w.exitcode != 0:
                raise RuntimeError(f"an agent worker exited with {w.exitcode}")

    def pin_all(self, name: str, value: float) -> None:
        for device in self.devices:
            device.pin(name, value)


def rows_lost(n: int, work: Path, telemetry: PlatformSubscriber,
              alarms: PlatformSubscriber) -> int:
    lost = 0
    for i in range(n):
        last = last_seq(work / f"gw{i:04d}" / "buffer.db")
        got = telemetry.gateways[f"gw-{i:04d}"].sample_seqs | {
            e["seq"] for e in alarms.gateways[f"gw-{i:04d}"].events}
        lost += len(set(range(1, last + 1)) - got)
    return lost


async def fleet_run(n: int, work: Path) -> dict[str, float]:
    with contextlib.ExitStack() as stack:
        # Persistent, like a production broker: the platform's sessions and what is
        # queued for them survive the restart, so a row lost would be the agent's.
        broker = stack.enter_context(Mosquitto(workdir=work / "broker", persistent=True))
        fleet = Fleet(n, work, stack, lambda i: f'host = "127.0.0.1"\nport = {broker.port}')
        connects, messages = fleet.connects, fleet.messages
        arrivals: list[tuple[float, dict]] = []
        lock = threading.Lock()
        platform = PlatformSubscriber(broker.port, topic="edge/v1/fleet/+/alarm",
                                      client_id="fleet-platform", clean_session=False)
        original = platform._on_message

        redelivered = [0]
        platform_connects = [0]
        subscribe = platform.client.on_connect

        def timed(client, userdata, msg) -> None:
            with lock:
                arrivals.append((time.time() * 1000, json.loads(msg.payload)))
                redelivered[0] += msg.dup
            original(client, userdata, msg)

        def connected(client, *args) -> None:
            platform_connects[0] += 1
            subscribe(client, *args)

        platform.client.on_message = timed
        platform.client.on_connect = connected
        platform.start()
        stack.callback(platform.stop)
        telemetry = PlatformSubscriber(broker.port, topic="edge/v1/fleet/+/telemetry",
                                       client_id="fleet-telemetry", clean_session=False).start()
        stack.callback(telemetry.stop)
        await fleet.start()
        started = time.monotonic()
        await _until(lambda: all(connects), 120)
        up_s = time.monotonic() - started
        await asyncio.sleep(10)  # steady polling

        before = list(connects)
        broker.stop()
        await asyncio.sleep(5)  # a broker restart, as after an upgrade
        broker.start()
        back_at = time.monotonic()
        reconnect_s: dict[int, float] = {}
        while len(reconnect_s) < n and time.monotonic() - back_at < 120:
            for i in range(n):
                if i not in reconnect_s and connects[i] > before[i]:
                    reconnect_s[i] = time.monotonic() - back_at
            await asyncio.sleep(0.01)
        await asyncio.sleep(5)

        connects_before_burst, platform_before_burst = sum(connects), platform_connects[0]
        fleet.pin_all("co", 40)  # a release reaches every site at once
        await _until(lambda: _raised(arrivals, lock) >= n, 60)
        await asyncio.sleep(3)
        burst_reconnects = sum(connects) - connects_before_burst
        platform_reconnects = platform_connects[0] - platform_before_burst
        await fleet.stop()
        elapsed = time.monotonic() - started
        # The first copy of each gateway's alarm; QoS 1 may bring it again after a
        # reconnect, and those copies are counted, not timed.
        first: dict[str, float] = {}
        copies = 0
        for t, e in arrivals:
            if e.get("key") == "gas1.co:above:1" and e["transition"] == "raised":
                copies += 1
                first.setdefault(e["id"], t - e["ts"])
        latencies = list(first.values())
        lost = rows_lost(n, work, telemetry, platform)
        spread = sorted(reconnect_s.values())
        bursts = max(sum(1 for s in spread if lo <= s < lo + 0.1)
                     for lo in [x / 10 for x in range(int(10 * spread[-1]) + 1)])
    return {"agents": n, "processes": len(fleet.workers),
            "poll_interval_s": max(1.0, n / 100),
            "start_all_connected_s": round(up_s, 1),
            "reconnected": len(spread), "reconnect_p50_s": round(statistics.median(spread), 2),
            "reconnect_p90_s": round(percentile(spread, 90), 2),
            "reconnect_max_s": round(spread[-1], 2), "most_within_100ms": bursts,
            "messages_per_s": round(sum(messages) / elapsed), "alarms": len(latencies),
            "alarm_copies": copies, "redelivered": redelivered[0],
            "agent_reconnects_in_burst": burst_reconnects,
            "platform_reconnects_in_burst": platform_reconnects,
            "alarm_p50_ms": round(statistics.median(latencies), 1),
            "alarm_p99_ms": round(percentile(latencies, 99), 1), "rows_lost": lost}


async def cluster_run(n: int, work: Path) -> dict[str, float]:
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(NatsCluster(work / "nats"))
        ports = cluster.mqtt_ports

        def mqtt(i: int) -> str:  # home node i % 3 first, then the others in turn
            nodes = ", ".join(f'{{ host = "127.0.0.1", port = {ports[(i + k) % 3]} }}'
                              for k in range(3))
            return f"endpoints = [{nodes}]"

        fleet = Fleet(n, work, stack, mqtt)
        arrivals: list[tuple[float, dict]] = []
        lock = threading.Lock()
        platform = PlatformSubscriber(ports[2], topic="edge/v1/fleet/+/alarm",
                                      client_id="fleet-platform", clean_session=False)
        original = platform._on_message

        def timed(client, userdata, msg) -> None:
            with lock:
                arrivals.append((time.time() * 1000, json.loads(msg.payload)))
            original(client, userdata, msg)

        platform.client.on_message = timed
        platform.start()
        stack.callback(platform.stop)
        telemetry = PlatformSubscriber(ports[2], topic="edge/v1/fleet/+/telemetry",
                                       client_id="fleet-telemetry", clean_session=False).start()
        stack.callback(telemetry.stop)
        await fleet.start()
        started = time.monotonic()
        await _until(lambda: all(fleet.connects), 180)
        await asyncio.sleep(10)  # steady polling

        async def burst() -> tuple[float, float]:
            """CO on every site, then clean air: alarm latency p50 and p99, ms."""
            since = time.time() * 1000
            fleet.pin_all("co", 40)
            await _until(lambda: len(_first(arrivals, lock, since, "raised")) >= n, 180)
            latencies = list(_first(arrivals, lock, since, "raised").values())
            fleet.pin_all("co", 2)
            await _until(lambda: len(_first(arrivals, lock, since, "returned_to_normal"))
                         >= n, 180)
            return (round(statistics.median(latencies), 1),
                    round(percentile(latencies, 99), 1))

        before = await burst()
        on_node_1 = [i for i in range(n) if i % 3 == 0]
        counts = list(fleet.connects)
        killed_at = time.monotonic()
        cluster.kill(0)
        failover_s: dict[int, float] = {}

        async def watch() -> None:
            while len(failover_s) < len(on_node_1) and time.monotonic() - killed_at < 180:
                for i in on_node_1:
                    if i not in failover_s and fleet.connects[i] > counts[i]:
                        failover_s[i] = time.monotonic() - killed_at
                await asyncio.sleep(0.01)

        watching = asyncio.create_task(watch())
        during = await burst()
        await watching
        await asyncio.sleep(5)
        after = await burst()
        reconnects = sum(fleet.connects) - sum(counts)
        await fleet.stop()
        elapsed = time.monotonic() - started
        lost = rows_lost(n, work, telemetry, platform)
    spread = sorted(failover_s.values())
    histogram: dict[str, int] = {}
    for value in spread:
        step = f"{math.floor(value * 2) / 2:.1f}"
        histogram[step] = histogram.get(step, 0) + 1
    return {"gateways": n, "on_killed_node": len(on_node_1), "failed_over": len(spread),
            "failover_p50_s": round(statistics.median(spread), 2),
            "failover_p99_s": round(percentile(spread, 99), 2),
            "failover_histogram_0_5s": histogram, "reconnects_after_kill": reconnects,
            "messages_per_s": round(sum(fleet.messages) / elapsed),
            "alarm_p50_ms_before": before[0], "alarm_p99_ms_before": before[1],
            "alarm_p50_ms_during": during[0], "alarm_p99_ms_during": during[1],
            "alarm_p50_ms_after": after[0], "alarm_p99_ms_after": after[1],
            "alarm_p99_ms": max(before[1], during[1], after[1]), "lost": lost}


def _first(arrivals: list, lock: threading.Lock, since_ms: float,
           transition: str) -> dict[str, float]:
    """Per gateway, the latency of its first ``transition`` of gas1.co:above:1 since then."""
    with lock:
        found: dict[str, float] = {}
        for t, e in arrivals:
            if (e.get("key") == "gas1.co:above:1" and e.get("transition") == transition
                    and e["ts"] >= since_ms):
                found.setdefault(e["gateway"], t - e["ts"])
        return found


def _raised(arrivals: list, lock: threading.Lock) -> int:
    with lock:
        return len({e["id"] for _, e in arrivals if e.get("transition") == "raised"})


async def _until(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the fleet did not get there in time")
        await asyncio.sleep(0.05)


def main() -> None:
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: where a large fleet waits
    args = sys.argv[1:]
    cluster = "--cluster" in args
    sizes = [int(a) for a in args if a != "--cluster"] or [100, 500]
    log.configure("error")
    if cluster:
        for n in sizes:
            work = Path(tempfile.mkdtemp(prefix=f"edge-agent-cluster-{n}-"))
            try:
                result = asyncio.run(cluster_run(n, work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(json.dumps(result), flush=True)  # the last line: the last size
        return
    results = []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"edge-agent-fleet-{n}-"))
        try:
            results.append(asyncio.run(fleet_run(n, work)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        r = results[-1]
        print(f"{n} agents in {r['processes']} processes polling every "
              f"{r['poll_interval_s']:g} s: all connected {r['start_all_connected_s']} s after "
              f"start; after a broker restart {r['reconnected']} reconnected, p50 "
              f"{r['reconnect_p50_s']} s, p90 {r['reconnect_p90_s']} s, max "
              f"{r['reconnect_max_s']} s, at most {r['most_within_100ms']} in one 100 ms; "
              f"{r['messages_per_s']} messages/s acked; {r['alarms']} simultaneous alarms "
              f"({r['alarm_copies']} copies, {r['redelivered']} with DUP; reconnects in the "
              f"burst: {r['agent_reconnects_in_burst']} agents, "
              f"{r['platform_reconnects_in_burst']} platform) p50 "
              f"{r['alarm_p50_ms']} ms p99 {r['alarm_p99_ms']} ms; rows lost {r['rows_lost']}",
              flush=True)
    print(json.dumps({f"n{r['agents']}": r for r in results}))


if __name__ == "__main__":
    main()
