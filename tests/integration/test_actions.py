"""Local actions: a relay module on the field bus switched by the agent's alarms, with
the broker up or down, and released as the rule says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.platform import PlatformSubscriber
from edge_agent.profiles import ProfileLibrary
from simulators import ModbusTcpSimulator, SimulatedDevice
from tests.support import SITE, AgentProcess, CommandClient, wait_until

RELAY = """
[[devices]]
name = "relays"
bus = "field"
unit_id = 2
profile = "waveshare_relay_8ch_d"
poll_interval_s = 0.5

[[actions]]
name = "sounder"
when = ["gas1.co:above:*"]
device = "relays"
output = "relay_1"
release = "{release}"
"""


@pytest.fixture
def relays() -> SimulatedDevice:
    return SimulatedDevice(ProfileLibrary().get("waveshare_relay_8ch_d"), unit_id=2)


@pytest.fixture
def field(gas_detector: SimulatedDevice, relays: SimulatedDevice
          ) -> Iterator[ModbusTcpSimulator]:
    with ModbusTcpSimulator([gas_detector, relays], port=free_port()) as server:
        yield server


def site(tmp_path: Path, field: ModbusTcpSimulator, broker_port: int, release: str) -> Path:
    text = SITE.format(modbus_port=field.port, broker_port=broker_port,
                       buffer=tmp_path / "buffer.db", interval=0.2)
    path = tmp_path / "site.toml"
    head, tail = text.split("[mqtt]")
    path.write_text(head + RELAY.format(release=release) + "\n[mqtt]" + tail)
    return path


def sounder(relays: SimulatedDevice) -> int | None:
    return relays.outputs.get("relay_1")


def test_action_fires_and_releases_with_the_broker_down(
        tmp_path: Path, field: ModbusTcpSimulator, gas_detector: SimulatedDevice,
        relays: SimulatedDevice) -> None:
    agent = AgentProcess(site(tmp_path, field, free_port(), "cleared")).start()  # no broker
    try:
        wait_until(lambda: sounder(relays) == 0, 15, "the sounder told off at start")
        gas_detector.pin("co", 30)
        wait_until(lambda: sounder(relays) == 1, 5, "the sounder on")
        gas_detector.pin("co", 2)
        wait_until(lambda: sounder(relays) == 0, 5, "the sounder off once cleared")
        assert "action_switched" in agent.log
    finally:
        agent.kill()


def test_action_holds_until_cleared_and_acknowledged(
        tmp_path: Path, field: ModbusTcpSimulator, broker: Mosquitto,
        platform: PlatformSubscriber, gas_detector: SimulatedDevice,
        relays: SimulatedDevice) -> None:
    agent = AgentProcess(site(tmp_path, field, broker.port, "cleared_and_acknowledged")).start()
    commander = CommandClient(broker.port)
    view = platform.gateways["gw-test"]
    try:
        assert platform.wait_for(lambda: view.status.get("state") == "online", 15), agent.log
        gas_detector.pin("co", 30)
        wait_until(lambda: sounder(relays) == 1, 5, "the sounder on")
        gas_detector.pin("co", 2)
        assert platform.wait_for(lambda: any(  # the relay switched before this reached us
            e["key"] == "gas1.co:above:1" and e["transition"] == "returned_to_normal"
            for e in view.events), 10)
        assert 1 == sounder(relays)  # cleared, not yet acknowledged: still sounding
        alarm = next(e for e in view.events if e["key"] == "gas1.co:above:1")
        reply = commander.call("ack-alarm", alarm=alarm["id"], by="bob")
        assert {"key": "gas1.co:above:1", "alarm": alarm["id"], "by": "bob"} == reply["result"]
        wait_until(lambda: sounder(relays) == 0, 5, "the sounder off once acknowledged")
        assert platform.wait_for(lambda: view.events[-1]["transition"] == "acknowledged")
    finally:
        commander.close()
        agent.kill()


def test_action_failure_is_a_fault(tmp_path: Path, field: ModbusTcpSimulator,
                                   broker: Mosquitto, platform: PlatformSubscriber,
                                   gas_detector: SimulatedDevice,
                                   relays: SimulatedDevice) -> None:
    relays.fault("silent")
    agent = AgentProcess(site(tmp_path, field, broker.port, "cleared")).start()
    view = platform.gateways["gw-test"]
    try:
        assert platform.wait_for(lambda: "action:sounder:failed" in view.active, 20), agent.log
        relays.heal()
        assert platform.wait_for(lambda: "action:sounder:failed" not in view.active, 20)
        assert 0 == sounder(relays)
    finally:
        agent.kill()
