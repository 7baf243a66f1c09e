"""A gateway without a real-time clock starts 2 hours late and NTP then steps its
clock: the times of what it took before the step are corrected in the buffer, what
it delivered before is flagged, and the alarm kernels never noticed
(tests/unit/test_alarms.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from edge_agent import daemon
from edge_agent.config import load_config
from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber
from tests.support import last_seq, wait_until_async


def test_times_taken_before_an_ntp_step_are_corrected(
        site_config: Path, broker: Mosquitto, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_time, real_ns = time.time, time.time_ns
    late = [7200.0]  # the wall clock is 2 h behind until NTP syncs
    monkeypatch.setattr(time, "time", lambda: real_time() - late[0])
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() - int(late[0] * 1e9))
    monkeypatch.setattr(daemon, "synchronised", lambda: late[0] == 0)
    broker.stop()  # offline: everything stays in the buffer, where it can be corrected
    buffer = tmp_path / "buffer.db"

    async def scenario() -> int:
        stop = asyncio.Event()
        running = asyncio.create_task(daemon.Agent(load_config(site_config)).run(stop, 0.1))
        await wait_until_async(lambda: last_seq(buffer) >= 14, 15, "polls before the sync")
        before = last_seq(buffer)
        late[0] = 0.0  # NTP steps the clock 2 h forward
        await wait_until_async(lambda: last_seq(buffer) >= before + 14, 15, "polls after it")
        stop.set()
        await running
        return before

    before = asyncio.run(scenario())
    now_ms = real_time() * 1000
    with sqlite3.connect(buffer) as conn:
        times = conn.execute("SELECT seq, ts_ms FROM samples ORDER BY seq").fetchall()
    assert len([seq for seq, _ in times if seq <= before]) >= 14
    assert all(now_ms - 120_000 < ts <= now_ms for _, ts in times), \
        "a sample kept the time of the clock before NTP"


def test_rows_delivered_before_the_clock_is_set_are_flagged(
        site_config: Path, platform: PlatformSubscriber,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Online before NTP: what reaches the platform then carries the clock of a Pi
    that started at the wrong time, and says so; nothing with a wrong time is sent
    unflagged, and after the sync the flag goes."""
    real_time, real_ns = time.time, time.time_ns
    late = [7200.0]
    monkeypatch.setattr(time, "time", lambda: real_time() - late[0])
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() - int(late[0] * 1e9))
    monkeypatch.setattr(daemon, "synchronised", lambda: late[0] == 0)
    telemetry = lambda: [m.body for m in platform.messages  # noqa: E731
                         if m.kind == "telemetry"]

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(daemon.Agent(load_config(site_config)).run(stop, 1))
        await wait_until_async(lambda: len(telemetry()) >= 3, 15, "telemetry before the sync")
        late[0] = 0.0
        await wait_until_async(lambda: "clock" not in telemetry()[-1], 15, "unflagged rows")
        seen = len(telemetry())
        await wait_until_async(lambda: len(telemetry()) >= seen + 3, 15, "more after it")
        stop.set()
        await running

    asyncio.run(scenario())
    now_ms = real_time() * 1000
    flagged = [b for b in telemetry() if b.get("clock") == "unsynchronised"]
    assert len(flagged) >= 3
    for body in telemetry():
        late_rows = [s for s in body["samples"] if s["ts"] < now_ms - 3_600_000]
        if "clock" not in body:
            assert not late_rows, "a row with the clock before NTP went out unflagged"
