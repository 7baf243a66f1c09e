"""The unit file passes systemd's own checks: no warning at all, and a low exposure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

UNIT = REPO / "systemd" / "edge-agent.service"


def installed_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's edge-agent, which verify requires."""
    edge_agent = Path(sys.executable).with_name("edge-agent")
    unit = tmp_path / "edge-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/edge-agent/venv/bin/edge-agent",
                                             str(edge_agent)))
    return unit


def test_systemd_unit_verifies_without_warnings(tmp_path: Path) -> None:
    """systemd-analyze only warns on unknown keys (rc stays 0), so any output fails."""
    result = subprocess.run(["systemd-analyze", "verify", str(installed_copy(tmp_path))],
                            capture_output=True, text=True, check=False)
    assert (0, "", "") == (result.returncode, result.stdout, result.stderr)


def test_systemd_unit_is_hardened(tmp_path: Path) -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true",
                             str(installed_copy(tmp_path))],
                            capture_output=True, text=True, check=False)
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)[1])
    assert score <= 2.0, result.stdout


def test_systemd_unit_runs_unprivileged_with_a_writable_numba_cache() -> None:
    text = UNIT.read_text()
    assert "User=edge-agent" in text
    assert "StateDirectory=edge-agent" in text
    assert "Environment=NUMBA_CACHE_DIR=/var/cache/edge-agent/numba" in text
    assert "CacheDirectory=edge-agent" in text
    assert "ReadWritePaths=/etc/edge-agent" in text  # set-config keeps a pushed config
    assert {"Type=notify", "WatchdogSec=30s", "NotifyAccess=main"} <= set(text.splitlines())
