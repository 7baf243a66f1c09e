"""Every injected hazard and device fault of the simulators, read through a real Modbus
server by the agent's own transport, on a controlled clock (no waiting)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from edge_agent.acquisition import ModbusTransport, NoAnswer
from edge_agent.config import Device, ModbusTcpBus
from edge_agent.demo.broker import free_port
from edge_agent.records import Quality
from simulators import ModbusTcpSimulator, SimulatedDevice, load_scenario
from simulators.device import Step


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def served(scenario: str, clock: Clock, seed: int = 3
           ) -> Iterator[tuple[SimulatedDevice, Callable[[float], dict]]]:
    """A device of ``scenario`` on a TCP simulator, and a function reading it once."""
    loaded, profile = load_scenario(scenario)
    device = SimulatedDevice(profile, 1, loaded, seed=seed, clock=clock)
    port = free_port()
    bus = ModbusTcpBus(type="modbus-tcp", name="t", host="127.0.0.1", port=port, timeout_ms=300)
    config = Device(name="d", bus="t", unit_id=1, profile=profile.name)

    def read_at(t: float) -> dict[str, tuple[float | None, Quality]]:
        clock.now = 1000.0 + t

        async def once() -> dict[str, float]:
            transport = ModbusTransport(bus)
            try:
                return await transport.read(config, profile)
            finally:
                await transport.close()

        return profile.interpret(asyncio.run(once()))

    with ModbusTcpSimulator([device], port=port):
        yield device, read_at


def value(reading: dict, name: str) -> float:
    number, quality = reading[name]
    assert quality is Quality.GOOD, (name, quality)
    return number


def test_gas_leak_ramp() -> None:
    clock = Clock()
    with served("confined_space", clock) as (device, read_at):
        device.inject("h2s_release")  # 10 s ramp to 18 ppm, O2 dips to 19.2
        assert value(read_at(0), "h2s") < 1
        assert value(read_at(5), "h2s") == pytest.approx(9.2, abs=0.5)
        assert value(read_at(20), "h2s") == pytest.approx(18, abs=0.5)
        assert value(read_at(20), "o2") == pytest.approx(19.2, abs=0.15)


def test_o2_depletion() -> None:
    clock = Clock()
    with served("confined_space", clock) as (device, read_at):
        device.inject("o2_depletion")  # 40 s down to 17.5 %VOL
        assert value(read_at(20), "o2") == pytest.approx(19.2, abs=0.15)
        assert value(read_at(50), "o2") == pytest.approx(17.5, abs=0.15)


def test_hcn_release_on_the_type_a_transmitter() -> None:
    clock = Clock()
    with served("generic_type_a_hcn", clock) as (device, read_at):
        assert value(read_at(0), "hcn") < 0.5
        device.inject("cyanide_bath_acidified")  # 20 s ramp to 8 ppm
        assert value(read_at(30), "hcn") == pytest.approx(8.0, abs=0.3)


def test_thermal_runaway_precursor_off_gas_before_heat() -> None:
    """SAFETY_REFERENCE §6.1 order: off-gas (H2, then CO) before the temperature rises."""
    clock = Clock()
    with served("lithium_warehouse", clock) as (device, read_at):
        base = read_at(0)
        device.inject("thermal_runaway_precursor")
        early = read_at(30)  # H2 at its peak, CO rising, temperature untouched
        assert value(early, "lel") > value(base, "lel") + 5
        assert value(early, "temperature") == pytest.approx(value(base, "temperature"), abs=0.3)
        later = read_at(180)  # two minutes into the 300 s temperature ramp
        rate_per_min = (value(later, "temperature") - value(read_at(120), "temperature")) / 1
        assert rate_per_min == pytest.approx(3.0, abs=0.5)
        assert value(later, "co") == pytest.approx(60, abs=1.5)


def test_stuck_sensor_and_drift() -> None:
    """A stuck reading stops moving with its noise; a drifting one walks away slowly."""
    clock = Clock()
    with served("confined_space", clock) as (device, read_at):
        assert len({value(read_at(t), "co") for t in range(5)}) > 1  # alive: noise moves it
        device.scenario = device.scenario.model_copy(update={"timeline": [
            Step(at_s=0, action="stuck", point="co"),
            Step(at_s=0, action="drift", point="temperature", per_min=0.5)]})
        device.start()
        assert 1 == len({value(read_at(t), "co") for t in range(6, 12)})
        before, after = value(read_at(20), "temperature"), value(read_at(80), "temperature")
        assert after - before == pytest.approx(0.5, abs=0.2)


@pytest.mark.parametrize("fault", ["silent", "timeouts", "corrupt"])
def test_answering_faults_are_no_answer(fault: str) -> None:
    """Unplugged, intermittent and corrupted answers all reach the agent as no answer."""
    clock = Clock()
    with served("confined_space", clock) as (device, read_at):
        device.fault(fault, rate=1.0, for_s=10)
        with pytest.raises(NoAnswer):
            read_at(1)
        assert value(read_at(11), "o2") > 20  # the fault ended on time


def test_timeline_replays_the_same_run() -> None:
    """A scenario's timeline with a fixed seed gives the same readings every time."""
    runs = []
    for _ in range(2):
        clock = Clock()
        with served("generic_type_a_hcn", clock, seed=5) as (device, read_at):
            device.start()
            runs.append([read_at(t)["hcn"] for t in (1, 10, 25, 70, 90)])
    assert runs[0] == runs[1]
    assert Quality.NOT_READY is runs[0][0][1]  # the timeline's warm-up
