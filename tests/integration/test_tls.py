"""The uplink over TLS with mutual certificates, against a real mosquitto: it delivers
when both sides trust each other and delivers nothing when either side does not, while
the agent keeps polling into its buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber
from simulators import ModbusTcpSimulator
from tests.pki import Pki
from tests.support import SITE, AgentProcess, buffered, wait_until

GATEWAY = "gw-test"
# What the broker logs when the client's certificate is not from its CA, and when the
# client aborted the handshake because the server's certificate is not from the client's.
CLIENT_REJECTED = "certificate verify failed"
SERVER_REJECTED = "tlsv1 alert unknown ca"

StartAgent = Callable[[Path, Path, Path], AgentProcess]


def tls_subscriber(broker: Mosquitto, pki: Pki) -> PlatformSubscriber:
    """A platform subscriber with a client certificate of its own from the test CA."""
    return PlatformSubscriber(broker.port, tls={
        "ca_certs": str(pki.ca), "certfile": str(pki.platform_cert),
        "keyfile": str(pki.platform_key)}).start()


@pytest.fixture
def tls_platform(tls_broker: Mosquitto, pki: Pki) -> Iterator[PlatformSubscriber]:
    subscriber = tls_subscriber(tls_broker, pki)
    yield subscriber
    subscriber.stop()


@pytest.fixture
def start_agent(tmp_path: Path, tls_broker: Mosquitto,
                modbus_server: ModbusTcpSimulator) -> Iterator[StartAgent]:
    """Start the agent with the given ca_file, cert_file and key_file; killed at the end."""
    started: list[AgentProcess] = []

    def start(ca_file: Path, cert_file: Path, key_file: Path) -> AgentProcess:
        site = SITE.format(modbus_port=modbus_server.port, broker_port=tls_broker.port,
                           buffer=tmp_path / "buffer.db", interval=0.2)
        assert 'tls = "off"' in site
        config = tmp_path / "site.toml"
        config.write_text(site.replace('tls = "off"', f'tls = "on"\nca_file = "{ca_file}"\n'
                                       f'cert_file = "{cert_file}"\nkey_file = "{key_file}"'))
        started.append(AgentProcess(config).start())
        return started[-1]

    yield start
    for agent in started:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.kill()


def broker_log(broker: Mosquitto) -> str:
    return broker.log_path.read_text(errors="replace") if broker.log_path.exists() else ""


def assert_refused_and_still_polling(agent: AgentProcess, broker: Mosquitto,
                                     platform: PlatformSubscriber, buffer: Path,
                                     reason: str, agent_says: str | None = None) -> None:
    """The broker logs ``reason`` (and the agent ``agent_says``); afterwards the agent keeps
    buffering samples, none of them reach the platform, and a clean stop keeps them for a
    later delivery."""
    wait_until(lambda: reason in broker_log(broker), 15, f"{reason!r} in the broker log")
    if agent_says is not None:
        wait_until(lambda: agent_says in agent.log.lower(), 5, f"{agent_says!r} in the "
                   "agent's log")
    before = buffered(buffer)["samples"]
    wait_until(lambda: buffered(buffer)["samples"] >= before + 14, 10,
               "two more polls in the buffer")  # 7 channels a poll
    assert [] == platform.messages, "nothing, not even a status, may get through"
    assert 0 == agent.stop()
    assert [] == platform.messages
    assert buffered(buffer)["samples"] >= before + 14


def test_telemetry_and_status_over_mutual_tls(
        start_agent: StartAgent, tls_platform: PlatformSubscriber, tls_broker: Mosquitto,
        pki: Pki, tmp_path: Path) -> None:
    """With certificates from the CA both sides trust, samples and status arrive as they
    do without TLS, and everything buffered is delivered."""
    agent = start_agent(pki.ca, pki.client_cert, pki.client_key)
    view = tls_platform.gateways[GATEWAY]
    expected = {"gas1.o2": (20.9, "%VOL"), "gas1.co": (2, "ppm"), "gas1.h2s": (0, "ppm"),
                "gas1.lel": (0, "%LEL"), "gas1.temperature": (-20.5, "°C"),
                "gas1.humidity": (55.5, "%RH"), "gas1.run_hours": (70000, "h")}
    assert tls_platform.wait_for(lambda: set(expected) <= set(view.latest), 15), agent.log
    for channel, (value, unit) in expected.items():
        sample = view.latest[channel]
        assert (value, unit, "good") == (sample["v"], sample["u"], sample["q"])
    assert tls_platform.wait_for(lambda: view.status.get("state") == "online")
    # Retained: a subscriber that connects later is told at once.
    late = tls_subscriber(tls_broker, pki)
    try:
        assert late.wait_for(lambda: any(m.retain and m.body["state"] == "online"
                                         for m in late.of_kind("status")), 5)
    finally:
        late.stop()
    assert f"as edge-agent-{GATEWAY}" in broker_log(tls_broker)
    assert CLIENT_REJECTED not in broker_log(tls_broker)

    assert 0 == agent.stop()
    assert tls_platform.wait_for(lambda: view.status.get("state") == "offline")
    assert "stopped" == view.status["reason"]
    assert {"samples": 0, "events": 0} == buffered(tmp_path / "buffer.db")
    assert 0 == view.duplicates


def test_client_certificate_from_another_ca_is_refused_by_the_broker(
        start_agent: StartAgent, tls_platform: PlatformSubscriber, tls_broker: Mosquitto,
        pki: Pki, tmp_path: Path) -> None:
    """The broker refuses a certificate its CA did not sign. The TLS 1.3 handshake looks
    complete to the client, so only the broker can say why (FIELD_NOTES.md §5)."""
    agent = start_agent(pki.ca, pki.rogue_client_cert, pki.rogue_client_key)
    assert_refused_and_still_polling(agent, tls_broker, tls_platform, tmp_path / "buffer.db",
                                     CLIENT_REJECTED)


def test_server_certificate_from_another_ca_is_refused_by_the_agent(
        start_agent: StartAgent, tls_platform: PlatformSubscriber, tls_broker: Mosquitto,
        pki: Pki, tmp_path: Path) -> None:
    """An agent that trusts another CA aborts the handshake, so a man in the middle gets
    nothing; the broker sees the agent's "unknown ca" alert and the agent logs why."""
    agent = start_agent(pki.rogue_ca, pki.client_cert, pki.client_key)
    assert_refused_and_still_polling(agent, tls_broker, tls_platform, tmp_path / "buffer.db",
                                     SERVER_REJECTED, agent_says="certificate verify failed")


def test_agent_log_says_the_broker_refused_its_certificate_and_retries(
        start_agent: StartAgent, tls_broker: Mosquitto, pki: Pki) -> None:
    """A technician reading the agent's journal must learn why nothing goes up."""
    agent = start_agent(pki.ca, pki.rogue_client_cert, pki.rogue_client_key)
    # The broker logs the refusal as it sends the alert, so the agent has it at once.
    wait_until(lambda: CLIENT_REJECTED in broker_log(tls_broker), 15, "a refusal in the broker log")
    wait_until(lambda: "unknown ca" in agent.log.lower(), 3, "'unknown ca' in the agent's log")
    # and it keeps trying (reconnect_max_s = 1), rather than giving up after one refusal
    wait_until(lambda: broker_log(tls_broker).count(CLIENT_REJECTED) >= 3, 15,
               "three refused attempts")
