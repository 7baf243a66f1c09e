"""The bus poller on real links: an RS-485 bus over socat pseudo-terminals with pymodbus
RTU servers, Modbus TCP, RTU framed over TCP, and a DTU emulated by socat. A dead
device must not hold up the others; faults are counted; devices come back."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.acquisition import BusPoller, PollResult, bus_poller
from edge_agent.config import Device, ModbusRtuBus, ModbusRtuOverTcpBus, ModbusTcpBus
from edge_agent.demo.broker import free_port
from edge_agent.profiles import Profile, ProfileLibrary
from edge_agent.records import Quality
from simulators import ModbusRtuSimulator, ModbusTcpSimulator, SimulatedDevice

PROFILE = ProfileLibrary().get("generic_4gas")
INTERVAL = 0.5


def simulated(unit: int, seed: int = 0) -> SimulatedDevice:
    device = SimulatedDevice(PROFILE, unit, seed=seed)
    device.pin("o2", 20.9)
    device.pin("co", unit)  # tells the units apart
    return device


def devices(*units: int, timeouts: dict[int, int] | None = None
            ) -> list[tuple[Device, Profile]]:
    return [(Device(name=f"u{u}", bus="rs485", unit_id=u, profile="generic_4gas",
                    poll_interval_s=INTERVAL, timeout_ms=(timeouts or {}).get(u)), PROFILE)
            for u in units]


def rtu_bus(port: Path, **settings: object) -> ModbusRtuBus:
    return ModbusRtuBus(type="modbus-rtu", name="rs485", port=str(port), baudrate=19200,
                        **{"timeout_ms": 200, "comm_loss_after": 3, "backoff_max_s": 4,
                           **settings})


def run_for(poller_of: Callable[[Callable[[PollResult], None]], BusPoller], seconds: float,
            until: Callable[[list[tuple[float, PollResult]]], bool] | None = None
            ) -> tuple[list[tuple[float, PollResult]], BusPoller]:
    """Run a poller for ``seconds`` (or until ``until`` holds); results with their times."""
    results: list[tuple[float, PollResult]] = []

    async def main() -> BusPoller:  # pymodbus clients need a running loop to be made
        poller = poller_of(lambda r: results.append((time.monotonic(), r)))
        task = asyncio.create_task(poller.run())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until(results)):
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return poller

    poller = asyncio.run(main())
    return results, poller


def of(results: list[tuple[float, PollResult]], device: str) -> list[tuple[float, PollResult]]:
    return [(t, r) for t, r in results if r.device == device]


def test_dead_device_does_not_delay_the_others(pty_pair: tuple[Path, Path]) -> None:
    """PEER_LESSONS 5 and 7: unit 2 never answers; units 1 and 3 keep their interval,
    unit 2 is comm-lost after 3 missed polls and then retried less and less often."""
    device_end, agent_end = pty_pair
    with ModbusRtuSimulator([simulated(1), simulated(3)], str(device_end), baudrate=19200):
        results, poller = run_for(lambda emit: bus_poller(rtu_bus(agent_end), devices(1, 2, 3),
                                                          emit), 8.0)
    for name in ("u1", "u3"):
        times = [t for t, r in of(results, name)]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 12
        # One dead unit costs the bus at most its 200 ms timeout per attempt.
        assert max(gaps) < INTERVAL + 0.2 + 0.3, gaps
        assert sum(gaps) / len(gaps) == pytest.approx(INTERVAL, abs=0.12)
        assert all(r.fault is None and r.samples[1].value == float(name[1])
                   for _, r in of(results, name))
    dead = of(results, "u2")
    assert [None, None, "comm_lost"] == [r.fault for _, r in dead[:3]]
    assert {Quality.STALE} == {s.quality for s in dead[0][1].samples}
    assert {Quality.COMM_LOST} == {s.quality for s in dead[2][1].samples}
    assert dead[2][0] - dead[0][0] < 3 * (INTERVAL + 0.2) + 0.3  # comm-lost within 3 polls
    attempts = [t for t, _ in dead[2:]]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps == sorted(gaps) or max(gaps) >= 3.5, gaps  # backing off, up to 4 s
    assert gaps[0] > 2 * INTERVAL - 0.1
    stats = poller.stats.report()
    assert stats["timeouts"] == len(dead)
    assert stats["rtt_mean_ms"] is not None
    assert stats["rtt_p99_ms"] >= stats["rtt_mean_ms"]


def test_per_device_timeout_bounds_what_a_dead_device_costs(
        pty_pair: tuple[Path, Path]) -> None:
    """A device's own timeout_ms (PEER_LESSONS 7: milliseconds, per device)."""
    device_end, agent_end = pty_pair
    with ModbusRtuSimulator([simulated(1)], str(device_end), baudrate=19200):
        started = time.monotonic()
        results, _poller = run_for(
            lambda emit: bus_poller(rtu_bus(agent_end, timeout_ms=2000, comm_loss_after=20),
                                    devices(2, 1, timeouts={2: 50}), emit),
            10.0, until=lambda rs: len(of(rs, "u2")) >= 5)
    assert time.monotonic() - started < 5  # 5 failed polls of 50 ms, not 2 s each
    assert all(r.fault is None for _, r in of(results, "u1"))


