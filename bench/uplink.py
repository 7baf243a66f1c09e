"""The platform link: how fast a backlog drains after an outage, and how fast an
alarm reaches the platform and a relay.

1. Drain. A buffer holding a backlog (as after hours offline) is drained by the
   agent's own Uplink class to a private mosquitto, from connect to empty buffer
   (every row PUBACKed and deleted). Baseline in the same run: paho alone
   publishing the same payloads with QoS 1 and the same window, no buffer, no
   deletes; the ratio is what the buffer costs.
2. Alarm and relay latency. The agent runs as a real process polling a simulated
   gas detector every 100 ms; CO is pinned above and below its setpoint over and
   over. For each alarm event, latency = its arrival at a platform subscriber
   minus the time of the sample that raised or ended it. A local action drives
   relay 1 of a simulated relay module on its own bus; coil latency = the relay
   module's receipt of the write minus the time of that sample. Everything runs
   on this machine, so one wall clock serves all parties.

Targets (issue 5): drain >= 50,000 samples/s, alarm p99 < 50 ms, coil p99 < 20 ms.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.sim_site import start_agent
from edge_agent.buffer import Buffer
from edge_agent.config import Mqtt
from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.platform import PlatformSubscriber
from edge_agent.profiles import ProfileLibrary
from edge_agent.records import Sample
from edge_agent.uplink import Uplink
from edge_agent.uplink.payloads import Origin
from simulators import ModbusTcpSimulator, SimulatedDevice

BACKLOG = 200_000  # samples: 256 channels for 13 minutes at 1 Hz
CYCLE = 256
TOGGLES = 100  # alarm raised/ended pairs

SITE = """gateway_id = "gw-bench"
site_id = "bench"
[[buses]]
name = "gas"
type = "modbus-tcp"
host = "127.0.0.1"
port = {port}
[[buses]]
name = "outputs"
type = "modbus-tcp"
host = "127.0.0.1"
port = {port}
[[devices]]
name = "gas1"
bus = "gas"
unit_id = 1
profile = "generic_4gas"
poll_interval_s = 0.1
[devices.channels.co]
limits = [{{ level = 1, above = 24, deadband = 1 }}]
[[devices]]
name = "relays"
bus = "outputs"
unit_id = 2
profile = "waveshare_relay_8ch_d"
poll_interval_s = 1.0
[[actions]]
name = "sounder"
when = ["gas1.co:above:1"]
device = "relays"
output = "relay_1"
release = "cleared"
[mqtt]
host = "127.0.0.1"
port = {broker}
tls = "off"
[buffer]
path = "{buffer}"
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def fill(path: Path, n: int) -> None:
    buffer = Buffer(path, max_bytes=2**30)
    ts = int(time.time() * 1000) - 3_600_000
    for start in range(0, n, CYCLE):
        buffer.commit_cycle([Sample(f"dev{(start + i) % 64}.ch{i % 4}", ts + start, 20.9 + i,
                                    "ppm") for i in range(min(CYCLE, n - start))], [])
    buffer.close()


def drain(work: Path, broker: Mosquitto) -> tuple[float, int]:
    """Seconds from the uplink's start to an empty buffer, and messages sent."""
    path = work / "drain.db"
    fill(path, BACKLOG)
    settings = Mqtt(host="127.0.0.1", port=broker.port, tls="off")
    uplink = Uplink(settings, origin=Origin("bench", "gw-drain", Buffer(path).epoch),
                    buffer_path=str(path), birth={}, health=dict, health_interval_s=3600)
    reader = Buffer(path)
    t0 = time.perf_counter()
    uplink.start()
    while uplink.delivered["samples"] < BACKLOG:
        time.sleep(0.01)  # the bench's own clock, not a synchronisation
    elapsed = time.perf_counter() - t0
    assert reader.depth() == {"events": 0, "samples": 0}
    uplink.stop()
    return elapsed, uplink.delivered["messages"]


def paho_baseline(work: Path, broker: Mosquitto, messages: int) -> float:
    """Seconds for paho alone to get PUBACKs for the same payloads, same window."""
    path = work / "baseline.db"
    fill(path, BACKLOG)
    buffer, origin = Buffer(path), Origin("bench", "gw-base", "e")
    payloads = []
    cursor = 0
    while rows := buffer.samples_after(cursor, 200):
        payloads.append(origin.telemetry(rows, 131072)[0])
        cursor = rows[-1].seq
    window = threading.Semaphore(16)
    done = threading.Event()
    acked = [0]

    def on_publish(*_: object) -> None:
        acked[0] += 1
        window.release()
        if acked[0] == len(payloads):
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_publish = on_publish
    client.max_inflight_messages_set(20)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    t0 = time.perf_counter()
    for payload in payloads:
        window.acquire()
        client.publish("edge/v1/bench/gw-base/telemetry", payload, qos=1)
    done.wait(120)
    elapsed = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return elapsed


