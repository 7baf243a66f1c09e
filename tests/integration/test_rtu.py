"""Modbus RTU over a serial line (a socat pseudo-terminal pair): the simulator checked
with an independent client (pyserial and a CRC written here from the spec), and the
agent polling it."""

from __future__ import annotations

import struct
from pathlib import Path

import serial

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber
from simulators import ModbusRtuSimulator, SimulatedDevice
from tests.support import AgentProcess


def crc16_modbus(frame: bytes) -> bytes:
    """CRC-16/MODBUS: init 0xFFFF, reflected polynomial 0xA001, sent low byte first."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def test_crc_matches_the_reference_frames() -> None:
    """Frames from SAFETY_REFERENCE §8.1, CRC recomputed there."""
    assert bytes.fromhex("c40b") == crc16_modbus(bytes.fromhex("010300000002"))
    assert bytes.fromhex("d5c5") == crc16_modbus(bytes.fromhex("fe0400030001"))


def rtu_request(line: serial.Serial, unit: int, function: int, address: int,
                count: int) -> bytes:
    frame = struct.pack(">BBHH", unit, function, address, count)
    line.reset_input_buffer()
    line.write(frame + crc16_modbus(frame))
    return line.read(5 + 2 * count)  # returns early (timeout) on a short answer or silence


def test_rtu_simulator_answers_an_independent_client(
        pty_pair: tuple[Path, Path], gas_detector: SimulatedDevice) -> None:
    device_end, client_end = pty_pair
    with ModbusRtuSimulator([gas_detector], str(device_end), baudrate=19200), \
            serial.Serial(str(client_end), 19200, timeout=1) as line:
        answer = rtu_request(line, 1, 3, 0, 2)
        assert bytes([1, 3, 4, 0, 209, 0, 2]) == answer[:-2]  # O2 20.9 %VOL, CO 2 ppm
        assert crc16_modbus(answer[:-2]) == answer[-2:]
        exception = rtu_request(line, 1, 3, 0x0100, 1)
        assert bytes([1, 0x83, 2]) == exception[:3]  # illegal data address
        assert crc16_modbus(exception[:3]) == exception[3:5]
        assert b"" == rtu_request(line, 9, 3, 0, 1)  # nobody is unit 9: silence


RTU_SITE = """\
gateway_id = "gw-rtu"
site_id = "site-rtu"

[[buses]]
name = "rs485"
type = "modbus-rtu"
port = "{port}"
baudrate = 19200
timeout_ms = 300

[[devices]]
name = "gas1"
bus = "rs485"
unit_id = 1
profile = "generic_4gas"
poll_interval_s = 0.3

[[devices]]
name = "absent"
bus = "rs485"
unit_id = 5
profile = "generic_4gas"
poll_interval_s = 0.3

[mqtt]
host = "127.0.0.1"
port = {broker_port}
tls = "off"

[buffer]
path = "{buffer}"
"""


def test_agent_polls_an_rtu_bus_and_isolates_an_absent_device(
        pty_pair: tuple[Path, Path], gas_detector: SimulatedDevice, broker: Mosquitto,
        platform: PlatformSubscriber, tmp_path: Path) -> None:
    """The device that answers is read exactly and still alarms; the one that never
    answers is comm_lost and does not stop the other (PEER_LESSONS 5)."""
    device_end, agent_end = pty_pair
    config = tmp_path / "site.toml"
    config.write_text(RTU_SITE.format(port=agent_end, broker_port=broker.port,
                                      buffer=tmp_path / "buffer.db"))
    view = platform.gateways["gw-rtu"]
    with ModbusRtuSimulator([gas_detector], str(device_end), baudrate=19200):
        agent = AgentProcess(config).start()
        try:
            assert platform.wait_for(lambda: "absent:comm_lost" in view.active
                                     and len(view.sample_seqs) >= 50, 20), agent.log
            assert (20.9, "good") == (view.latest["gas1.o2"]["v"], view.latest["gas1.o2"]["q"])
            assert -20.5 == view.latest["gas1.temperature"]["v"]
            assert (None, "comm_lost") == (view.latest["absent.o2"]["v"],
                                           view.latest["absent.o2"]["q"])
            assert "gas1:comm_lost" not in view.active
            gas_detector.pin("co", 30)  # an alarm on another device during the fault
            assert platform.wait_for(lambda: "gas1.co:above:1" in view.active, 10)
        finally:
            assert 0 == agent.stop()
