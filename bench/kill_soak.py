"""SIGKILL soak: the agent is killed at random points, many times, while it polls,
commits and publishes (every fourth run with the broker away), then restarted;
afterwards every committed row must have reached the platform.

The CI test (tests/integration/test_crash.py) does 20 kills; this does KILLS
(default 200, or the first argument). It prints rows committed, rows lost (must
be 0), duplicates delivered (QoS 1 re-sends, each carrying its original seq),
and the median time from start to the kill.

    python bench/kill_soak.py [KILLS]
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.platform import PlatformSubscriber
from edge_agent.profiles import ProfileLibrary
from simulators import ModbusTcpSimulator, SimulatedDevice
from tests.support import SITE, buffered, last_seq, wait_until


def run_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config",
                                 str(config)], stdout=out, stderr=out)


def main() -> None:
    kills = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    work = Path(tempfile.mkdtemp(prefix="edge-agent-kill-soak-"))
    rng = random.Random(7)
    device = SimulatedDevice(ProfileLibrary().get("generic_4gas"), unit_id=1)
    buffer = work / "buffer.db"
    lived: list[float] = []
    try:
        with Mosquitto(workdir=work / "broker", persistent=True) as broker, \
                ModbusTcpSimulator([device], port=free_port()) as sim:
            platform = PlatformSubscriber(broker.port, client_id="soak-platform",
                                          clean_session=False).start()
            config = work / "site.toml"
            config.write_text(SITE.format(modbus_port=sim.port, broker_port=broker.port,
                                          buffer=buffer, interval=0.1))
            committed = 0
            for kill in range(kills):
                offline = kill % 4 == 3
                if offline:
                    broker.stop()
                started = time.monotonic()
                agent = run_agent(config, work / "agent.log")
                target = committed + rng.randint(1, 60)
                wait_until(lambda: buffer.exists() and last_seq(buffer) >= target,  # noqa: B023
                           30, f"run {kill} to commit up to seq {target}")
                agent.kill()
                agent.wait()
                lived.append(time.monotonic() - started)
                committed = last_seq(buffer)
                if offline:
                    broker.start()
            final = run_agent(config, work / "agent.log")
            view = platform.gateways["gw-test"]
            platform.wait_for(lambda: set(range(1, committed + 1))
                              <= view.sample_seqs | {e["seq"] for e in view.events}, 120)
            final.terminate()
            final.wait(30)
            platform.stop()
            delivered = view.sample_seqs | {e["seq"] for e in view.events}
            lost = sorted(set(range(1, last_seq(buffer) + 1)) - delivered)
            left = buffered(buffer)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures = {"kills": kills, "rows_committed": committed, "rows_lost": len(lost),
               "rows_left_in_buffer": sum(left.values()), "duplicate_samples": view.duplicates,
               "median_s_start_to_kill": round(statistics.median(lived), 2)}
    print(f"{kills} SIGKILLs (every fourth with the broker away): {committed} rows committed "
          f"before the last kill, {len(lost)} lost, {view.duplicates} duplicate samples "
          f"delivered, {figures['rows_left_in_buffer']} rows left after the final stop")
    print(json.dumps(figures))
    if lost:
        raise SystemExit(f"lost rows: {lost[:20]}")


if __name__ == "__main__":
    main()
