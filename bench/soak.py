"""Soak: the agent as a real process for a long run, polling fast, its broker link
cut and restored again and again, an alarm raised and cleared now and then.

Every second it samples the agent's resident memory (VmRSS), open file
descriptors and threads. At the end: the growth of each per hour (a least-squares
slope over the second half of the run, after start-up has settled), the poll
cycles and reconnects it went through, and the rows lost (every committed row
must reach the platform subscriber).

    python bench/soak.py [SECONDS]      (default 300)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.platform import PlatformSubscriber
from edge_agent.profiles import ProfileLibrary
from simulators import ModbusTcpSimulator, SimulatedDevice
from tests.faults.net import Proxy
from tests.support import SITE, AgentProcess, last_seq, wait_until

FLAP_EVERY_S, FLAP_FOR_S = 20, 3


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 3600 * sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def vitals(pid: int) -> tuple[float, int, int]:
    """RSS in MB, open file descriptors, threads of process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return (int(fields["VmRSS"].split()[0]) / 1024, len(os.listdir(f"/proc/{pid}/fd")),
            int(fields["Threads"]))


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 300.0
    work = Path(tempfile.mkdtemp(prefix="edge-agent-soak-"))
    device = SimulatedDevice(ProfileLibrary().get("generic_4gas"), unit_id=1)
    device.pin("co", 2)
    samples: list[tuple[float, float, int, int]] = []
    try:
        with Mosquitto(workdir=work / "broker", persistent=True) as broker, \
                ModbusTcpSimulator([device], port=free_port()) as sim, \
                Proxy(broker.port) as link:
            platform = PlatformSubscriber(broker.port, client_id="soak-platform",
                                          clean_session=False).start()
            config = work / "site.toml"
            config.write_text(SITE.format(modbus_port=sim.port, broker_port=link.port,
                                          buffer=work / "buffer.db", interval=0.1))
            agent = AgentProcess(config).start()
            wait_until(lambda: "uplink_connected" in agent.log, 30, "the agent connected")
            start = time.monotonic()
            flaps = 0
            while (elapsed := time.monotonic() - start) < seconds:
                time.sleep(1)  # the bench's sampling period
                rss, fds, threads = vitals(agent.proc.pid)
                samples.append((elapsed, rss, fds, threads))
                second = int(elapsed)
                device.pin("co", 30 if second % 30 < 5 else 2)  # an alarm every 30 s
                if second % FLAP_EVERY_S == 0:
                    link.cut()
                    flaps += 1
                elif second % FLAP_EVERY_S == FLAP_FOR_S:
                    link.restore()
            link.restore()
            committed = last_seq(work / "buffer.db")
            view = platform.gateways["gw-test"]
            delivered = lambda: view.sample_seqs | {e["seq"] for e in view.events}  # noqa: E731
            platform.wait_for(lambda: set(range(1, committed + 1)) <= delivered(), 120)
            lost = len(set(range(1, committed + 1)) - delivered())
            agent.stop(60)
            platform.stop()
            connects = agent.log.count("uplink_connected")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    settled = [s for s in samples if s[0] >= seconds / 2]
    figures = {
        "seconds": round(seconds), "poll_cycles": committed // 7, "rows_committed": committed,
        "rows_lost": lost, "link_cuts": flaps, "connects": connects,
        "rss_start_mb": round(samples[0][1], 1), "rss_end_mb": round(samples[-1][1], 1),
        "rss_max_mb": round(max(s[1] for s in samples), 1),
        "rss_growth_mb_per_h": round(slope_per_hour([(s[0], s[1]) for s in settled]), 2),
        "fds_max": max(s[2] for s in samples), "fds_end": samples[-1][2],
        "threads_max": max(s[3] for s in samples), "threads_end": samples[-1][3],
    }
    print(f"{seconds:.0f} s soak: {figures['poll_cycles']} poll cycles, {committed} rows, "
          f"{lost} lost; {flaps} link cuts, {connects} connections")
    print(f"RSS {figures['rss_start_mb']} -> {figures['rss_end_mb']} MB (max "
          f"{figures['rss_max_mb']}), growth over the second half "
          f"{figures['rss_growth_mb_per_h']} MB/h; fds max {figures['fds_max']}, threads max "
          f"{figures['threads_max']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