def test_device_comes_back_after_being_unplugged(pty_pair: tuple[Path, Path]) -> None:
    device_end, agent_end = pty_pair
    unit = simulated(1)
    unit.fault("silent", for_s=2.5)
    with ModbusRtuSimulator([unit], str(device_end), baudrate=19200):
        results, _ = run_for(lambda emit: bus_poller(rtu_bus(agent_end, backoff_max_s=1),
                                                     devices(1), emit), 12.0,
                             until=lambda rs: bool(rs) and rs[-1][1].fault is None
                             and any(r.fault == "comm_lost" for _, r in rs))
    faults = [r.fault for _, r in results]
    assert "comm_lost" in faults
    assert faults[-1] is None
    assert {Quality.GOOD} == {s.quality for s in results[-1][1].samples}


def test_noise_on_the_line_is_counted_and_survived(pty_pair: tuple[Path, Path]) -> None:
    """Intermittent timeouts and CRC-corrupted answers: counted per bus, polling goes on."""
    device_end, agent_end = pty_pair
    flaky, noisy = simulated(1, seed=7), simulated(3, seed=11)
    flaky.fault("timeouts", rate=0.3)
    noisy.fault("corrupt", rate=0.3)
    with ModbusRtuSimulator([flaky, noisy], str(device_end), baudrate=19200):
        results, poller = run_for(
            lambda emit: bus_poller(rtu_bus(agent_end, comm_loss_after=10), devices(1, 3),
                                    emit), 15.0,
            until=lambda rs: len(rs) >= 24)
    stats = poller.stats.report()
    assert stats["timeouts"] >= 2
    assert stats["crc_errors"] >= 2
    good = [r for _, r in results if r.samples[0].quality is Quality.GOOD]
    assert len(good) >= len(results) // 2
    assert all(r.samples[1].value in (1.0, 3.0) for r in good)  # no answer from the wrong unit


def test_rtu_over_tcp_reads_through_a_device_server() -> None:
    """RTU frames tunnelled over TCP, as a serial device server or DTU forwards them."""
    port = free_port()
    with ModbusTcpSimulator([simulated(4)], port=port, framing="rtu"):
        bus = ModbusRtuOverTcpBus(type="modbus-rtu-over-tcp", name="rs485", host="127.0.0.1",
                                  port=port, timeout_ms=500)
        results, _ = run_for(lambda emit: bus_poller(bus, devices(4), emit), 5.0,
                             until=lambda rs: len(rs) >= 2)
    assert {None} == {r.fault for _, r in results}
    assert (20.9, 4.0) == (results[-1][1].samples[0].value, results[-1][1].samples[1].value)


def test_rtu_over_tcp_through_a_socat_dtu(pty_pair: tuple[Path, Path]) -> None:
    """socat as the DTU: TCP on one side, the serial line with the RTU devices on the other
    (FIELD_NOTES.md §3)."""
    device_end, line_end = pty_pair
    port = free_port()
    # One connection, no probe: a probe's connection would open and close the line,
    # and the hang-up disturbs the pty pair.
    dtu = subprocess.Popen(["socat", "-d", "-d", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
                            f"{line_end},raw,echo=0"], stderr=subprocess.PIPE, text=True)
    try:
        assert any("listening on" in line for line in dtu.stderr)  # type: ignore[union-attr]
        with ModbusRtuSimulator([simulated(5), simulated(6)], str(device_end), baudrate=19200):
            bus = ModbusRtuOverTcpBus(type="modbus-rtu-over-tcp", name="rs485",
                                      host="127.0.0.1", port=port, timeout_ms=500)
            results, _ = run_for(lambda emit: bus_poller(bus, devices(5, 6), emit), 8.0,
                                 until=lambda rs: len(rs) >= 6)
    finally:
        dtu.terminate()
        dtu.wait(5)
    assert {None} == {r.fault for _, r in results}
    assert {5.0, 6.0} == {r.samples[1].value for _, r in results}


def test_dead_units_behind_a_gateway_do_not_cut_off_the_live_one() -> None:
    """pymodbus drops a TCP link after a few timeouts in a row, whatever the unit
    (FIELD_NOTES.md §2); five dead units polled back to back must not make the live
    unit behind the same gateway fail."""
    port = free_port()
    with ModbusTcpSimulator([simulated(1)], port=port, framing="rtu"):
        bus = ModbusRtuOverTcpBus(type="modbus-rtu-over-tcp", name="rs485", host="127.0.0.1",
                                  port=port, timeout_ms=100, comm_loss_after=20)
        results, _ = run_for(lambda emit: bus_poller(bus, devices(2, 3, 4, 5, 6, 1), emit), 10.0,
                             until=lambda rs: len(of(rs, "u1")) >= 6)
    live = of(results, "u1")
    assert len(live) >= 6
    assert {None} == {r.fault for _, r in live}
    assert {Quality.GOOD} == {s.quality for _, r in live for s in r.samples}


@pytest.mark.parametrize(("connection", "expected"), [("keep", 1), ("per-poll", 4)])
def test_tcp_connection_kept_or_closed_after_each_poll(connection: str, expected: int) -> None:
    """Devices that take one master at a time need the link given back after each poll."""
    port = free_port()
    with ModbusTcpSimulator([simulated(1)], port=port) as server:
        bus = ModbusTcpBus(type="modbus-tcp", name="rs485", host="127.0.0.1", port=port,
                           connection=connection)
        results, _ = run_for(lambda emit: bus_poller(bus, devices(1), emit), 10.0,
                             until=lambda rs: len(rs) >= 4)
        connections = server.connections
    assert 4 == len(results)
    assert {None} == {r.fault for _, r in results}
    assert expected == connections
