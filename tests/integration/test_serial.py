"""Frame and text-line devices on a serial line (socat pseudo-terminal pairs): the
checksums against the reference frames of SAFETY_REFERENCE §8.1-8.2, the transport
against the simulators in query and stream mode with corrupt frames, noise, a
silent device and an unplugged adapter, and the agent polling a Winsen module."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edge_agent.acquisition import TRANSPORTS, NoAnswer, SerialTransport
from edge_agent.acquisition.serial import (
    LineCodec,
    checksum_ok,
    crc16_modbus,
    sum8_checksum,
    winsen_checksum,
)
from edge_agent.config import Device, SerialBus, load_config
from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber
from edge_agent.profiles import Profile, ProfileLibrary
from edge_agent.records import Quality
from simulators import FrameSimulator, LineSimulator, SimulatedDevice
from simulators.serial import build_frame, line_template
from tests.support import AgentProcess, wait_until

PROFILES = ProfileLibrary()
ZE03 = PROFILES.get("winsen_ze03_co")
ZE07 = PROFILES.get("winsen_ze07_co_active")
COZIR = PROFILES.get("gss_cozir_ah")
TIMEOUT_MS = 200

# SAFETY_REFERENCE §8.2: commands, acks and answers of the Winsen family.
WINSEN_FRAMES = {
    "read": "FF 01 86 00 00 00 00 00 79",
    "ze03_to_qa": "FF 01 78 04 00 00 00 00 83",
    "ze03_to_active": "FF 01 78 03 00 00 00 00 84",
    "ze03_ack": "FF 78 01 00 00 00 00 00 87",
    "ze07_to_qa": "FF 01 78 41 00 00 00 00 46",
    "ze07_to_active": "FF 01 78 40 00 00 00 00 47",
    "ze07_upload_3_7_ppm": "FF 04 03 01 00 25 13 88 38",
    "ze03_answer_zero": "FF 86 00 00 00 00 00 00 7A",
    "ze08_answer_42_ug": "FF 86 00 2A 00 00 00 20 30",
    "mhz19b_answer_544_ppm": "FF 86 02 20 00 00 00 00 58",
}
# SolarNetwork's CozIrHelperTests: the answer to Q and what it means.
COZIR_LINE = b" H 00419 T 01216 Z 01592 z 01647\r\n"


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())


def serial_bus(port: Path, timeout_ms: int = TIMEOUT_MS) -> SerialBus:
    return SerialBus(name="uart", type="serial", port=str(port), timeout_ms=timeout_ms)


def device_for(profile: Profile) -> Device:
    return Device(name="sensor", bus="uart", profile=profile.name)


def pinned(profile: Profile, **values: float) -> SimulatedDevice:
    device = SimulatedDevice(profile)
    for name, value in values.items():
        device.pin(name, value)
    return device


@contextmanager
def socat_pair(a: Path, b: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A pseudo-terminal pair at fixed link paths, to unplug and plug back."""
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: a.exists() and b.exists(), 5, "socat's pseudo-terminals")
        yield proc
    finally:
        proc.terminate()
        proc.wait(5)


# --- checksums ----------------------------------------------------------------------

@pytest.mark.parametrize("frame", WINSEN_FRAMES.values(), ids=WINSEN_FRAMES.keys())
def test_winsen_checksum_matches_the_reference_frames(frame: str) -> None:
    wire = bytes.fromhex(frame)
    assert wire[-1] == winsen_checksum(wire)
    assert checksum_ok("winsen", wire)


def test_winsen_checksum_refuses_the_misprinted_example() -> None:
    """§8.2: one library's comment prints the ZE07 upload frame ending in 25."""
    assert not checksum_ok("winsen", bytes.fromhex("FF 04 03 01 00 25 13 88 25"))


def test_crc16_and_sum8_checksums() -> None:
    """CRC-16/MODBUS on the §8.1 reference frames; sum8 on a hand-made frame."""
    for frame in ("01 03 00 00 00 02 C4 0B", "FE 04 02 01 90 AC D8", "01 04 04 01 31 02 22 2A CE"):
        wire = bytes.fromhex(frame)
        assert checksum_ok("crc16-modbus", wire)
        assert not checksum_ok("crc16-modbus", wire[:-1] + bytes([wire[-1] ^ 1]))
    assert bytes.fromhex("C40B") == crc16_modbus(bytes.fromhex("010300000002")).to_bytes(
        2, "little")
    assert 0x0F == sum8_checksum(bytes([0x05, 0x0A, 0x0F]))
    assert checksum_ok("sum8", bytes([0x05, 0x0A, 0x0F]))


