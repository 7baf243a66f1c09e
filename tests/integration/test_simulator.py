"""The simulators, checked with an independent Modbus TCP client written here from the
Modbus application protocol (MBAP header, PDU, exception responses), not pymodbus."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys

import pytest

from edge_agent.demo.broker import free_port, wait_for_port
from edge_agent.profiles import ProfileLibrary
from simulators import ModbusTcpSimulator, SimulatedDevice, load_scenario
from simulators.device import SCENARIOS_DIR
from tests.support import REPO


def transact(port: int, unit: int, pdu: bytes, tid: int = 0x1234) -> bytes | None:
    """Send one request; return the response PDU, or None if the device stays silent."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
        sock.settimeout(0.5)
        try:
            header = sock.recv(7, socket.MSG_WAITALL)
        except TimeoutError:
            return None
        got_tid, protocol, length, got_unit = struct.unpack(">HHHB", header)
        assert (tid, 0, unit) == (got_tid, protocol, got_unit)
        return sock.recv(length - 1, socket.MSG_WAITALL)


def read(port: int, unit: int, function: int, address: int, count: int) -> bytes | None:
    return transact(port, unit, struct.pack(">BHH", function, address, count))


def test_simulator_serves_the_profile_registers(modbus_server: ModbusTcpSimulator) -> None:
    """FC03 returns the words a real transmitter would: scaled, signed, word-swapped."""
    response = read(modbus_server.port, 1, 3, 0, 8)
    assert response is not None
    assert (3, 16) == (response[0], response[1])
    words = list(struct.unpack(">8H", response[2:]))
    # o2 20.9 -> 209, co 2, h2s 0, lel 0, temperature -20.5 -> 0xFF33, humidity 555,
    # run_hours 70000 = 0x00011170 in CDAB order -> 0x1170, 0x0001
    assert [209, 2, 0, 0, 0xFF33, 555, 0x1170, 0x0001] == words


@pytest.mark.parametrize(("function", "address", "count", "code"), [
    (3, 8, 1, 2),  # past the profile's last register: illegal data address
    (4, 0, 1, 2),  # no input registers in this profile
])
def test_simulator_answers_exceptions_like_a_device(modbus_server: ModbusTcpSimulator,
                                                    function: int, address: int, count: int,
                                                    code: int) -> None:
    assert bytes([function | 0x80, code]) == read(modbus_server.port, 1, function, address,
                                                  count)


def test_simulator_refuses_writes(modbus_server: ModbusTcpSimulator) -> None:
    assert bytes([0x86, 0x01]) == transact(modbus_server.port, 1, struct.pack(">BHH", 6, 1, 5))


def test_simulator_is_silent_for_an_absent_unit(modbus_server: ModbusTcpSimulator) -> None:
    """Like a real RS-485 bus behind a gateway: nobody answers, no exception 04."""
    assert read(modbus_server.port, 7, 3, 0, 1) is None
    assert read(modbus_server.port, 1, 3, 0, 1) is not None  # and the others still answer


def test_simulator_hazard_follows_its_trapezoid() -> None:
    scenario, profile = load_scenario("confined_space")
    now = [0.0]
    device = SimulatedDevice(profile, 1, scenario, seed=1, clock=lambda: now[0])
    device.inject("h2s_release")  # H2S 0.3 -> 18 ppm: rise 10 s, hold 40 s, fall 15 s
    h2s = []
    for t in (0, 5, 10, 30, 50, 57.5, 65, 100):
        now[0] = t
        h2s.append(device.values()["h2s"])
    expected = [0.3, 9.15, 18.0, 18.0, 18.0, 9.15, 0.3, 0.3]
    assert expected == pytest.approx(h2s, abs=0.6)  # noise 0.1 ppm


@pytest.mark.parametrize("path", sorted(SCENARIOS_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_simulator_scenarios_load(path) -> None:
    scenario, profile = load_scenario(path)
    device = SimulatedDevice(profile, 1, scenario)
    for hazard in scenario.hazards:
        device.inject(hazard)
    assert set(device.values()) == {p.name for p in profile.points}


def test_simulator_command_line_serves_until_terminated() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "--profile", "generic_4gas",
                             "--tcp", str(port), "--units", "3"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for_port(port, 10, lambda: proc.poll() is None)
        assert bytes([3, 2, 0, 0]) == read(port, 3, 3, 0, 1)
    finally:
        proc.terminate()
        assert 0 == proc.wait(10)
    assert b"unit(s) [3]" in proc.stdout.read()


def test_simulator_device_rejects_unknown_names() -> None:
    device = SimulatedDevice(ProfileLibrary().get("generic_4gas"))
    with pytest.raises(KeyError):
        device.pin("c0", 1)
    with pytest.raises(KeyError, match="no hazard 'leak'"):
        device.inject("leak")


def test_simulator_command_line_serves_a_frame_device_on_a_new_pty() -> None:
    """`--pty` makes the line and prints the agent's end; the agent's serial transport
    switches the module to Q&A and reads it there."""
    import asyncio

    from edge_agent.acquisition import SerialTransport
    from edge_agent.config import Device, SerialBus

    proc = subprocess.Popen([sys.executable, "-m", "simulators", "--scenario", "winsen_ze03_co",
                             "--pty"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        agent_end = proc.stdout.readline().rsplit(" ", 1)[1].strip()
        assert "serving winsen_ze03_co" in proc.stdout.readline()
        profile = ProfileLibrary().get("winsen_ze03_co")
        bus = SerialBus(type="serial", name="uart", port=agent_end, timeout_ms=1000)
        device = Device(name="co1", bus="uart", profile="winsen_ze03_co")

        async def read() -> dict[str, float]:
            transport = SerialTransport(bus)
            try:
                return await transport.read(device, profile)
            finally:
                await transport.close()

        reading = profile.interpret(asyncio.run(read()))
    finally:
        proc.terminate()
        assert 0 == proc.wait(10)
    value, quality = reading["co"]
    assert ("good", True) == (quality.label, 0 <= value <= 10)  # clean air in the scenario
