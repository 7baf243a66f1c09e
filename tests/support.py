"""Helpers for the tests: waiting on conditions, the agent as a process, buffer reads."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0,
               what: str = "condition") -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


SITE = """\
gateway_id = "gw-test"
site_id = "site-test"

[[buses]]
name = "field"
type = "modbus-tcp"
host = "127.0.0.1"
port = {modbus_port}
timeout_ms = 500

[[devices]]
name = "gas1"
bus = "field"
unit_id = 1
profile = "generic_4gas"
poll_interval_s = {interval}

[devices.channels.co]
limits = [{{ level = 1, above = 24, deadband = 1 }}, {{ level = 2, above = 160, deadband = 5 }}]

[devices.channels.o2]
limits = [
  {{ level = 1, below = 19.5, deadband = 0.2 }},
  {{ level = 1, above = 23.5, deadband = 0.2 }},
]

[mqtt]
host = "127.0.0.1"
port = {broker_port}
tls = "off"
reconnect_max_s = 1
inflight_window = 4
telemetry_batch = 20

[buffer]
path = "{buffer}"
"""


class AgentProcess:
    """``edge-agent run`` in its own process, its log in a file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log_path = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config",
                                      str(self.config)], stdout=log, stderr=log, cwd=REPO)
        log.close()
        return self

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def buffered(path: Path) -> dict[str, int]:
    """Rows waiting in a buffer file, read from outside the agent."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("samples", "events")}


def last_seq(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]) - 1
