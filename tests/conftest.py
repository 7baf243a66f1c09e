"""Shared fixtures: a real mosquitto per test, simulated Modbus devices, the agent as a
real process, and the platform's view of what arrived.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.demo.broker import Mosquitto, TlsFiles
from edge_agent.demo.platform import PlatformSubscriber
from edge_agent.profiles import ProfileLibrary
from edge_agent.web.pin import hash_pin
from simulators import ModbusTcpSimulator, SimulatedDevice
from tests.pki import Pki, make_pki
from tests.support import SITE, WEB, AgentProcess, WebClient, wait_until


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A persistent mosquitto on a free loopback port, stopped at the end."""
    with Mosquitto(workdir=tmp_path / "broker", persistent=True) as running:
        yield running


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    """A TLS-only listener that refuses clients without a certificate from the test CA."""
    tls = TlsFiles(pki.ca, pki.server_cert, pki.server_key, require_certificate=True)
    with Mosquitto(workdir=tmp_path / "broker", tls=tls) as running:
        yield running


@pytest.fixture
def platform(broker: Mosquitto, request: pytest.FixtureRequest) -> Iterator[PlatformSubscriber]:
    """The platform's subscriber; a persistent session, so it misses nothing across a
    broker restart."""
    subscriber = PlatformSubscriber(broker.port, client_id=f"platform-{request.node.name}"[:60],
                                    clean_session=False).start()
    yield subscriber
    subscriber.stop()


@pytest.fixture
def gas_detector() -> SimulatedDevice:
    """A 4-gas transmitter in clean air, every register pinned to an exact value."""
    device = SimulatedDevice(ProfileLibrary().get("generic_4gas"), unit_id=1)
    for name, value in {"o2": 20.9, "co": 2, "h2s": 0.0, "lel": 0.0, "temperature": -20.5,
                        "humidity": 55.5, "run_hours": 70000}.items():
        device.pin(name, value)
    return device


@pytest.fixture
def relays() -> SimulatedDevice:
    """An 8-relay module (unit 2) whose coils record what the agent wrote."""
    return SimulatedDevice(ProfileLibrary().get("waveshare_relay_8ch_d"), unit_id=2)


@pytest.fixture
def field(gas_detector: SimulatedDevice, relays: SimulatedDevice
          ) -> Iterator[ModbusTcpSimulator]:
    """The gas detector and the relay module on one Modbus TCP server."""
    from edge_agent.demo.broker import free_port

    with ModbusTcpSimulator([gas_detector, relays], port=free_port()) as server:
        yield server


@pytest.fixture
def modbus_server(gas_detector: SimulatedDevice) -> Iterator[ModbusTcpSimulator]:
    from edge_agent.demo.broker import free_port

    with ModbusTcpSimulator([gas_detector], port=free_port()) as server:
        yield server


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two linked pseudo-terminals from socat: a serial cable on this machine."""
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stderr=subprocess.DEVNULL)
    wait_until(lambda: a.exists() and b.exists(), 5, "socat's pseudo-terminals")
    yield a, b
    proc.terminate()
    proc.wait(5)


@pytest.fixture
def site_config(tmp_path: Path, broker: Mosquitto, modbus_server: ModbusTcpSimulator) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(modbus_port=modbus_server.port, broker_port=broker.port,
                                buffer=tmp_path / "buffer.db", interval=0.2))
    return path


@pytest.fixture
def agent(site_config: Path) -> Iterator[AgentProcess]:
    """The agent running on ``site_config``; killed at the end if still running."""
    process = AgentProcess(site_config).start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.kill()


@pytest.fixture(scope="session")
def pin_hash() -> str:
    return hash_pin(WebClient.PIN)


@pytest.fixture
def web_agent(tmp_path: Path, broker: Mosquitto, modbus_server: ModbusTcpSimulator,
              pin_hash: str) -> Iterator[tuple[AgentProcess, WebClient]]:
    """The agent with its web view on (a confined space "tank" watched by gas1), once the
    view shows gas1's values.
    """
    from edge_agent.demo.broker import free_port

    port = free_port()
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(modbus_port=modbus_server.port, broker_port=broker.port,
                                buffer=tmp_path / "buffer.db", interval=0.2)
                    + WEB.format(port=port, pin_hash=pin_hash))
    process = AgentProcess(path).start()
    client = WebClient(port)
    wait_until(lambda: any(c["ch"] == "gas1.co" for c in client.site().get("channels", [])),
               20, "the web view to show gas1.co")
    yield process, client
    if process.proc is not None and process.proc.poll() is None:
        process.kill()
