"""``edge-agent devices``: scan, read, read-registers and write-register as a technician
runs them, against simulated devices on Modbus TCP and on RTU over a socat pty pair."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import serial

from edge_agent import runlock
from edge_agent.demo.broker import free_port
from edge_agent.profiles import ProfileLibrary, builtin_profiles_dir
from simulators import ModbusRtuSimulator, ModbusTcpSimulator, SimulatedDevice
from tests.support import REPO

# A relay module whose state register mirrors its output: writable, and read back.
RELAY_PROFILE = """\
name = "test_relay"
vendor = "test"
model = "one relay with a state register"
follows = "relay modules that mirror each output in a holding register"
source = "written for these tests"
registers = [
  { name = "relay_state", address = 0x0010, description = "relay, 1 = on" },
  { name = "beacon_state", address = 0x0020, function = "coil", type = "bool" },
]
outputs = [
  { name = "relay", function = "holding", address = 0x0010 },
  { name = "beacon", function = "coil", address = 0x0020 },
]
"""

SITE = """\
gateway_id = "gw-cli"
site_id = "site-cli"
profiles_dir = "profiles"

[[buses]]
name = "field"
type = "modbus-tcp"
host = "127.0.0.1"
port = {tcp_port}
timeout_ms = 300

[[buses]]
name = "rs485"
type = "modbus-rtu"
port = "{tty}"
baudrate = 19200

[[buses]]
name = "dtu"
type = "modbus-rtu-over-tcp"
host = "127.0.0.1"
port = {dtu_port}

[[buses]]
name = "closed"
type = "modbus-tcp"
host = "127.0.0.1"
port = {closed_port}

[[buses]]
name = "meter"
type = "serial"
port = "/dev/ttyUSB9"

[[devices]]
name = "gas1"
bus = "field"
unit_id = 1
profile = "generic_4gas"

[[devices]]
name = "relay3"
bus = "field"
unit_id = 3
profile = "test_relay"

[[devices]]
name = "gas5"
bus = "field"
unit_id = 5
profile = "generic_4gas"

[[devices]]
name = "bottom"
bus = "rs485"
unit_id = 1
profile = "generic_4gas"

[mqtt]
host = "127.0.0.1"
tls = "off"

[buffer]
path = "{buffer}"
"""


def edge_agent(*args: str, stdin: str = "", timeout: float = 60
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a failed command; no traceback, nothing on stdout."""
    assert 1 == result.returncode, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert 1 == len(lines), result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@dataclass
class Site:
    config: Path
    buffer: Path
    tty: Path  # the agent's end of the RS-485 pty pair
    dtu_port: int  # where the RTU-over-TCP bus "dtu" connects
    devices: dict[int, SimulatedDevice]  # the TCP bus' simulated units
    server: ModbusTcpSimulator

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        command, *rest = args
        return edge_agent("devices", command, "--config", str(self.config), *rest, stdin=stdin)


def gas_detector(unit: int) -> SimulatedDevice:
    device = SimulatedDevice(ProfileLibrary().get("generic_4gas"), unit_id=unit)
    for name, value in {"o2": 20.9, "co": 2, "h2s": 0.0, "lel": 0.0, "temperature": -20.5,
                        "humidity": 55.5, "run_hours": 70000}.items():
        device.pin(name, value)
    return device


