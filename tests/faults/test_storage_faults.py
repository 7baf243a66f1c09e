"""The buffer cannot be written: the file system is full (here: the agent may not
grow a file beyond 400 kB, RLIMIT_FSIZE, which makes SQLite fail like a full SD
card). Polling and alarms go on, the unstored samples wait in memory (bounded),
the failure is a fault, and once writing works again nothing polled is lost."""

from __future__ import annotations

import asyncio
import json
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent import daemon
from edge_agent.config import load_config
from simulators import SimulatedDevice
from tests.support import REPO, last_seq, wait_until, wait_until_async

LIMIT = 400_000


def events(buffer: Path) -> list[str]:
    with sqlite3.connect(f"file:{buffer}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute(
            "SELECT json_extract(body, '$.key') || ' ' || json_extract(body, '$.transition') "
            "FROM events ORDER BY seq")]


def test_full_disk_keeps_polling_and_loses_nothing_once_space_returns(
        site_config: Path, tmp_path: Path, gas_detector: SimulatedDevice) -> None:
    buffer, log_path = tmp_path / "buffer.db", tmp_path / "agent.log"
    with log_path.open("wb") as log:
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(site_config)],
            stdout=log, stderr=log, cwd=REPO,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                                  (LIMIT, resource.RLIM_INFINITY)))
    try:
        text = lambda: log_path.read_text(errors="replace")  # noqa: E731
        wait_until(lambda: "buffer_write_failed" in text(), 60, "the disk to fill")
        stored = last_seq(buffer)
        gas_detector.pin("co", 200)  # an alarm while nothing can be stored
        wait_until(lambda: "alarm_raised" in text(), 10, "the alarm judged and logged")
        assert agent.poll() is None
        resource.prlimit(agent.pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # space again
        wait_until(lambda: "buffer_write_recovered" in text(), 30, "writing again")
        wait_until(lambda: "agent:buffer:write_failed returned_to_normal" in events(buffer),
                   10, "the fault's end stored")
        agent.terminate()
        assert 0 == agent.wait(30)
    finally:
        agent.kill()
        agent.wait()
    stored_events = events(buffer)
    assert "agent:buffer:write_failed raised" in stored_events
    assert "gas1.co:above:1 raised" in stored_events  # judged while the disk was full
    # What waited in memory at the last failed attempt was stored, not dropped.
    failures = [json.loads(line) for line in log_path.read_text().splitlines()
                if '"buffer_write_failed"' in line]
    assert failures[-1]["waiting_samples"] > 0
    assert last_seq(buffer) >= stored + failures[-1]["waiting_samples"]
    assert "pending_samples_dropped" not in log_path.read_text()


def test_unstored_samples_are_bounded_in_memory(
        site_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While nothing can be written (here a technician's sqlite3 holds the write lock),
    the agent keeps only the newest PENDING_MAX samples, counts the rest as evicted,
    and stores what it kept once the lock goes."""
    monkeypatch.setattr(daemon, "PENDING_MAX", 30)
    buffer = tmp_path / "buffer.db"

    async def scenario() -> tuple[int, int, int]:
        stop = asyncio.Event()
        agent = daemon.Agent(load_config(site_config))
        running = asyncio.create_task(agent.run(stop))
        await wait_until_async(lambda: last_seq(buffer) > 0)
        lock = sqlite3.connect(buffer, timeout=5, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        locked_at = last_seq(buffer)
        await wait_until_async(lambda: agent.counters["evicted"] > 0, 40)
        lock.execute("ROLLBACK")
        lock.close()
        await wait_until_async(lambda: last_seq(buffer) >= locked_at + 30, 20)
        stop.set()
        await running
        return locked_at, last_seq(buffer), agent.counters["evicted"]

    locked_at, stored, evicted = asyncio.run(scenario())
    assert evicted > 0
    assert stored >= locked_at + 30  # the newest 30 waited in memory and were stored

