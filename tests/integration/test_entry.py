"""The pre-entry gas test of a confined space through the running agent: from the
technician's CLI and from the platform, stored and published as entry events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber
from simulators import SimulatedDevice
from tests.integration.test_cli import edge_agent
from tests.support import AgentProcess, CommandClient

SPACE = """
[[spaces]]
name = "manhole-3"
detectors = [{ device = "gas1", point = "bottom" }]
"""


@pytest.fixture
def agent_with_space(site_config: Path, platform: PlatformSubscriber) -> Iterator[AgentProcess]:
    site_config.write_text(site_config.read_text() + SPACE)
    process = AgentProcess(site_config).start()
    assert platform.wait_for(lambda: platform.gateways["gw-test"].sample_seqs, 20), process.log
    yield process
    process.kill()


def test_the_cli_test_passes_clean_air_and_fails_low_oxygen_with_the_reason(
        agent_with_space: AgentProcess, site_config: Path, platform: PlatformSubscriber,
        gas_detector: SimulatedDevice) -> None:
    passed = edge_agent("entry", "test", "manhole-3", "--by", "Li Wei", "-c", str(site_config))
    assert 0 == passed.returncode, passed.stderr
    assert "entry allowed" in passed.stdout

    gas_detector.pin("o2", 19.0)  # oxygen-deficient: ventilate first
    failed = edge_agent("entry", "test", "manhole-3", "--by", "Li Wei", "-c", str(site_config),
                        "--json")
    assert 1 == failed.returncode
    verdicts = {c["channel"]: c for c in json.loads(failed.stdout)["channels"]}
    assert verdicts["gas1.o2"]["reason"] == "19 %VOL is below 19.5"
    assert verdicts["gas1.o2"]["point"] == "bottom"
    assert [c for c, v in verdicts.items() if v["passed"] is False] == ["gas1.o2"]
    assert verdicts["gas1.lel"]["limit"] == "<= 10 %LEL"

    entries = platform.gateways["gw-test"].entries
    assert platform.wait_for(lambda: len(entries) == 2, 10)
    first, second = entries
    assert (first["transition"], first["key"], first["passed"], first["by"]) == (
        "tested", "space:manhole-3", True, "Li Wei")
    assert second["passed"] is False
    assert second["seq"] > first["seq"]


def test_the_platform_tests_a_space_and_is_told_which_spaces_exist(
        agent_with_space: AgentProcess, broker: Mosquitto,
        gas_detector: SimulatedDevice) -> None:
    gas_detector.pin("h2s", 8.0)  # over the MAC of 10 mg/m3 (7.06 ppm)
    client = CommandClient(broker.port)
    try:
        reply = client.call("entry-test", space="manhole-3", by="platform:zhang")
        assert reply["ok"] is True, reply
        assert reply["result"]["passed"] is False
        assert [c["reason"] for c in reply["result"]["channels"] if c["passed"] is False] == [
            "8 ppm is above 7.06"]
        unknown = client.call("entry-test", space="manhole-9", by="platform:zhang")
        assert unknown["error"]["code"] == "not_found"
        assert unknown["error"]["spaces"] == ["manhole-3"]
    finally:
        client.close()
