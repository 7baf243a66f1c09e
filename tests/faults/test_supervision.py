"""A long-lived task that dies (an unforeseen exception in a bus poller) is a fault
event, is restarted, and polling resumes: PEER_LESSONS 3, where one I/O error
stopped a gateway's polling for good."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge_agent.acquisition import BusPoller
from edge_agent.config import load_config
from edge_agent.daemon import Agent
from edge_agent.demo.platform import PlatformSubscriber


def test_a_dying_bus_task_is_a_fault_and_is_restarted(
        site_config: Path, platform: PlatformSubscriber,
        monkeypatch: pytest.MonkeyPatch) -> None:
    original = BusPoller.run
    runs = []

    async def dies_once(self: BusPoller) -> None:
        runs.append(self.name)
        if len(runs) == 1:
            raise OSError("injected: the USB adapter's driver crashed")
        await original(self)

    monkeypatch.setattr(BusPoller, "run", dies_once)
    view = platform.gateways["gw-test"]

    async def scenario() -> None:
        stop = asyncio.Event()
        agent = Agent(load_config(site_config))
        running = asyncio.create_task(agent.run(stop))
        ended = await asyncio.to_thread(platform.wait_for, lambda: any(
            e["key"] == "agent:bus:field:failed" and e["transition"] == "returned_to_normal"
            for e in view.events), 20)
        polled = await asyncio.to_thread(platform.wait_for, lambda: "gas1.co" in view.latest,
                                         10)
        stop.set()
        await running
        assert ended
        assert polled

    asyncio.run(scenario())
    raised = next(e for e in view.events if e["key"] == "agent:bus:field:failed")
    assert ("fault", "raised", "bus:field") == (raised["class"], raised["transition"],
                                                raised["task"])
    assert "USB adapter" in raised["error"]
    assert ["field", "field"] == runs  # died once, restarted once
