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
from tests.support import AgentProcess, CommandClient, wait_until

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


def test_a_detector_overdue_for_calibration_or_out_of_service_fails_the_test(
        site_config: Path, platform: PlatformSubscriber, broker: Mosquitto) -> None:
    text = site_config.read_text().replace('profile = "generic_4gas"\n',
                                           'profile = "generic_4gas"\ncalibrated = 2025-01-01\n')
    site_config.write_text(text + SPACE)
    agent = AgentProcess(site_config).start()
    client = CommandClient(broker.port)
    view = platform.gateways["gw-test"]
    try:
        assert platform.wait_for(lambda: view.status.get("state") == "online", 20), agent.log
        first = view.status["started"]
        test = client.call("entry-test", space="manhole-3", by="Li Wei")["result"]
        assert {"calibration due since 2025-06-30 (calibrated 2025-01-01)"} == {
            c["reason"] for c in test["channels"]}
        site_config.write_text(text.replace("calibrated = 2025-01-01\n", "") + SPACE)
        agent.stop()
        agent = AgentProcess(site_config).start()
        assert platform.wait_for(lambda: view.status.get("state") == "online"
                                 and view.status["started"] != first, 20), agent.log
        client.call("out-of-service", channel="gas1.co", by="Zhao", reason="calibration")
        test = client.call("entry-test", space="manhole-3", by="Li Wei")["result"]
        assert ["gas1.co"] == [c["channel"] for c in test["channels"] if c["passed"] is False]
        assert "out of service (calibration) by Zhao" == test["channels"][1]["reason"]
    finally:
        client.close()
        agent.kill()


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


def test_an_entry_session_evacuates_on_an_alarm_and_survives_a_restart(
        agent_with_space: AgentProcess, site_config: Path, platform: PlatformSubscriber,
        gas_detector: SimulatedDevice) -> None:
    def cli(*args: str) -> str:
        result = edge_agent("entry", *args, "-c", str(site_config))
        assert 0 == result.returncode, result.stdout + result.stderr
        return result.stdout

    refused = edge_agent("entry", "start", "manhole-3", "--by", "Li Wei", "-c", str(site_config))
    assert refused.returncode != 0
    assert "no pre-entry test of manhole-3" in refused.stdout + refused.stderr
    cli("test", "manhole-3", "--by", "Li Wei")
    assert "entry started" in cli("start", "manhole-3", "--by", "Li Wei")

    entries = platform.gateways["gw-test"].entries
    transitions = lambda: [e["transition"] for e in entries]  # noqa: E731
    gas_detector.pin("h2s", 8.0)  # above the MAC: everyone out
    assert platform.wait_for(lambda: "evacuate" in transitions(), 10), agent_with_space.log
    evacuate = next(e for e in entries if e["transition"] == "evacuate")
    assert evacuate["alarms"] == ["gas1.h2s:above:1"]
    assert evacuate["state"] == "evacuate"
    gas_detector.pin("h2s", 0.0)
    cli("test", "manhole-3", "--by", "Li Wei")
    assert platform.wait_for(lambda: "resumed" in transitions(), 10)

    assert 0 == agent_with_space.stop()  # a restart in the middle of the entry
    agent_with_space.start()
    wait_until(lambda: (site_config.parent / "buffer.db.sock").exists(), 20, "the agent up")
    status = json.loads(cli("status", "--json"))
    assert status[0]["session"]["state"] == "active"
    assert status[0]["session"]["by"] == "Li Wei"
    cli("end", "manhole-3", "--by", "Li Wei")
    assert platform.wait_for(lambda: transitions()[-1] == "ended", 10)
    assert transitions() == ["tested", "started", "evacuate", "tested", "resumed", "ended"]
    assert len({e["id"] for e in entries if e["transition"] != "tested"}) == 1  # one session
