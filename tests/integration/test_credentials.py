"""Username and password from a file or the environment, against a mosquitto that
refuses anonymous clients; the password never reaches the log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber
from simulators import ModbusTcpSimulator
from tests.integration.test_cli import edge_agent
from tests.support import SITE, AgentProcess, buffered, wait_until

PASSWORD = "s3cret-Pa55-for-gw-test"


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(workdir=tmp_path / "broker", users={"gw-test": PASSWORD,
                                                       "platform": "p"}) as broker:
        yield broker


def config(tmp_path: Path, broker: Mosquitto, modbus: ModbusTcpSimulator, extra: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(modbus_port=modbus.port, broker_port=broker.port,
                                buffer=tmp_path / "buffer.db", interval=0.2)
                    .replace('tls = "off"', f'tls = "off"\nusername = "gw-test"\n{extra}'))
    return path


@pytest.mark.parametrize("source", ["file", "env"])
def test_password_from_a_file_or_the_environment(
        tmp_path: Path, locked_broker: Mosquitto, modbus_server: ModbusTcpSimulator,
        source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if source == "file":
        secret = tmp_path / "password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o640)
        extra = f'password_file = "{secret}"'
    else:
        monkeypatch.setenv("GW_TEST_PASSWORD", PASSWORD)  # inherited by the agent process
        extra = 'password_env = "GW_TEST_PASSWORD"'
    platform = PlatformSubscriber(locked_broker.port)
    platform.client.username_pw_set("platform", "p")
    platform.start()
    agent = AgentProcess(config(tmp_path, locked_broker, modbus_server, extra)).start()
    try:
        view = platform.gateways["gw-test"]
        assert platform.wait_for(lambda: len(view.sample_seqs) >= 7, 15), agent.log
        assert 0 == agent.stop()
    finally:
        agent.kill()
        platform.stop()
    assert PASSWORD not in agent.log


def test_wrong_password_is_refused_logged_and_kept_secret(
        tmp_path: Path, locked_broker: Mosquitto, modbus_server: ModbusTcpSimulator) -> None:
    secret = tmp_path / "password"
    secret.write_text("not-the-password")
    secret.chmod(0o600)
    agent = AgentProcess(config(tmp_path, locked_broker, modbus_server,
                                f'password_file = "{secret}"')).start()
    try:
        wait_until(lambda: "uplink_refused" in agent.log, 15, "the refusal in the agent's log")
        assert "Not authorized" in agent.log
        wait_until(lambda: buffered(tmp_path / "buffer.db")["samples"] >= 14, 10,
                   "polling goes on into the buffer")
        assert 0 == agent.stop()
    finally:
        agent.kill()
    assert "not-the-password" not in agent.log


def test_a_password_file_every_user_can_read_is_refused(
        tmp_path: Path, locked_broker: Mosquitto, modbus_server: ModbusTcpSimulator) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    secret.chmod(0o644)
    site = config(tmp_path, locked_broker, modbus_server, f'password_file = "{secret}"')
    result = edge_agent("config", "validate", str(site))
    assert 1 == result.returncode
    assert (f"{secret} can be read by every user (mode 0644); run chmod o-rwx on it"
            ) in result.stderr
    assert "mqtt.password_file (line " in result.stderr
    secret.chmod(0o640)
    shown = edge_agent("config", "show", "-c", str(site), "--json")
    assert 0 == shown.returncode, shown.stderr
    assert str(secret) in shown.stdout
    assert PASSWORD not in shown.stdout + shown.stderr  # the path, never the secret
