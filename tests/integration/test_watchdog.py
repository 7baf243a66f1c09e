"""The systemd watchdog: READY=1 at start, WATCHDOG=1 while polls are committed, none
while the buffer cannot be written (a technician's tool holds it locked), and again
once it can; STOPPING=1 at a clean stop. systemd's side is a datagram socket here."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import AgentProcess, wait_until


class NotifySocket:
    """What systemd would receive on NOTIFY_SOCKET, with the time of each message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                continue

    def said(self, text: str, after: float = 0.0) -> list[float]:
        return [t for t, m in list(self.messages) if m == text and t > after]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))  # the agent process inherits them
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # pings every 0.5 s
    yield notify
    notify.close()


def test_watchdog_is_fed_only_while_the_pipeline_commits(
        systemd: NotifySocket, site_config: Path, tmp_path: Path) -> None:
    agent = AgentProcess(site_config).start()
    try:
        wait_until(lambda: systemd.said("READY=1"), 15, "READY=1")
        wait_until(lambda: len(systemd.said("WATCHDOG=1")) >= 3, 5, "three pings")
        # A technician's sqlite3 session holds the write lock: nothing can be committed.
        with sqlite3.connect(tmp_path / "buffer.db", timeout=5) as lock:
            lock.execute("BEGIN EXCLUSIVE")
            locked_at = time.monotonic()
            wait_until(lambda: "buffer_write_failed" in agent.log, 20, "a failed commit")
            assert not systemd.said("WATCHDOG=1", after=locked_at + 1.0), \
                "pinged while nothing could be committed"
            assert "watchdog_withheld" in agent.log
            lock.rollback()
        released_at = time.monotonic()
        wait_until(lambda: systemd.said("WATCHDOG=1", after=released_at), 15, "pings again")
        assert 0 == agent.stop()
    finally:
        agent.kill()
    assert systemd.said("STOPPING=1")