def test_simulator_builds_the_reference_upload_frame() -> None:
    """The ZE07-CO's own unit, decimals and range give exactly the §8.2 example frame."""
    device = pinned(ZE07, unit_code=3, decimals=1, co=3.7, full_range=500)
    assert bytes.fromhex(WINSEN_FRAMES["ze07_upload_3_7_ppm"]) == build_frame(ZE07, device.raw())


def test_cozir_reference_line_decodes() -> None:
    """SolarNetwork's COZIR answer: 41.9 %RH, 21.6 °C, 1592 ppm (multiplier 1)."""
    received = bytearray(b"noise\r\n" + COZIR_LINE)
    readings, bad = LineCodec(COZIR).take(received)
    assert (1, b"") == (bad, bytes(received))  # the noise line is a bad line
    assert [{"co2": 1592, "humidity": 419, "temperature": 1216, "co2_raw": 1647}] == readings
    values = COZIR.interpret(readings[0])
    assert (1592, Quality.GOOD) == values["co2"]
    assert (41.9, Quality.GOOD) == values["humidity"]
    assert pytest.approx(21.6) == values["temperature"][0]
    assert "H {humidity:05d} T {temperature:05d} Z {co2:05d} z {co2_raw:05d}" == \
        line_template(COZIR)


# --- query mode ---------------------------------------------------------------------

def test_query_mode_switches_a_shipped_ze03_and_reads_it(pty_pair: tuple[Path, Path]) -> None:
    """The module starts in active upload; the setup switches it to Q&A, its ack is
    skipped, and the answer carries exactly the pinned concentration."""
    device_end, agent_end = pty_pair
    module = pinned(ZE03, co=37)
    transport = SerialTransport(serial_bus(agent_end))

    async def body() -> dict[str, float]:
        try:
            return await transport.read(device_for(ZE03), ZE03)
        finally:
            await transport.close()

    with FrameSimulator(module, str(device_end)) as sim:
        assert "stream" == sim.mode
        raw = run(body)
        assert "query" == sim.mode
    assert {"co": 37.0} == raw
    assert {"co": (37.0, Quality.GOOD)} == ZE03.interpret(raw)
    assert (1, 0, 0, 1) == (transport.stats.transactions, transport.stats.timeouts,
                            transport.stats.crc_errors, len(transport.stats.round_trips))


def test_ze03_left_in_active_upload_never_answers(pty_pair: tuple[Path, Path]) -> None:
    """Without the mode switch, requests go unanswered: NoAnswer, counted as a timeout."""
    device_end, agent_end = pty_pair
    no_setup = ZE03.model_copy(update={"frame": ZE03.frame.model_copy(update={"setup": []})})
    transport = SerialTransport(serial_bus(agent_end))

    async def body() -> None:
        try:
            with pytest.raises(NoAnswer, match=f"no valid frame .* within {TIMEOUT_MS} ms"):
                await transport.read(device_for(ZE03), no_setup)
        finally:
            await transport.close()

    with FrameSimulator(pinned(ZE03, co=5), str(device_end)) as sim:
        run(body)
        assert 1 == sim.requests
    assert (1, 1) == (transport.stats.transactions, transport.stats.timeouts)


def test_corrupt_frames_are_counted_and_the_good_one_read(pty_pair: tuple[Path, Path]) -> None:
    """A corrupt answer alone is NoAnswer with a crc error; a corrupt frame and noise
    before a good one in the same answer cost a crc error and nothing else."""
    device_end, agent_end = pty_pair
    module = pinned(ZE03, co=120)
    transport = SerialTransport(serial_bus(agent_end))
    good = build_frame(ZE03, module.raw())
    bad = good[:-1] + bytes([good[-1] ^ 0x5A])

    async def body(sim: FrameSimulator) -> None:
        try:
            module.fault("corrupt")
            with pytest.raises(NoAnswer, match="1 with a bad checksum"):
                await transport.read(device_for(ZE03), ZE03)
            assert 1 == transport.stats.crc_errors
            module.heal()
            assert {"co": 120.0} == await transport.read(device_for(ZE03), ZE03)
            sim.prefix_next(bad + b"\x00\x42")
            assert {"co": 120.0} == await transport.read(device_for(ZE03), ZE03)
        finally:
            await transport.close()

    with FrameSimulator(module, str(device_end)) as sim:
        run(lambda: body(sim))
    assert (3, 1, 2) == (transport.stats.transactions, transport.stats.timeouts,
                         transport.stats.crc_errors)


