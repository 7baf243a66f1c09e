"""Commands from the platform to a running agent, over a real mosquitto: each one,
the error replies, and a config push that is applied, refused or rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.platform import PlatformSubscriber
from simulators import ModbusTcpSimulator, SimulatedDevice
from tests.support import AgentProcess, CommandClient

GATEWAY = "gw-test"


@pytest.fixture
def commander(broker: Mosquitto) -> Iterator[CommandClient]:
    client = CommandClient(broker.port)
    yield client
    client.close()


@pytest.fixture
def running(agent: AgentProcess, platform: PlatformSubscriber) -> AgentProcess:
    """The agent, once its first samples reached the platform."""
    view = platform.gateways[GATEWAY]
    assert platform.wait_for(lambda: "gas1.co" in view.latest, 15), agent.log
    return agent


def test_ping_answers_with_version_and_config_hash(
        running: AgentProcess, commander: CommandClient, site_config: Path) -> None:
    reply = commander.call("ping")
    assert (True, "ping", "gw-test", 1) == (reply["ok"], reply["command"], reply["gateway"],
                                            reply["v"])
    assert load_config(site_config).hash == reply["result"]["config_hash"]
    assert reply["result"]["uptime_s"] >= 0


@pytest.mark.parametrize(("name", "payload", "code", "says"), [
    ("reboot", {"id": "x1"}, "unknown_command", "no command 'reboot'; commands are ping"),
    ("ping", b"{not json", "bad_request", "the payload is not JSON"),
    ("ping", b"[1, 2]", "bad_request", "the payload must be a JSON object"),
    ("ack-alarm", {"id": "x2", "key": "gas1.co:above:1"}, "bad_request", "by: Field required"),
    ("read-now", {"id": "x3", "devise": "gas1"}, "bad_request",
     "devise: Extra inputs are not permitted"),
    ("ack-alarm", {"id": "x4", "key": "gas1.co:above:1", "by": "al"}, "not_found",
     "no alarm 'gas1.co:above:1' to acknowledge"),
])
def test_bad_commands_get_an_error_reply(
        running: AgentProcess, commander: CommandClient, name: str, payload: object,
        code: str, says: str) -> None:
    commander.send(name, payload)  # type: ignore[arg-type]
    request_id = payload.get("id") if isinstance(payload, dict) else None
    reply = commander.reply(request_id)
    assert (False, code) == (reply["ok"], reply["error"]["code"])
    assert says in reply["error"]["message"]
    assert "Traceback" not in running.log
    assert commander.call("ping")["ok"]  # the agent carries on


def test_only_the_gateways_own_command_topics_are_heard(
        running: AgentProcess, commander: CommandClient) -> None:
    commander.send("ping", {"id": "other"}, prefix="edge/v1/site-test/gw-other")
    assert commander.call("ping")["ok"]  # sent after: once it is answered, the other was not
    assert not [t for t, body, _ in commander.replies if body.get("id") == "other"]


def test_ack_alarm_is_recorded_as_an_event_with_who(
        running: AgentProcess, commander: CommandClient, platform: PlatformSubscriber,
        gas_detector: SimulatedDevice) -> None:
    view = platform.gateways[GATEWAY]
    gas_detector.pin("co", 30)
    assert platform.wait_for(lambda: "gas1.co:above:1" in view.active, 10), running.log
    raised = view.active["gas1.co:above:1"]
    reply = commander.call("ack-alarm", alarm=raised["id"], by="alice")
    assert {"key": "gas1.co:above:1", "alarm": raised["id"], "by": "alice",
            "state": "acknowledged"} == reply["result"]
    assert platform.wait_for(lambda: any(e["transition"] == "acknowledged" for e in view.events))
    acked = next(e for e in view.events if e["transition"] == "acknowledged")
    assert (raised["id"], "alice") == (acked["id"], acked["by"])


def test_read_now_polls_at_once_and_answers_the_values(
        running: AgentProcess, commander: CommandClient, gas_detector: SimulatedDevice) -> None:
    gas_detector.pin("h2s", 4.0)
    reply = commander.call("read-now", device="gas1")
    samples = {s["ch"]: s for s in reply["result"]["gas1"]["samples"]}
    assert (4.0, "ppm", "good") == (samples["gas1.h2s"]["v"], samples["gas1.h2s"]["u"],
                                    samples["gas1.h2s"]["q"])
    missing = commander.call("read-now", device="gas9")
    assert ("not_found", ["gas1"]) == (missing["error"]["code"], missing["error"]["devices"])


def test_get_config_and_buffer_stats(running: AgentProcess, commander: CommandClient,
                                     site_config: Path) -> None:
    config = commander.call("get-config")["result"]
    assert (site_config.read_text(), load_config(site_config).hash) == (
        config["toml"], config["config_hash"])
    stats = commander.call("buffer-stats")["result"]
    assert stats["last_seq"] > 0
    assert stats["schema_version"] >= 2
    assert stats["delivered"]["samples"] > 0


def test_set_config_applies_a_new_limit_and_keeps_it(
        running: AgentProcess, commander: CommandClient, platform: PlatformSubscriber,
        gas_detector: SimulatedDevice, site_config: Path) -> None:
    view = platform.gateways[GATEWAY]
    before = site_config.read_text()
    pushed = before.replace("level = 1, above = 24", "level = 1, above = 10")
    reply = commander.call("set-config", toml=pushed)
    assert reply["ok"], reply
    result = reply["result"]
    assert (True, load_config(site_config).hash, []) == (
        result["applied"], result["config_hash"], result["not_answering"])
    assert pushed == site_config.read_text()
    assert before == Path(result["previous_saved_as"]).read_text()
    assert platform.wait_for(lambda: view.status.get("config_hash") == result["config_hash"])
    gas_detector.pin("co", 15)  # over the new setpoint only
    assert platform.wait_for(lambda: "gas1.co:above:1" in view.active, 10), running.log
    assert 10 == view.active["gas1.co:above:1"]["setpoint"]
    again = commander.call("set-config", toml=pushed)["result"]
    assert (False, result["config_hash"]) == (again["applied"], again["config_hash"])


def test_bad_set_config_changes_nothing(
        running: AgentProcess, commander: CommandClient, site_config: Path) -> None:
    before, hash_before = site_config.read_text(), load_config(site_config).hash
    invalid = commander.call("set-config", toml=before.replace("poll_interval_s", "pol_interval_s"))
    assert ("bad_request", True) == (invalid["error"]["code"], "pol_interval_s" in
                                     invalid["error"]["message"])
    refused = commander.call("set-config", toml=before.replace('tls = "off"',
                                                               'tls = "off"\nkeepalive_s = 60'))
    assert ("refused", "mqtt cannot be changed remotely") == (
        refused["error"]["code"], refused["error"]["message"][:31])
    # Nor the web view: a push must not open it to the plant network.
    web = commander.call("set-config", toml=before + '\n[web]\nenabled = true\nbind = "0.0.0.0"\n')
    assert ("refused", "web cannot be changed remotely") == (
        web["error"]["code"], web["error"]["message"][:30])
    assert before == site_config.read_text()
    assert hash_before == commander.call("ping")["result"]["config_hash"]
    assert not list(site_config.parent.glob(".site.toml.pending*"))


def test_set_config_that_loses_a_device_is_rolled_back(
        running: AgentProcess, commander: CommandClient, platform: PlatformSubscriber,
        site_config: Path, modbus_server: ModbusTcpSimulator) -> None:
    view = platform.gateways[GATEWAY]
    before, hash_before = site_config.read_text(), load_config(site_config).hash
    wrong_port = before.replace(f"port = {modbus_server.port}", f"port = {free_port()}")
    reply = commander.call("set-config", toml=wrong_port, timeout_s=30)
    assert ("rolled_back", ["gas1"], hash_before) == (
        reply["error"]["code"], reply["error"]["devices_lost"], reply["error"]["config_hash"])
    assert before == site_config.read_text()
    seen = len(view.sample_seqs)
    assert platform.wait_for(lambda: len(view.sample_seqs) >= seen + 14, 10)  # polling again
    assert "good" == view.latest["gas1.co"]["q"]
    assert hash_before == view.status["config_hash"]


def test_mqtt5_reply_goes_to_the_response_topic_with_the_correlation_data(
        site_config: Path, broker: Mosquitto, platform: PlatformSubscriber) -> None:
    site_config.write_text(site_config.read_text().replace('tls = "off"',
                                                           'tls = "off"\nprotocol = "5"'))
    agent = AgentProcess(site_config).start()
    commander = CommandClient(broker.port, protocol=5)
    try:
        view = platform.gateways[GATEWAY]
        assert platform.wait_for(lambda: view.status.get("state") == "online", 15), agent.log
        commander.send("ping", {"id": "v5"}, response_topic="platform/replies/abc",
                       correlation=b"\x01corr")
        commander.reply("v5")
        topic, body, correlation = commander.replies[-1]
        assert ("platform/replies/abc", b"\x01corr", True) == (topic, correlation, body["ok"])
    finally:
        commander.close()
        agent.kill()
