"""SIGKILL at random points while the agent polls, commits and publishes, again and
again: every committed row still reaches the platform, and the only duplicates are
re-sent rows with their original sequence numbers (QoS 1 allows those)."""

from __future__ import annotations

import random
from pathlib import Path

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber
from tests.integration.test_pipeline import all_seqs, assert_complete
from tests.support import AgentProcess, buffered, last_seq, wait_until

KILLS = 20


def test_repeated_sigkill_loses_nothing_committed(
        site_config: Path, broker: Mosquitto, platform: PlatformSubscriber,
        tmp_path: Path) -> None:
    buffer = tmp_path / "buffer.db"
    rng = random.Random(20261126)
    committed = 0
    for kill in range(KILLS):
        offline = kill % 4 == 3  # every fourth run is killed with a backlog, broker away
        if offline:
            broker.stop()
        agent = AgentProcess(site_config).start()
        # A random point: after 1 to 40 new samples were committed (and, online, most
        # of them published), somewhere in a poll, a commit or a publish.
        target = committed + rng.randint(1, 40)
        wait_until(lambda: buffer.exists() and last_seq(buffer) >= target, 20,  # noqa: B023
                   f"run {kill} to commit up to seq {target}")
        agent.kill()
        committed = last_seq(buffer)
        if offline:
            assert buffered(buffer)["samples"] > 0
            broker.start()
    final = AgentProcess(site_config).start()
    try:
        assert platform.wait_for(lambda: set(range(1, committed + 1)) <= set(all_seqs(platform)),
                                 30), final.log
    finally:
        assert 0 == final.stop()
    assert_complete(platform, buffer)
    # A duplicate is the same row again: same seq, same channel, time and value.
    copies: dict[int, set[tuple[object, ...]]] = {}
    for message in platform.of_kind("telemetry"):
        for sample in message.body["samples"]:
            copies.setdefault(sample["seq"], set()).add((sample["ch"], sample["ts"], sample["v"]))
    assert all(len(rows) == 1 for rows in copies.values())
    assert committed < last_seq(buffer)
