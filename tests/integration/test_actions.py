"""Local actions: a relay module on the field bus switched by the agent's alarms, with
the broker up or down, and released as the rule says."""

from __future__ import annotations

from pathlib import Path

from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.platform import PlatformSubscriber
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
        assert {"key": "gas1.co:above:1", "alarm": alarm["id"], "by": "bob",
                "state": "awaiting_handling"} == reply["result"]
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


LIFECYCLE = """
[alarm_management]
escalate_after_min = 0.05
escalations_max = 1

[[actions]]
name = "gate_siren"
when = ["gas1.co:above:*"]
device = "relays"
output = "relay_2"
escalation = 1
"""


def test_alarm_lifecycle_from_raise_to_close_with_shelving_and_escalation(
        tmp_path: Path, field: ModbusTcpSimulator, broker: Mosquitto,
        platform: PlatformSubscriber, gas_detector: SimulatedDevice,
        relays: SimulatedDevice) -> None:
    """ISA-18.2 states through the platform's commands, the outputs following them."""
    path = site(tmp_path, field, broker.port, "cleared_and_acknowledged")
    path.write_text(path.read_text().replace(
        "{ level = 2, above = 160, deadband = 5 }",
        "{ level = 2, above = 160, deadband = 5, latch = true }") + LIFECYCLE)
    agent = AgentProcess(path).start()
    commander = CommandClient(broker.port)
    view = platform.gateways["gw-test"]
    l1, l2 = "gas1.co:above:1", "gas1.co:above:2"

    def seen(key: str, transition: str) -> dict | None:
        return next((e for e in view.events if (e["key"], e["transition"]) == (key, transition)),
                    None)

    def refused(name: str, **fields: object) -> str:
        reply = commander.call(name, **fields)
        assert not reply["ok"], reply
        return reply["error"]["message"]

    try:
        assert platform.wait_for(lambda: view.status.get("state") == "online", 15), agent.log
        gas_detector.pin("co", 200)
        wait_until(lambda: sounder(relays) == 1, 5, "the sounder on")
        assert platform.wait_for(lambda: seen(l2, "escalated"), 15), "unacknowledged: escalated"
        wait_until(lambda: relays.outputs.get("relay_2") == 1, 5, "the gate siren on")
        assert "level-2 alarms cannot be shelved" in refused(
            "shelve-alarm", key=l2, by="bob", reason="annoying", minutes=10)
        assert "still holds" in refused("reset-alarm", key=l2, by="bob")
        assert "acknowledge it first" in refused("handle-alarm", key=l2, by="bob", cause="c",
                                                 action="a")
        acked = commander.call("ack-alarm", key=l2, by="bob", note="on my way")["result"]
        assert "acknowledged" == acked["state"]

        gas_detector.pin("co", 2)
        assert platform.wait_for(lambda: seen(l2, "latched") and seen(l1, "returned_to_normal"),
                                 10)
        states = {a["key"]: a["state"] for a in commander.call("alarms")["result"]["active"]}
        assert {l1: "returned_unacknowledged", l2: "latched"} == states
        commander.call("reset-alarm", key=l2, by="bob")
        assert platform.wait_for(lambda: seen(l2, "returned_to_normal"), 10)
        handled = commander.call("handle-alarm", key=l2, by="bob", cause="hose split at the "
                                 "tank", action="valve closed, hose replaced")["result"]
        assert handled["closed"] is True
        assert platform.wait_for(lambda: seen(l2, "closed"), 10)
        closed = seen(l2, "closed")
        assert (closed["id"], closed["cause"], closed["acked_by"]) == (
            seen(l2, "raised")["id"], "hose split at the tank", "bob")
        assert 1 == sounder(relays)  # the level-1 alarm is still unacknowledged
        commander.call("ack-alarm", key=l1, by="bob")
        wait_until(lambda: sounder(relays) == 0 and relays.outputs.get("relay_2") == 0, 5,
                   "both outputs off once everything is over and acknowledged")

        shelved = commander.call("shelve-alarm", key=l1, by="bob", reason="sensor drifting, "
                                 "replacement ordered", minutes=30)["result"]
        assert shelved["until_ms"] > 0
        gas_detector.pin("co", 30)
        assert platform.wait_for(lambda: len([e for e in view.events if (
            e["key"], e["transition"]) == (l1, "raised")]) == 2, 10), "still evaluated, published"
        assert "shelved" == [e for e in view.events if e["transition"] == "raised"][-1].get(
            "suppressed")
        protection = commander.call("status")["result"]["health"]["protection"]
        assert ["bob"] == [s["by"] for s in protection["shelved"].values()]
        assert 0 == sounder(relays)  # shelved: no output
        commander.call("unshelve-alarm", key=l1, by="bob")
        wait_until(lambda: sounder(relays) == 1, 5, "the sounder on once unshelved")

        agent.kill()  # the lifecycle survives a crash
        agent = AgentProcess(path).start()
        assert platform.wait_for(lambda: view.status.get("state") == "online", 15), agent.log
        states = [(a["key"], a["state"]) for a in commander.call("alarms")["result"]["active"]
                  if a["class"] == "alarm"]  # the first level-1 episode was never handled
        assert [(l1, "awaiting_handling"), (l1, "unacknowledged")] == states
    finally:
        commander.close()
        agent.kill()


HEALTHY = """
[[actions]]
name = "healthy"
when = ["gas1:comm_lost", "gas1.*:sensor_fault"]
device = "relays"
output = "relay_3"
healthy = true
"""


def test_healthy_relay_is_energised_while_protecting_and_drops_on_a_fault_and_the_stop(
        tmp_path: Path, field: ModbusTcpSimulator, gas_detector: SimulatedDevice,
        relays: SimulatedDevice) -> None:
    """ALARM_MANAGEMENT.md §6.8: a normally energised relay that a fire panel or a PLC
    reads as "the gas detection works"."""
    path = site(tmp_path, field, free_port(), "cleared")  # no broker: local only
    path.write_text(path.read_text() + HEALTHY)
    agent = AgentProcess(path).start()
    try:
        wait_until(lambda: relays.outputs.get("relay_3") == 1, 15, "energised at start")
        gas_detector.fault("silent")
        wait_until(lambda: relays.outputs.get("relay_3") == 0, 15, "dropped on comm-lost")
        gas_detector.heal()
        wait_until(lambda: relays.outputs.get("relay_3") == 1, 15, "energised again")
        assert 0 == agent.stop()
        assert 0 == relays.outputs.get("relay_3"), "dropped at the stop"
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