def test_noise_before_a_frame_is_skipped(pty_pair: tuple[Path, Path]) -> None:
    """Bytes before the header, including lone 0xFF start bytes and another module's
    ack, are skipped without counting as errors (PEER_LESSONS 6)."""
    device_end, agent_end = pty_pair
    module = pinned(ZE03, co=9)
    transport = SerialTransport(serial_bus(agent_end))
    noise = b"\x00\x13\xff\x01\xfe" + bytes.fromhex(WINSEN_FRAMES["ze03_ack"]) + b"\xff\xff"

    async def body(sim: FrameSimulator) -> None:
        try:
            for _ in range(3):
                sim.prefix_next(noise)
                assert {"co": 9.0} == await transport.read(device_for(ZE03), ZE03)
        finally:
            await transport.close()

    with FrameSimulator(module, str(device_end)) as sim:
        run(lambda: body(sim))
    assert (3, 0, 0) == (transport.stats.transactions, transport.stats.timeouts,
                         transport.stats.crc_errors)


def test_silent_device_is_no_answer_then_recovers(pty_pair: tuple[Path, Path]) -> None:
    device_end, agent_end = pty_pair
    module = pinned(ZE03, co=14)
    transport = SerialTransport(serial_bus(agent_end))

    async def body() -> None:
        try:
            assert {"co": 14.0} == await transport.read(device_for(ZE03), ZE03)
            module.fault("silent")
            for _ in range(2):
                with pytest.raises(NoAnswer, match="no valid frame from sensor"):
                    await transport.read(device_for(ZE03), ZE03)
            module.heal()
            assert {"co": 14.0} == await transport.read(device_for(ZE03), ZE03)
        finally:
            await transport.close()

    with FrameSimulator(module, str(device_end)):
        run(body)
    assert (4, 2, 0) == (transport.stats.transactions, transport.stats.timeouts,
                         transport.stats.crc_errors)


def test_unplugged_port_is_no_answer_and_reopens(tmp_path: Path) -> None:
    """The pseudo-terminals vanish (USB adapter unplugged) and come back at the same
    path: NoAnswer meanwhile, then values again from the same transport."""
    device_end, agent_end = tmp_path / "ttyDevice", tmp_path / "ttyAgent"
    module = pinned(ZE03, co=21)
    transport = SerialTransport(serial_bus(agent_end))
    read = lambda: transport.read(device_for(ZE03), ZE03)  # noqa: E731

    async def body() -> None:
        try:
            with socat_pair(device_end, agent_end), FrameSimulator(module, str(device_end)):
                assert {"co": 21.0} == await read()
            with pytest.raises(NoAnswer, match=r"lost|cannot open"):
                await read()
            with pytest.raises(NoAnswer, match="cannot open"):
                await read()  # nothing at the path
            with socat_pair(device_end, agent_end), FrameSimulator(module, str(device_end)):
                assert {"co": 21.0} == await read()  # the module restarted: setup sent again
        finally:
            await transport.close()

    run(body)
    assert (4, 2) == (transport.stats.transactions, transport.stats.timeouts)


# --- stream mode --------------------------------------------------------------------

def test_stream_mode_reads_the_newest_upload(pty_pair: tuple[Path, Path]) -> None:
    """A ZE07-CO uploading on its own: each read returns the newest frame, decoded with
    the decimal point the module reports."""
    device_end, agent_end = pty_pair
    module = pinned(ZE07, unit_code=3, decimals=1, co=3.7, full_range=500)
    transport = SerialTransport(serial_bus(agent_end, timeout_ms=1000))

    async def body() -> list[dict[str, float]]:
        try:
            first = await transport.read(device_for(ZE07), ZE07)
            module.pin("co", 42.5)
            later = first
            while later["co"] != 425:  # frames sent before the pin may still be queued
                later = await transport.read(device_for(ZE07), ZE07)
            return [first, later]
        finally:
            await transport.close()

    with FrameSimulator(module, str(device_end), interval_s=0.05) as sim:
        first, later = run(body)
        assert "stream" == sim.mode
    assert {"unit_code": 3, "decimals": 1, "co": 37, "full_range": 5000} == first
    assert {"co": (3.7, Quality.GOOD)} == ZE07.interpret(first)
    assert {"co": (42.5, Quality.GOOD)} == ZE07.interpret(later)
    assert 0 == transport.stats.crc_errors


