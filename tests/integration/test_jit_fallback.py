"""Where numba cannot run (no wheel on 32-bit Raspberry Pi OS), the agent still judges
every sample, with its kernels as plain Python, and says so loudly. The test makes the
numba import fail with a package of that name that raises."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edge_agent.demo.platform import PlatformSubscriber
from simulators import SimulatedDevice
from tests.integration.test_cli import edge_agent
from tests.support import REPO, AgentProcess


def test_without_numba_the_agent_alarms_with_plain_python_kernels_and_says_so(
        tmp_path: Path, site_config: Path, platform: PlatformSubscriber,
        gas_detector: SimulatedDevice) -> None:
    fake = tmp_path / "no-numba" / "numba"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise ImportError("numba has no wheel for armv7l (simulated by the test)")\n')
    path = f"{fake.parent}{os.pathsep}{REPO}"
    agent = AgentProcess(site_config, env={"PYTHONPATH": path}).start()
    view = platform.gateways["gw-test"]
    try:
        assert platform.wait_for(lambda: "agent:jit:unavailable" in view.active, 20), agent.log
        fault = view.active["agent:jit:unavailable"]
        assert "armv7l (simulated by the test)" in fault["error"]
        assert "aarch64" in fault["supported"]
        gas_detector.pin("co", 30)
        assert platform.wait_for(lambda: "gas1.co:above:1" in view.active, 15), agent.log
        status = json.loads(edge_agent("status", "--json", "-c", str(site_config)).stdout)
        assert status["health"]["jit"]["compiled"] is False
        assert "ALARM KERNELS NOT COMPILED" in edge_agent(
            "status", "--once", "-c", str(site_config)).stdout
        assert '"event": "jit_unavailable"' in agent.log
    finally:
        agent.kill()