def latencies(work: Path, broker: Mosquitto) -> tuple[list[float], list[float]]:
    """Alarm (sample -> subscriber) and coil (sample -> relay module) latencies, ms."""
    library = ProfileLibrary()
    gas = SimulatedDevice(library.get("generic_4gas"), unit_id=1)
    relays = SimulatedDevice(library.get("waveshare_relay_8ch_d"), unit_id=2)
    gas.pin("co", 2)
    writes: list[tuple[float, int]] = []  # wall time in ms, value written
    original = relays.write

    def timed_write(output: str, value: int) -> None:
        writes.append((time.time() * 1000, value))
        original(output, value)

    relays.write = timed_write  # type: ignore[method-assign]
    arrivals: list[tuple[float, dict]] = []
    sub = PlatformSubscriber(broker.port, topic="edge/v1/bench/gw-bench/alarm").start()
    sub.client.on_message = lambda _c, _u, msg: arrivals.append(
        (time.time() * 1000, json.loads(msg.payload)))
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(ModbusTcpSimulator([gas, relays], port=free_port()))
        config = work / "site.toml"
        config.write_text(SITE.format(port=sim.port, broker=broker.port,
                                      buffer=work / "latency.db"))
        start_agent(config, stack)
        deadline = time.monotonic() + 30
        while not writes and time.monotonic() < deadline:  # the start-up "relay off"
            time.sleep(0.05)
        for i in range(2 * TOGGLES):
            gas.pin("co", 30 if i % 2 == 0 else 2)
            time.sleep(0.35)  # hold each value for three polls or so
        time.sleep(1)
    sub.stop()
    events = [(t, e) for t, e in arrivals if e.get("key") == "gas1.co:above:1"]
    alarm_ms = [t - e["ts"] for t, e in events]
    coil_ms = []
    for _, event in events:
        wanted = 1 if event["transition"] == "raised" else 0
        after = [t for t, v in writes if v == wanted and t >= event["ts"]]
        if after:
            coil_ms.append(after[0] - event["ts"])
    return alarm_ms, coil_ms


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="edge-agent-bench-uplink-"))
    try:
        with Mosquitto(workdir=work / "mosquitto") as broker:
            drain_s, messages = drain(work, broker)
            base_s = paho_baseline(work, broker, messages)
            alarm_ms, coil_ms = latencies(work, broker)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures = {
        "backlog_samples": BACKLOG, "drain_s": drain_s,
        "drain_samples_per_s": BACKLOG / drain_s, "drain_messages_per_s": messages / drain_s,
        "paho_only_samples_per_s": BACKLOG / base_s, "ratio_drain_to_paho_only": base_s / drain_s,
        "alarm_events": len(alarm_ms), "alarm_p50_ms": statistics.median(alarm_ms),
        "alarm_p99_ms": percentile(alarm_ms, 99), "alarm_max_ms": max(alarm_ms),
        "coil_writes": len(coil_ms), "coil_p50_ms": statistics.median(coil_ms),
        "coil_p99_ms": percentile(coil_ms, 99), "coil_max_ms": max(coil_ms),
    }
    f = {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}
    print(f"drain of {BACKLOG} buffered samples to a local mosquitto (200 per message, window 16)")
    print(f"  agent uplink: {f['drain_s']} s, {f['drain_samples_per_s']:.0f} samples/s, "
          f"{f['drain_messages_per_s']:.0f} messages/s (target >= 50000 samples/s)")
    print(f"  paho alone:   {f['paho_only_samples_per_s']:.0f} samples/s; "
          f"uplink/paho = {f['ratio_drain_to_paho_only']}")
    print(f"alarm, sample -> subscriber, {len(alarm_ms)} events: p50 {f['alarm_p50_ms']} ms, "
          f"p99 {f['alarm_p99_ms']} ms, max {f['alarm_max_ms']} ms (target p99 < 50)")
    print(f"coil, sample -> relay module, {len(coil_ms)} writes: p50 {f['coil_p50_ms']} ms, "
          f"p99 {f['coil_p99_ms']} ms, max {f['coil_max_ms']} ms (target p99 < 20)")
    print(json.dumps(f))


if __name__ == "__main__":
    main()
