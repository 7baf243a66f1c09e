"""The buffer cannot be written: the file system is full (here a 16 MiB tmpfs, mounted
in the agent's own mount namespace and filled with a ballast file, like an SD card
filled by something else). Polling and alarms go on, the unstored samples wait in
memory (bounded), the failure is a fault, and once there is room again nothing
polled is lost."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent import daemon
from edge_agent.config import load_config
from edge_agent.demo.platform import PlatformSubscriber
from simulators import SimulatedDevice
from tests.integration.test_pipeline import GATEWAY, all_seqs
from tests.support import REPO, last_seq, wait_until, wait_until_async


def test_full_disk_keeps_polling_and_loses_nothing_once_space_returns(
        site_config: Path, tmp_path: Path, gas_detector: SimulatedDevice,
        platform: PlatformSubscriber) -> None:
    card, log_path = tmp_path / "card", tmp_path / "agent.log"
    card.mkdir()
    site_config.write_text(site_config.read_text().replace(
        str(tmp_path / "buffer.db"), str(card / "buffer.db")))
    # unshare: a mount namespace of the agent's own (in a user namespace, so that no
    # root is needed); the tmpfs exists only there, and the test reads it from there.
    mount_and_run = (f"mount -t tmpfs -o size=16m card {card} && "
                     f"head -c 15900k /dev/zero > {card}/ballast && "
                     f"exec {sys.executable} -m edge_agent run --config {site_config}")
    with log_path.open("wb") as log:
        agent = subprocess.Popen(["unshare", "--map-root-user", "--mount", "sh", "-c",
                                  mount_and_run], stdout=log, stderr=log, cwd=REPO)

    def inside(code: str) -> object:
        """The value of ``code`` run in the agent's namespaces (where the card is)."""
        script = (f"import json; from pathlib import Path; from tests.support import last_seq; "
                  f"buffer = Path({str(card / 'buffer.db')!r}); print(json.dumps({code}))")
        return json.loads(subprocess.run(
            ["nsenter", f"--target={agent.pid}", "--user", "--mount", "--preserve-credentials",
             sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
            check=True, timeout=30).stdout)

    def delivered(key: str, transition: str) -> bool:
        return any(e["key"] == key and e["transition"] == transition
                   for e in platform.gateways[GATEWAY].events)

    try:
        text = lambda: log_path.read_text(errors="replace")  # noqa: E731
        wait_until(lambda: "buffer_write_failed" in text(), 60, "the card to fill")
        assert "database or disk is full" in text()
        stored = inside("last_seq(buffer)")
        gas_detector.pin("co", 200)  # an alarm while nothing can be stored
        wait_until(lambda: "alarm_raised" in text(), 10, "the alarm judged and logged")
        assert agent.poll() is None
        inside(f"Path({str(card / 'ballast')!r}).unlink()")  # room again
        wait_until(lambda: "buffer_write_recovered" in text(), 30, "writing again")
        assert platform.wait_for(
            lambda: delivered("agent:buffer:write_failed", "returned_to_normal"), 20), text()
        stored_last = inside("last_seq(buffer)")
        assert platform.wait_for(
            lambda: set(range(1, stored_last + 1)) <= set(all_seqs(platform)), 20)
        agent.terminate()
        assert 0 == agent.wait(30)
    finally:
        agent.kill()
        agent.wait()
    assert delivered("agent:buffer:write_failed", "raised")
    assert delivered("gas1.co:above:1", "raised")  # judged while the card was full
    # What waited in memory at the last failed attempt was stored, not dropped.
    failures = [json.loads(line) for line in log_path.read_text().splitlines()
                if '"buffer_write_failed"' in line]
    assert failures[-1]["waiting_samples"] > 0
    assert stored_last >= stored + failures[-1]["waiting_samples"]
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