def test_stream_mode_without_a_new_frame_is_no_answer(pty_pair: tuple[Path, Path]) -> None:
    """A frame is returned once; a read with no frame since is NoAnswer, so the poller
    reports stale, then comm_lost."""
    device_end, agent_end = pty_pair
    module = pinned(ZE07, unit_code=3, decimals=1, co=1.5, full_range=500)
    transport = SerialTransport(serial_bus(agent_end))

    async def body(sim: FrameSimulator) -> None:
        try:
            with pytest.raises(NoAnswer, match="none since the previous poll"):
                await transport.read(device_for(ZE07), ZE07)  # opens the port; no upload yet
            assert sim.upload()
            assert 15 == (await transport.read(device_for(ZE07), ZE07))["co"]
            with pytest.raises(NoAnswer, match="none since the previous poll"):
                await transport.read(device_for(ZE07), ZE07)
            older = build_frame(ZE07, module.raw())
            corrupt = older[:-1] + bytes([older[-1] ^ 0xFF])
            sim.prefix_next(older + corrupt + older)  # three frames queued behind the next
            module.pin("co", 1.6)
            sim.upload()
            assert 16 == (await transport.read(device_for(ZE07), ZE07))["co"]  # the newest
        finally:
            await transport.close()

    with FrameSimulator(module, str(device_end), interval_s=None) as sim:
        run(lambda: body(sim))
    assert (2, 2, 1) == (transport.stats.transactions, transport.stats.timeouts,
                         transport.stats.crc_errors)


# --- text lines ---------------------------------------------------------------------

def test_line_profile_is_polled_and_decoded(pty_pair: tuple[Path, Path]) -> None:
    """A COZIR answers Q with one line; a line cut short is a bad line, the next one
    is read."""
    device_end, agent_end = pty_pair
    sensor = pinned(COZIR, co2=1592, co2_raw=1647, humidity=41.9, temperature=21.6)
    transport = SerialTransport(serial_bus(agent_end))
    expected = {"co2": 1592, "co2_raw": 1647, "humidity": 419, "temperature": 1216}

    async def body() -> None:
        try:
            assert expected == await transport.read(device_for(COZIR), COZIR)
            sensor.fault("corrupt")
            with pytest.raises(NoAnswer, match=r"no valid line .*\(1 not matching the pattern\)"):
                await transport.read(device_for(COZIR), COZIR)
            sensor.heal()
            assert expected == await transport.read(device_for(COZIR), COZIR)
        finally:
            await transport.close()

    with LineSimulator(sensor, str(device_end), line_format=COZIR_LINE.decode()[:-2].replace(
            "00419", "{humidity:05d}").replace("01216", "{temperature:05d}").replace(
            "01592", "{co2:05d}").replace("01647", "{co2_raw:05d}")) as sim:
        assert COZIR_LINE == sim.message()  # byte for byte the reference answer
        run(body)
        assert 3 == sim.requests
    assert (3, 1, 1) == (transport.stats.transactions, transport.stats.timeouts,
                         transport.stats.crc_errors)


# --- the agent ----------------------------------------------------------------------

SERIAL_SITE = """\
gateway_id = "gw-serial"
site_id = "site-serial"

[[buses]]
name = "uart1"
type = "serial"
port = "{port}"
baudrate = 9600
timeout_ms = 300

[[devices]]
name = "co1"
bus = "uart1"
profile = "winsen_ze03_co"
poll_interval_s = 0.2

[devices.channels.co]
limits = [{{ level = 1, above = 24, deadband = 1 }}]

[mqtt]
host = "127.0.0.1"
port = {broker_port}
tls = "off"

[buffer]
path = "{buffer}"
"""


def test_serial_bus_is_registered() -> None:
    assert SerialTransport is TRANSPORTS[SerialBus]


def test_agent_publishes_a_winsen_module_on_a_serial_bus(
        pty_pair: tuple[Path, Path], broker: Mosquitto, platform: PlatformSubscriber,
        tmp_path: Path) -> None:
    """The agent switches a shipped ZE03-CO to Q&A, polls it and publishes its
    concentration with quality good; a rise past the limit raises the alarm."""
    device_end, agent_end = pty_pair
    config = tmp_path / "site.toml"
    config.write_text(SERIAL_SITE.format(port=agent_end, broker_port=broker.port,
                                         buffer=tmp_path / "buffer.db"))
    load_config(config).hash  # noqa: B018 -- the agent computes it at start
    module = pinned(ZE03, co=7)
    view = platform.gateways["gw-serial"]
    with FrameSimulator(module, str(device_end)) as sim:
        agent = AgentProcess(config).start()
        try:
            assert platform.wait_for(lambda: "co1.co" in view.latest, 20), agent.log
            assert (7, "good") == (view.latest["co1.co"]["v"], view.latest["co1.co"]["q"])
            assert "query" == sim.mode
            module.pin("co", 60)
            assert platform.wait_for(lambda: view.latest["co1.co"]["v"] == 60
                                     and any("co1.co" in key for key in view.active), 20), \
                agent.log
        finally:
            assert 0 == agent.stop()
