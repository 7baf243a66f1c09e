"""Throughput of one RS-485 bus against its physical limit, and the agent's CPU per
transaction.

Ten simulated 4-gas transmitters (units 1-10, one 8-register read each) share a
19200-baud Modbus RTU line: a socat pseudo-terminal pair, with the simulator
(its own process) holding each answer as long as a real line would take for the
request, the answer and the 3.5-character silences. The agent runs as a real
process polling every device every 0.1 s, which asks for more than the line can
carry, so the bus runs flat out. From two `health` messages 10 s apart:
transactions per second (against the limit computed from baud rate and frame
sizes) and the agent's CPU time per transaction (from /proc).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.sim_site import cpu_s
from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber
from simulators import transaction_seconds

BAUD, UNITS, REGISTERS = 19200, 10, 8
SITE = """gateway_id = "gw-bench-rtu"
site_id = "bench"
[[buses]]
name = "rs485"
type = "modbus-rtu"
port = "{port}"
baudrate = {baud}
timeout_ms = 200
{devices}
[mqtt]
host = "127.0.0.1"
port = {broker}
tls = "off"
[buffer]
path = "{buffer}"
"""
DEVICE = """[[devices]]
name = "gas{unit}"
bus = "rs485"
unit_id = {unit}
profile = "generic_4gas"
poll_interval_s = 0.1
"""


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-rtu-"))
    device_end, agent_end = work / "device", work / "agent"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={device_end}", f"pty,raw,echo=0,link={agent_end}"],
            stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 5
        while not (device_end.exists() and agent_end.exists()):
            assert time.monotonic() < deadline, "socat made no pseudo-terminals"
            time.sleep(0.01)
        simulator = subprocess.Popen(
            [sys.executable, "-m", "simulators", "--profile", "generic_4gas", "--rtu",
             str(device_end), "--baudrate", str(BAUD), "--line-timing",
             "--units", *map(str, range(1, UNITS + 1))], stdout=subprocess.PIPE, text=True)
        procs.append(simulator)
        simulator.stdout.readline()  # "serving ..." once it listens
        with Mosquitto(workdir=work / "broker") as broker:
            platform = PlatformSubscriber(broker.port).start()
            config = work / "site.toml"
            config.write_text(SITE.format(
                port=agent_end, baud=BAUD, broker=broker.port, buffer=work / "buffer.db",
                devices="".join(DEVICE.format(unit=u) for u in range(1, UNITS + 1))))
            agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config",
                                      str(config)], stderr=subprocess.DEVNULL)
            procs.append(agent)
            view = platform.gateways["gw-bench-rtu"]
            marks = []  # (health ts, transactions, agent cpu s)
            for _ in range(3):
                seen = view.health.get("ts")
                assert platform.wait_for(lambda s=seen: view.health.get("ts") != s, 20)
                stats = view.health["buses"]["rs485"]
                marks.append((view.health["ts"] / 1000, stats["transactions"],
                              cpu_s(agent.pid), stats))
            platform.stop()
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    (t0, tx0, cpu0, _), (t1, tx1, cpu1, stats) = marks[1], marks[2]
    achieved = (tx1 - tx0) / (t1 - t0)
    limit = 1 / transaction_seconds(BAUD, "holding", False, REGISTERS)
    cpu_per_tx_ms = (cpu1 - cpu0) / (tx1 - tx0) * 1000
    cpu_share = (cpu1 - cpu0) / (t1 - t0)
    print(f"{UNITS} devices on one {BAUD}-baud RTU line, {REGISTERS} registers per read")
    print(f"{'':28}{'value':>10}")
    print(f"{'physical limit, tx/s':28}{limit:10.1f}")
    print(f"{'achieved, tx/s':28}{achieved:10.1f}")
    print(f"{'achieved / limit':28}{achieved / limit:10.3f}")
    print(f"{'agent CPU per tx, ms':28}{cpu_per_tx_ms:10.3f}")
    print(f"{'agent CPU, share of a core':28}{cpu_share:10.3f}")
    print(f"{'rtt mean / p99, ms':28}{stats['rtt_mean_ms']:>5} / {stats['rtt_p99_ms']}")
    print(f"{'timeouts, crc errors':28}{stats['timeouts']:>5} / {stats['crc_errors']}")
    print(json.dumps({"tx_per_s": round(achieved, 2), "physical_limit_tx_per_s": round(limit, 2),
                      "ratio_to_physical_limit": round(achieved / limit, 3),
                      "agent_cpu_ms_per_tx": round(cpu_per_tx_ms, 3),
                      "agent_cpu_share": round(cpu_share, 3),
                      "rtt_mean_ms": stats["rtt_mean_ms"], "rtt_p99_ms": stats["rtt_p99_ms"],
                      "timeouts": stats["timeouts"]}))


if __name__ == "__main__":
    main()
