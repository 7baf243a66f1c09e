"""How many points a second one agent carries, and what they cost it.

The published figures to beat (PEER_LESSONS.md): EMQX NeuronEX 3.2.1, on a 4-core
Xeon against a Modbus TCP simulator with contiguous addresses, polled 10,000 points/s
at a 1 s interval on 3 % of the machine (0.12 of one core) and 199 MB, and 100,000
points/s on 30 % (1.2 cores) and 497 MB.

The same test here, with more done per point: devices of 100 contiguous holding
registers (a profile written here: flammable gas in %LEL, so every point gets the
default two-level limits; with --gas co also STEL/TWA exposure of GBZ 2.1), every
device polled once a second, every point judged by the alarm core, stored in the
SQLite buffer and forwarded over MQTT to a private mosquitto, where a subscriber
counts what arrives.
Devices are spread over Modbus TCP buses of at most 50 (one connection each, one
transaction at a time), served by simulators in this process.

For each rate, after a warm-up, over WINDOW_S: points/s polled (the buffer's sequence
numbers) and delivered (at the subscriber), the agent's CPU (utime + stime, % of one
core), its VmRSS, how late the samples reached the platform (arrival minus sample
time, p50 / p99), the poll jitter (each device's consecutive sample times minus 1 s,
p99), and the backlog left in the buffer. Everything runs on this machine's cores:
the simulators and the subscriber (this process) and mosquitto are printed too.

    python -m bench.throughput [--gas co] [POINTS_PER_S ...]   (default: 1000 10000 30000)
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.sim_site import cpu_s, rss_mb, start_agent
from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.profiles import ProfileLibrary
from edge_agent.uplink import payloads
from simulators import ModbusTcpSimulator, SimulatedDevice
from simulators.device import Baseline, Scenario
from tests.support import buffered, last_seq

POINTS, PER_BUS, PER_SERVER, WARM_S, WINDOW_S = 100, 50, 200, 15, 30
GASES = {"flammable": ("%LEL", 100), "co": ("ppm", 1000)}  # unit, top of the range


def profile_text(gas: str) -> str:
    """100 contiguous holding registers of one gas, each a published channel."""
    unit, top = GASES[gas]
    return "\n".join(
        ['name = "bench_block"', 'vendor = "bench"', 'model = "100 contiguous registers"',
         'follows = "a Modbus TCP simulator with contiguous addresses"',
         'source = "bench/throughput.py"', "registers = ["]
        + [f'  {{ name = "p{i:03d}", address = {i}, scale = 0.1, unit = "{unit}", '
           f'gas = "{gas}", range = [0, {top}] }},' for i in range(POINTS)] + ["]"])


class Counter:
    """The platform's side: count the samples that arrive and how late they are."""

    def __init__(self, port: int) -> None:
        self.samples, self.late_ms, self.times = 0, [], {}
        self._lock, self._subscribed = threading.Lock(), threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe("edge/v1/+/+/telemetry", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("no SUBACK from the bench broker")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now_ms = time.time() * 1000
        samples = payloads.decode(msg.payload)["samples"]
        with self._lock:
            self.samples += len(samples)
            self.late_ms.append(now_ms - samples[-1]["ts"])
            for s in samples:  # one channel per device is enough for the poll timing
                if s["ch"].endswith(".p000"):
                    self.times.setdefault(s["ch"], []).append(s["ts"])

    def reset(self) -> tuple[int, list[float], dict[str, list[int]]]:
        with self._lock:
            taken = self.samples, self.late_ms, self.times
            self.samples, self.late_ms, self.times = 0, [], {}
            return taken

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def site(work: Path, devices: int, server_ports: list[int], broker_port: int) -> str:
    lines = [f'gateway_id = "gw-throughput"\nsite_id = "bench-throughput"\n'
             f'profiles_dir = "{work / "profiles"}"\n']
    buses = (devices + PER_BUS - 1) // PER_BUS
    for b in range(buses):
        port = server_ports[b * PER_BUS // PER_SERVER]
        lines.append(f'[[buses]]\nname = "bus{b}"\ntype = "modbus-tcp"\nhost = "127.0.0.1"\n'
                     f"port = {port}\n")
    for d in range(devices):
        lines.append(f'[[devices]]\nname = "d{d:04d}"\nbus = "bus{d // PER_BUS}"\n'
                     f'unit_id = {d % PER_SERVER + 1}\nprofile = "bench_block"\n'
                     f"poll_interval_s = 1.0\n")
    lines.append(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\ntls = "off"\n'
                 f'[buffer]\npath = "{work / "buffer.db"}"\n')
    return "\n".join(lines)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] if ordered else float("nan")


def run(rate: int, gas: str) -> dict[str, float]:
    devices = rate // POINTS
    work = Path(tempfile.mkdtemp(prefix="edge-agent-throughput-"))
    try:
        with contextlib.ExitStack() as stack:
            (work / "profiles").mkdir()
            (work / "profiles" / "bench_block.toml").write_text(profile_text(gas))
            profile = ProfileLibrary(work / "profiles").get("bench_block")
            scenario = Scenario(profile="bench_block", baseline={
                f"p{i:03d}": Baseline(value=2.0, noise=0.3) for i in range(POINTS)})
            servers = []
            for first in range(0, devices, PER_SERVER):
                units = [SimulatedDevice(profile, u + 1, scenario, seed=first + u)
                         for u in range(min(PER_SERVER, devices - first))]
                servers.append(stack.enter_context(ModbusTcpSimulator(units, port=free_port())))
            broker = stack.enter_context(Mosquitto(workdir=work / "mosquitto"))
            counter = Counter(broker.port)
            stack.callback(counter.stop)
            config = work / "site.toml"
            config.write_text(site(work, devices, [s.port for s in servers], broker.port))
            agent = start_agent(config, stack, stop_s=30)

            deadline = time.monotonic() + 60
            while counter.samples < rate * 2:  # it publishes: then the warm-up
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((work / "agent.log").read_text()[-3000:])
                time.sleep(0.2)
            time.sleep(WARM_S)  # the warm-up's length, not a synchronisation
            buffer = work / "buffer.db"
            counter.reset()
            t0, seq0, cpu0 = time.monotonic(), last_seq(buffer), cpu_s(agent.pid)
            own0, mq0 = cpu_s("self"), cpu_s(broker.proc.pid)
            time.sleep(WINDOW_S)  # the window's length, not a synchronisation
            elapsed = time.monotonic() - t0
            seq1, cpu1 = last_seq(buffer), cpu_s(agent.pid)
            own1, mq1 = cpu_s("self"), cpu_s(broker.proc.pid)
            delivered, late, times = counter.reset()
            jitter = [abs(b - a - 1000) for ts in times.values()
                      for a, b in itertools.pairwise(ts)]
            return {
                "points_per_s": rate, "devices": devices, "buses": -(-devices // PER_BUS),
                "polled_per_s": (seq1 - seq0) / elapsed, "delivered_per_s": delivered / elapsed,
                "agent_cpu_percent": 100 * (cpu1 - cpu0) / elapsed,
                "agent_rss_mb": rss_mb(agent.pid),
                "late_p50_ms": statistics.median(late) if late else float("nan"),
                "late_p99_ms": pct(late, 0.99), "poll_jitter_p99_ms": pct(jitter, 0.99),
                "backlog": buffered(buffer)["samples"],
                "simulators_and_subscriber_cpu_percent": 100 * (own1 - own0) / elapsed,
                "mosquitto_cpu_percent": 100 * (mq1 - mq0) / elapsed,
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rates", nargs="*", type=int, default=[1000, 10000, 30000],
                        help="points per second (multiples of 100)")
    parser.add_argument("--gas", choices=GASES, default="flammable",
                        help="flammable: two-level limits on every point; co: also STEL/TWA "
                        "exposure, which keeps 8 h of minute averages per point")
    args = parser.parse_args()
    results = [run(rate, args.gas) for rate in args.rates]
    print(f"one agent, devices of {POINTS} {args.gas} points polled every 1 s, buses of "
          f"{PER_BUS}; {WINDOW_S} s windows")
    print(f"{'points/s':>9} {'polled/s':>9} {'deliv./s':>9} {'CPU %':>6} {'per 10k':>7} "
          f"{'RSS MB':>7} {'late p50':>9} {'p99 ms':>7} {'jitter p99':>10} {'backlog':>8} "
          f"{'sims %':>7} {'mosq. %':>7}")
    for r in results:
        print(f"{r['points_per_s']:9d} {r['polled_per_s']:9.0f} {r['delivered_per_s']:9.0f} "
              f"{r['agent_cpu_percent']:6.1f} "
              f"{r['agent_cpu_percent'] * 10000 / r['polled_per_s']:7.1f} "
              f"{r['agent_rss_mb']:7.1f} {r['late_p50_ms']:9.0f} {r['late_p99_ms']:7.0f} "
              f"{r['poll_jitter_p99_ms']:10.0f} {r['backlog']:8d} "
              f"{r['simulators_and_subscriber_cpu_percent']:7.1f} "
              f"{r['mosquitto_cpu_percent']:7.1f}")
    print("NeuronEX 3.2.1 (published): 10,000 points/s on 12 % of one core and 199 MB; "
          "100,000 on 120 % and 497 MB")
    print(json.dumps([{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}
                      for r in results]))


if __name__ == "__main__":
    main()