@pytest.fixture
def site(tmp_path: Path, pty_pair: tuple[Path, Path]) -> Iterator[Site]:
    """Units 1 (gas detector) and 3 (relay) on a TCP bus; gas5 is configured but absent."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shutil.copy(builtin_profiles_dir() / "generic_4gas.toml", profiles)
    (profiles / "test_relay.toml").write_text(RELAY_PROFILE)
    relay = SimulatedDevice(ProfileLibrary(profiles).get("test_relay"), unit_id=3)
    devices = {1: gas_detector(1), 3: relay}
    config = tmp_path / "site.toml"
    buffer = tmp_path / "buffer.db"
    with ModbusTcpSimulator(list(devices.values()), port=free_port()) as server:
        dtu_port = free_port()
        config.write_text(SITE.format(tcp_port=server.port, tty=pty_pair[1], dtu_port=dtu_port,
                                      closed_port=free_port(), buffer=buffer))
        yield Site(config, buffer, pty_pair[1], dtu_port, devices, server)


# --- scan -------------------------------------------------------------------------------

def test_scan_tcp_finds_exactly_the_simulated_units_in_bounded_time(site: Site) -> None:
    """Unit 1 answers a value, unit 3 an exception (present too); the rest is silence,
    and the configured but absent gas5 is flagged."""
    started = time.monotonic()
    result = site.run("scan", "--bus", "field", "--units", "1-20", "--timeout-ms", "100",
                      "--json")
    elapsed = time.monotonic() - started
    assert 0 == result.returncode, result.stderr
    report = json.loads(result.stdout)
    assert [1, 3] == report["answered"]
    assert 20 == report["probed"]
    units = {u["unit_id"]: u for u in report["units"]}
    assert {"unit_id": 1, "state": "present", "value": 209, "exception": None,
            "exception_name": None, "device": "gas1", "profile": "generic_4gas"} == units[1]
    assert ("present", None, 2, "illegal data address", "relay3") == (
        units[3]["state"], units[3]["value"], units[3]["exception"],
        units[3]["exception_name"], units[3]["device"])
    assert ("silent", "gas5") == (units[5]["state"], units[5]["device"])
    assert [1, 3, 5] == sorted(units)
    # 18 silent units at 100 ms each, plus process start-up.
    assert report["seconds"] < 18 * 0.1 + 1.5
    assert elapsed < report["seconds"] + 5


def test_scan_prints_a_table_and_how_long_it_took(site: Site) -> None:
    result = site.run("scan", "--bus", "field", "--units", "1-6")
    assert 0 == result.returncode, result.stderr
    out = result.stdout
    assert "209 (0x00D1)" in out
    assert "exception 2 (illegal data address)" in out
    assert "gas1 (generic_4gas)" in out
    assert "relay3 (test_relay)" in out
    assert "2 of 6 unit id(s) answered: 1, 3; scanned in " in out
    assert "1 configured device(s) did not answer: gas5 (unit 5)" in out


def test_scan_rtu_over_a_pty_finds_units_1_and_3_not_2(tmp_path: Path, site: Site,
                                                        pty_pair: tuple[Path, Path]) -> None:
    """A real serial line: unit 2 is silent, and a unit that answers with a broken CRC
    is reported as garbled (someone is there, the line is wrong)."""
    garbled = gas_detector(4)
    garbled.fault("corrupt")
    units = [gas_detector(1), site.devices[3], garbled]
    with ModbusRtuSimulator(units, str(pty_pair[0]), baudrate=19200):
        started = time.monotonic()
        result = site.run("scan", "--bus", "rs485", "--units", "1-5", "--json")
        elapsed = time.monotonic() - started
    assert 0 == result.returncode, result.stderr
    report = json.loads(result.stdout)
    assert [1, 3, 4] == report["answered"]
    states = {u["unit_id"]: (u["state"], u["value"], u["exception"]) for u in report["units"]}
    assert {1: ("present", 209, None), 3: ("present", None, 2), 4: ("garbled", None, None)
            } == states
    assert report["seconds"] < 3 * 0.2 + 1.5  # units 2, 4 and 5 wait out 200 ms each
    assert elapsed < report["seconds"] + 5


def test_scan_rtu_over_tcp_through_a_device_server(site: Site) -> None:
    """RTU frames tunnelled over TCP, as a serial device server forwards them."""
    with ModbusTcpSimulator([gas_detector(1), site.devices[3]], port=site.dtu_port,
                            framing="rtu"):
        result = site.run("scan", "--bus", "dtu", "--units", "1-4", "--json")
    assert 0 == result.returncode, result.stderr
    assert [1, 3] == json.loads(result.stdout)["answered"]


def test_scan_rtu_over_tcp_through_a_one_connection_socat_dtu(
        site: Site, pty_pair: tuple[Path, Path]) -> None:
    """socat as a DTU that takes one TCP connection (FIELD_NOTES.md §3): a scan must keep
    it, however many units stay silent."""
    device_end, line_end = pty_pair
    dtu = subprocess.Popen(["socat", "-d", "-d",
                            f"TCP-LISTEN:{site.dtu_port},bind=127.0.0.1,reuseaddr",
                            f"{line_end},raw,echo=0"], stderr=subprocess.PIPE, text=True)
    try:
        assert any("listening on" in line for line in dtu.stderr)  # type: ignore[union-attr]
        with ModbusRtuSimulator([gas_detector(1), site.devices[3]], str(device_end),
                                baudrate=19200):
            result = site.run("scan", "--bus", "dtu", "--units", "1-4", "--json")
    finally:
        dtu.terminate()
        dtu.wait(5)
    assert 0 == result.returncode, result.stderr
    assert [1, 3] == json.loads(result.stdout)["answered"]


def test_scan_refuses_a_serial_bus(site: Site) -> None:
    line = one_line_error(site.run("scan", "--bus", "meter"))
    assert 'bus "meter" is a serial bus (/dev/ttyUSB9)' in line
    assert "Modbus buses in this config: field, rs485, dtu, closed" in line


def test_scan_refuses_broadcast_on_rtu(site: Site) -> None:
    line = one_line_error(site.run("scan", "--bus", "rs485", "--units", "0-3"))
    assert "unit 0 is the broadcast address" in line


# --- read -------------------------------------------------------------------------------

def test_read_device_prints_values_units_and_quality(site: Site) -> None:
    result = site.run("read", "--device", "gas1")
    assert 0 == result.returncode, result.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
            for line in result.stdout.splitlines() if line.startswith("│")}
    assert ["20.9", "%VOL", "good"] == rows["o2"]
    assert ["2", "ppm", "good"] == rows["co"]
    assert ["-20.5", "°C", "good"] == rows["temperature"]
    assert ["55.5", "%RH", "good"] == rows["humidity"]
    assert ["70000", "h", "good"] == rows["run_hours"]
    assert 'gas1: unit 1 on bus "field"' in result.stdout


def test_read_json_by_bus_unit_and_profile(site: Site) -> None:
    result = site.run("read", "--bus", "field", "--unit", "1", "--profile", "generic_4gas",
                      "--json")
    assert 0 == result.returncode, result.stderr
    report = json.loads(result.stdout)
    assert ("gas1", 1, "generic_4gas") == (report["device"], report["unit_id"],
                                           report["profile"])
    assert {"value": 20.9, "unit": "%VOL", "quality": "good"} == report["values"]["o2"]
    assert {"value": -20.5, "unit": "°C", "quality": "good"} == report["values"]["temperature"]
    assert 7 == len(report["values"])


def test_read_a_silent_device_says_what_to_check(site: Site) -> None:
    line = one_line_error(site.run("read", "--device", "gas5"))
    assert 'unit 5 on bus "field" (modbus-tcp 127.0.0.1:' in line
    assert "did not answer a read of holding 0-7 (profile generic_4gas) within 300 ms" in line
    assert f"edge-agent devices scan --config {site.config} --bus field" in line


@pytest.mark.parametrize(("args", "expected"), [
    (["--device", "gas2"], 'no device "gas2" in '),
    (["--bus", "feild", "--unit", "1", "--profile", "generic_4gas"],
     'no bus "feild" in '),
    (["--bus", "field", "--unit", "1", "--profile", "generic_4ga"],
     'no profile "generic_4ga" in '),
    (["--bus", "field", "--unit", "9"], "no device is configured at unit 9 on bus field; "
                                        "give --profile (one of generic_4gas, test_relay)"),
    (["--bus", "meter", "--unit", "1", "--profile", "generic_4gas"], "is a serial bus"),
])
def test_read_unknown_names_give_one_line_with_a_hint(site: Site, args: list[str],
                                                      expected: str) -> None:
    line = one_line_error(site.run("read", *args))
    assert expected in line
    if args[1] in ("gas2", "feild", "generic_4ga"):
        assert "(did you mean " in line


def test_read_with_a_missing_config_lists_the_problem(tmp_path: Path) -> None:
    result = edge_agent("devices", "read", "--config", str(tmp_path / "nope.toml"),
                        "--device", "gas1")
    assert 1 == result.returncode
    assert [f"{tmp_path / 'nope.toml'}: invalid config, 1 problem:", "  - file not found"
            ] == result.stderr.splitlines()


# --- read-registers ---------------------------------------------------------------------

def test_read_registers_json_gives_the_exact_words(site: Site) -> None:
    result = site.run("read-registers", "--bus", "field", "--unit", "1", "--address", "0",
                      "--count", "8", "--json")
    assert 0 == result.returncode, result.stderr
    # o2 209, co 2, h2s 0, lel 0, -20.5 °C as 0xFF33, 55.5 %RH, 70000 h CDAB.
    assert {"bus": "field", "unit_id": 1, "function": "holding", "address": 0, "count": 8,
            "values": [209, 2, 0, 0, 0xFF33, 555, 70000 & 0xFFFF, 70000 >> 16]
            } == json.loads(result.stdout)


def test_read_registers_table_shows_decimal_hex_and_names(site: Site) -> None:
    result = site.run("read-registers", "--bus", "field", "--unit", "1", "--address", "0x4",
                      "--count", "3")
    assert 0 == result.returncode, result.stderr
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in result.stdout.splitlines()
            if line.startswith("│")]
    assert [["4", "0x0004", "65331", "0xFF33", "-205", "temperature"],
            ["5", "0x0005", "555", "0x022B", "555", "humidity"],
            ["6", "0x0006", "4464", "0x1170", "4464", "run_hours (1/2)"]] == rows


def test_read_registers_of_a_missing_address_gives_the_exception(site: Site) -> None:
    line = one_line_error(site.run("read-registers", "--bus", "field", "--unit", "1",
                                   "--address", "40001"))
    assert "refused a read of holding 40001: exception 2 (illegal data address)" in line
    assert "try --address 0" in line


def test_read_registers_on_rtu(site: Site, pty_pair: tuple[Path, Path]) -> None:
    with ModbusRtuSimulator([gas_detector(1)], str(pty_pair[0]), baudrate=19200):
        result = site.run("read-registers", "--bus", "rs485", "--unit", "1", "--address", "0",
                          "--count", "2", "--json")
    assert 0 == result.returncode, result.stderr
    assert [209, 2] == json.loads(result.stdout)["values"]


# --- write-register ---------------------------------------------------------------------

def test_write_to_a_device_without_outputs_gives_the_modbus_exception(site: Site) -> None:
    """generic_4gas has no outputs: the device refuses with exception 1."""
    line = one_line_error(site.run("write-register", "--bus", "field", "--unit", "1",
                                   "--address", "0", "--value", "1", "--yes"))
    assert "refused the write of 1 to holding register 0 (0x0000): exception 1 " \
           "(illegal function)" in line
    assert 209 == site.devices[1].registers()[("holding", 0)]


def test_write_an_output_and_read_it_back(site: Site) -> None:
    result = site.run("write-register", "--bus", "field", "--unit", "3", "--address", "0x10",
                      "--value", "1", "--yes")
    assert 0 == result.returncode, result.stderr
    assert "wrote 1 to holding register 16 (0x0010) of unit 3" in result.stdout
    assert "read back: 1 (0x0001)" in result.stdout
    assert {"relay": 1} == site.devices[3].outputs


def test_write_a_coil_and_read_it_back(site: Site) -> None:
    result = site.run("write-register", "--bus", "field", "--unit", "3", "--function", "coil",
                      "--address", "0x20", "--value", "1", "--yes")
    assert 0 == result.returncode, result.stderr
    assert "wrote 1 to coil 32 (0x0020) of unit 3" in result.stdout
    assert "read back: 1 (0x0001)" in result.stdout
    assert {"beacon": 1} == site.devices[3].outputs
    result = site.run("read-registers", "--bus", "field", "--unit", "3", "--function", "coil",
                      "--address", "32", "--json")
    assert [1] == json.loads(result.stdout)["values"]


def test_write_refuses_a_coil_value_other_than_0_or_1(site: Site) -> None:
    line = one_line_error(site.run("write-register", "--bus", "field", "--unit", "3",
                                   "--function", "coil", "--address", "32", "--value", "2",
                                   "--yes"))
    assert "--value 2: a coil is 0 (off) or 1 (on)" in line
    assert 0 == site.server.requests


def test_write_asks_first_and_a_no_writes_nothing(site: Site) -> None:
    result = site.run("write-register", "--bus", "field", "--unit", "3", "--address", "16",
                      "--value", "1", stdin="n\n")
    assert "This is output relay of relay3: 1 switches it on (on = 1, off = 0)." in result.stderr
    assert "error: nothing written; answer y, or pass --yes" in result.stderr
    assert 1 == result.returncode
    assert {} == site.devices[3].outputs
    assert 0 == site.server.requests  # the bus was not even opened

    result = site.run("write-register", "--bus", "field", "--unit", "3", "--address", "16",
                      "--value", "1", stdin="y\n")
    assert 0 == result.returncode, result.stderr
    assert {"relay": 1} == site.devices[3].outputs


# --- refusals before the bus is opened --------------------------------------------------

@pytest.mark.parametrize("args", [
    ["scan", "--bus", "field"],
    ["read", "--device", "gas1"],
    ["read-registers", "--bus", "field", "--unit", "1", "--address", "0"],
    ["write-register", "--bus", "field", "--unit", "3", "--address", "16", "--value", "1",
     "--yes"],
])
def test_every_command_refuses_while_an_agent_holds_the_buses(site: Site,
                                                              args: list[str]) -> None:
    lock = runlock.hold(site.buffer)
    try:
        line = one_line_error(site.run(*args))
    finally:
        lock.close()
    assert f"an agent (pid {os.getpid()}) runs with {site.config}" in line
    assert "stop it first with `sudo systemctl stop edge-agent`" in line
    assert 0 == site.server.requests
    assert {} == site.devices[3].outputs


def test_connection_refused_says_so(site: Site) -> None:
    line = one_line_error(site.run("read-registers", "--bus", "closed", "--unit", "1",
                                   "--address", "0"))
    assert "connection refused" in line
    assert "check the bus's host and port" in line


def test_missing_serial_port_says_so(tmp_path: Path, site: Site) -> None:
    config = tmp_path / "missing.toml"
    config.write_text(site.config.read_text().replace(str(site.tty), "/dev/ttyUSB-missing"))
    result = edge_agent("devices", "scan", "--config", str(config), "--bus", "rs485")
    line = one_line_error(result)
    assert "serial port /dev/ttyUSB-missing of bus \"rs485\"" in line
    assert "does not exist; plug in the RS-485 adapter" in line


def test_busy_serial_port_says_who_to_look_for(site: Site) -> None:
    with serial.Serial(str(site.tty), exclusive=True):
        line = one_line_error(site.run("read", "--device", "bottom"))
    assert f"serial port {site.tty} is busy" in line
    assert f"fuser -v {site.tty}" in line
