"""The simulated site the benches run the agent against, and how they read a process's
CPU time and memory.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.platform import PlatformSubscriber
from simulators import ModbusTcpSimulator, SimulatedDevice, load_scenario

TICK = os.sysconf("SC_CLK_TCK")


def confined_space(work: Path, stack: contextlib.ExitStack
                   ) -> tuple[Mosquitto, list[SimulatedDevice], ModbusTcpSimulator,
                              PlatformSubscriber]:
    """A private mosquitto, the confined-space scenario's two 4-gas detectors (units 1 and
    2) on one Modbus TCP server, and a platform subscriber; ``stack`` stops them.
    """
    broker = stack.enter_context(Mosquitto(workdir=work / "mosquitto"))
    scenario, profile = load_scenario("confined_space")
    devices = [SimulatedDevice(profile, u, scenario, seed=u) for u in (1, 2)]
    sim = stack.enter_context(ModbusTcpSimulator(devices, port=free_port()))
    sub = PlatformSubscriber(broker.port).start()
    stack.callback(sub.stop)
    return broker, devices, sim, sub


def start_agent(config: Path, stack: contextlib.ExitStack, stop_s: float = 20
                ) -> subprocess.Popen[bytes]:
    """``edge-agent run`` on ``config``, its log beside it (``agent.log``), terminated
    when ``stack`` closes.
    """
    log = (config.parent / "agent.log").open("wb")
    stack.callback(log.close)
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
                            stdout=log, stderr=log)
    stack.callback(proc.wait, stop_s)
    stack.callback(proc.terminate)
    return proc


def cpu_s(pid: int | str) -> float:
    """CPU seconds (user + system) a process has used; ``pid`` may be "self"."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_mb(pid: int | str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")
