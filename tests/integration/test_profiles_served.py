"""Every Modbus profile in drivers/, served by the simulator and read back through the
agent's own transport: pinned values come back exactly, the device's own status codes,
fault codes and measuring range give the promised quality, outputs switch, and every
scenario serves values the profile can carry.

The tests are driven by the profiles and scenarios themselves (Telegraf's test cases,
pymodbus' test_examples): a new file in drivers/ or simulators/scenarios/ is picked up
with no new Python.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from edge_agent.acquisition import ModbusTransport
from edge_agent.config import Device, ModbusTcpBus
from edge_agent.demo.broker import free_port
from edge_agent.profiles import DataType, Point, Profile, ProfileLibrary, StatusRule
from edge_agent.records import Quality
from simulators import ModbusTcpSimulator, Scenario, SimulatedDevice, load_scenario
from simulators.device import SCENARIOS_DIR

LIBRARY = ProfileLibrary()
MODBUS = [name for name in LIBRARY.names() if LIBRARY.get(name).transport == "modbus"]
SCENARIOS = sorted(path.stem for path in SCENARIOS_DIR.glob("*.toml"))

STATE_QUALITY = {"good": Quality.GOOD, "bad": Quality.BAD, "not_ready": Quality.NOT_READY,
                 "device_fault": Quality.DEVICE_FAULT, "out_of_range": Quality.OUT_OF_RANGE}
WITH_VALUE = (Quality.GOOD, Quality.OUT_OF_RANGE)  # records.Quality: only these carry a value
RAW_LIMITS = {DataType.BOOL: (0, 1), DataType.INT16: (-(1 << 15), (1 << 15) - 1),
              DataType.UINT16: (0, (1 << 16) - 1), DataType.INT32: (-(1 << 31), (1 << 31) - 1),
              DataType.UINT32: (0, (1 << 32) - 1)}

def profile_params(names: list[str]) -> list:
    return [pytest.param(name, id=name) for name in names]


# --- numbers a device sends ---------------------------------------------------------

def raw_limits(point: Point) -> tuple[int, int] | None:
    """Smallest and largest raw integer of a value; None for float32."""
    if point.bits is not None:
        lo, hi = point.bits
        return 0, (1 << (hi - lo + 1)) - 1
    return RAW_LIMITS.get(point.type)


def engineering(point: Point, raw: float, decimals: int) -> float:
    """The profile format's formula, written out: raw / 10**decimals * scale + offset."""
    return raw / 10**decimals * point.scale + point.offset


def resolution(point: Point, decimals: int) -> dict[str, float]:
    """pytest.approx arguments: half a step of the device, or float32 precision."""
    if point.type is DataType.FLOAT32:
        return {"rel": 1e-6, "abs": 1e-9}
    return {"abs": abs(point.scale) / 10**decimals / 2}


def as_float32(value: float) -> float:
    return struct.unpack(">f", struct.pack(">f", value))[0]


def fits(point: Point, raw: float) -> bool:
    limits = raw_limits(point)
    return limits is None or limits[0] <= raw <= limits[1]


def good_code(rule: StatusRule) -> int:
    """A raw status the rule judges good: no bit set, or a code (listed or not) that is good."""
    if rule.bits:
        return 0
    good = sorted(code for code, state in rule.codes.items() if state == "good")
    if good:
        return good[0]
    assert rule.default == "good", f"status {rule.point} has no good state"
    return next(code for code in range(1 << 16) if code not in rule.codes)


def free_code(rule: StatusRule, point: Point) -> int | None:
    """A raw status the rule does not list, within the point's bits; None if all are."""
    low, high = raw_limits(point) or (0, 1 << 16)
    return next((c for c in range(max(low, 0), min(high, 1 << 16) + 1)
                 if c not in rule.codes), None)


@dataclass
class Healthy:
    """Raw numbers a healthy device holds, and what the agent must make of them."""

    raw: dict[str, float] = field(default_factory=dict)
    decimals: dict[str, int] = field(default_factory=dict)  # per value, from its decimals_from

    def value(self, point: Point) -> float:
        return engineering(point, self.raw[point.name], self.decimals[point.name])


def healthy(profile: Profile) -> Healthy:
    """Choose an exact, in-range raw number for every value of ``profile``.

    Decimal-point counts are 1 (so decimals_from is exercised), status values a code
    their rule calls good, published values 37 % into their range (or a signed number),
    booleans alternate between 1 and 0.
    """
    state = Healthy()
    status_points = {rule.point: rule for rule in profile.status}
    decimal_points = {p.decimals_from for p in profile.points if p.decimals_from}
    for point in profile.points:
        if point.name in decimal_points:
            state.raw[point.name] = 1 if fits(point, 1) else 0
    for index, point in enumerate(profile.points):
        if point.name in decimal_points:
            continue
        decimals = int(state.raw[point.decimals_from]) if point.decimals_from else 0
        limits = raw_limits(point)
        if point.name in status_points:
            raw: float = good_code(status_points[point.name])
        elif limits == (0, 1):
            raw = 1 if index % 2 == 0 else 0
        elif not point.publish:
            raw = 7 if point.name == profile.heartbeat else 1
        elif point.range is not None:
            lo, hi = point.range
            target = lo + 0.37 * (hi - lo)
            raw = (target - point.offset) / point.scale * 10**decimals
            raw = as_float32(raw) if limits is None else round(raw)
        elif limits is None:
            raw = 12.25
        else:
            raw = -1234 if limits[0] < 0 else 1234
        if limits is not None:
            raw = min(max(raw, limits[0]), limits[1])
            while raw in point.fault_values:
                raw = raw - 1 if raw > limits[0] else raw + 1
        state.raw[point.name] = raw
    state.decimals = {p.name: int(state.raw[p.decimals_from]) if p.decimals_from else 0
                      for p in profile.points}
    return state


def pin_all(device: SimulatedDevice, profile: Profile, state: Healthy,
            override: dict[str, float] | None = None) -> None:
    """Hold every value of the device at the engineering value of its chosen raw number."""
    raw = {**state.raw, **(override or {})}
    for point in profile.points:
        decimals = int(raw[point.decimals_from]) if point.decimals_from else 0
        device.pin(point.name, engineering(point, raw[point.name], decimals))


def expected_good(profile: Profile, state: Healthy) -> dict[str, tuple[object, Quality]]:
    return {p.name: (pytest.approx(state.value(p), **resolution(p, state.decimals[p.name])),
                     Quality.GOOD) for p in profile.channels}


# --- the agent's side ---------------------------------------------------------------

def device_config(profile: Profile) -> Device:
    return Device(name="d", bus="t", unit_id=1, profile=profile.name)


@contextmanager
def served(device: SimulatedDevice) -> Iterator[int]:
    """Serve ``device`` on a free loopback port; yield the port."""
    port = free_port()
    with ModbusTcpSimulator([device], port=port):
        yield port


Step = Callable[[ModbusTransport, Device], object]


def read_after(profile: Profile, port: int, steps: list[Step | None]
               ) -> list[dict[str, tuple[float | None, Quality]]]:
    """For each step: do it (a pin, a write), then read the device once and interpret it."""
    bus = ModbusTcpBus(type="modbus-tcp", name="t", host="127.0.0.1", port=port)
    config = device_config(profile)

    async def run() -> list[dict[str, tuple[float | None, Quality]]]:
        transport = ModbusTransport(bus)
        try:
            readings = []
            for step in steps:
                if step is not None and asyncio.iscoroutine(done := step(transport, config)):
                    await done
                readings.append(profile.interpret(await transport.read(config, profile)))
            return readings
        finally:
            await transport.close()

    return asyncio.run(run())


# --- values -------------------------------------------------------------------------

@pytest.mark.parametrize("name", profile_params(MODBUS))
def test_profile_serves_every_value_as_pinned(name: str) -> None:
    """Each published value, pinned to an exact number, comes back equal and good."""
    profile = LIBRARY.get(name)
    state = healthy(profile)
    device = SimulatedDevice(profile, 1)
    pin_all(device, profile, state)
    with served(device) as port:
        [reading] = read_after(profile, port, [None])
    assert expected_good(profile, state) == reading


@dataclass
class Case:
    """A device state to set up and the quality the agent must give the affected values."""

    what: str
    override: dict[str, float]  # value name -> raw number
    expected: dict[str, Quality]  # published value -> quality; the others stay good


def state_cases(profile: Profile, state: Healthy) -> list[Case]:
    """Every non-good status code or bit, every fault code, and a reading off each range."""
    cases = []
    published = [p.name for p in profile.channels]
    for rule in profile.status:
        point = profile.point(rule.point)
        channels = rule.channels or published
        listed = ({code: s for code, s in rule.codes.items()} if rule.codes
                  else {1 << bit: s for bit, s in rule.bits.items()})
        if rule.codes and rule.default != "good" and (code := free_code(rule, point)) is not None:
            listed[code] = rule.default
        for code, judged in sorted(listed.items()):
            if judged != "good" and fits(point, code):
                cases.append(Case(f"{rule.point} = {code} ({judged})", {rule.point: code},
                                  dict.fromkeys(channels, STATE_QUALITY[judged])))
    for point in profile.channels:
        for code in point.fault_values:
            cases.append(Case(f"{point.name} = fault code {code}", {point.name: code},
                              {point.name: Quality.DEVICE_FAULT}))
        if point.range is None:
            continue
        decimals = state.decimals[point.name]
        lo, hi = point.range
        margin = max(0.1 * (hi - lo), abs(point.scale) / 10**decimals)
        for target in (hi + margin, lo - margin):
            raw = (target - point.offset) / point.scale * 10**decimals
            raw = as_float32(raw) if raw_limits(point) is None else round(raw)
            if fits(point, raw) and raw not in point.fault_values:
                cases.append(Case(f"{point.name} = {target:g} (outside {lo:g}..{hi:g})",
                                  {point.name: raw}, {point.name: Quality.OUT_OF_RANGE}))
                break
    return cases


def reports_states(name: str) -> bool:
    """True if the profile has status rules, fault codes or ranges to test."""
    profile = LIBRARY.get(name)
    return bool(profile.status) or any(p.fault_values or p.range for p in profile.points)


@pytest.mark.parametrize("name", profile_params([n for n in MODBUS if reports_states(n)]))
def test_profile_device_states_set_the_quality(name: str) -> None:
    """Status codes, fault codes and readings off the range give the quality the profile
    promises, to the values it names and no others."""
    profile = LIBRARY.get(name)
    state = healthy(profile)
    cases = state_cases(profile, state)
    assert cases
    device = SimulatedDevice(profile, 1)

    def setting(case: Case) -> Step:
        return lambda *_: pin_all(device, profile, state, case.override)

    with served(device) as port:
        readings = read_after(profile, port, [setting(case) for case in cases])
    for case, reading in zip(cases, readings, strict=True):
        expected = expected_good(profile, state)
        for point_name, quality in case.expected.items():
            point = profile.point(point_name)
            raw = case.override.get(point_name, state.raw[point_name])
            value = (pytest.approx(engineering(point, raw, state.decimals[point_name]),
                                   **resolution(point, state.decimals[point_name]))
                     if quality in WITH_VALUE else None)
            expected[point_name] = (value, quality)
        assert (case.what, expected) == (case.what, reading)


# --- outputs ------------------------------------------------------------------------

WITH_OUTPUTS = [name for name in MODBUS if LIBRARY.get(name).outputs]


@pytest.mark.parametrize("name", profile_params(WITH_OUTPUTS))
def test_profile_outputs_switch_and_read_back(name: str) -> None:
    """Writing an output switches it on and off, read back at its own address, and
    leaves every other value as it was."""
    profile = LIBRARY.get(name)
    state = healthy(profile)
    device = SimulatedDevice(profile, 1)
    pin_all(device, profile, state)
    steps: list[Step | None] = []
    expected = []
    now = dict(state.raw)
    for output in profile.outputs:
        at_output = [p.name for p in profile.points
                     if (p.function.value, p.address) == (output.function, output.address)]
        for value in (output.on, output.off):
            steps.append(lambda transport, config, o=output, v=value:
                         transport.write(config, o.function, o.address, v))
            now.update(dict.fromkeys(at_output, value))
            expected.append(expected_good(profile, Healthy(dict(now), state.decimals)))
    with served(device) as port:
        readings = read_after(profile, port, steps)
    assert expected == readings
    assert {o.name: o.off for o in profile.outputs} == device.outputs


# --- scenarios ----------------------------------------------------------------------

@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_loads_by_name(name: str) -> None:
    """Every scenario loads with its profile, and its hazards and timeline name real values."""
    scenario, profile = load_scenario(name)
    assert profile.name == scenario.profile


def test_every_modbus_profile_has_a_scenario() -> None:
    """A profile nobody simulates is a profile nobody has seen work."""
    used = {load_scenario(name)[0].profile for name in SCENARIOS}
    assert [] == [name for name in MODBUS if name not in used]


def modbus_scenarios() -> list[tuple[str, Scenario, Profile]]:
    loaded = [(name, *load_scenario(name)) for name in SCENARIOS]
    return [(name, scenario, profile) for name, scenario, profile in loaded
            if profile.transport == "modbus"]


def scenario_params() -> list:
    return [pytest.param(name, id=name) for name, _, _ in modbus_scenarios()]


def hazard_params() -> list:
    return [pytest.param(name, hazard, id=f"{name}-{hazard}")
            for name, scenario, _ in modbus_scenarios() for hazard in scenario.hazards]


def expected_from_scenario(profile: Profile, scenario: Scenario, t: float, hazard: str | None
                           ) -> tuple[dict[str, float], dict[str, float]]:
    """What the scenario says each published value is at ``t`` (noise aside), and how far
    the noise and one device step may move it."""
    excursions = scenario.hazards[hazard].excursions() if hazard else {}
    helpers = {n: b.value for n, b in scenario.baseline.items()}
    values, tolerance = {}, {}
    for point in profile.channels:
        base = scenario.baseline.get(point.name)
        value = base.value if base else 0.0
        noise = base.noise if base else 0.0
        if base:
            value += base.drift_per_h * t / 3600
            value += base.diurnal * math.sin(2 * math.pi * t / base.period_s)
        if point.name in excursions:
            value += excursions[point.name].peak - (base.value if base else 0.0)
        decimals = int(helpers.get(point.decimals_from, 0)) if point.decimals_from else 0
        values[point.name] = value
        tolerance[point.name] = 5 * noise + abs(point.scale) / 10**decimals / 2
    return values, tolerance


@pytest.mark.parametrize("name", scenario_params())
def test_scenario_baseline_reads_good(name: str) -> None:
    """A scenario's healthy device (status, decimals, unit and gas codes included) gives
    every published value good, at the baseline."""
    scenario, profile = load_scenario(name)
    device = SimulatedDevice(profile, 1, scenario, seed=1, clock=lambda: 0.0)
    values, tolerance = expected_from_scenario(profile, scenario, 0.0, None)
    with served(device) as port:
        [reading] = read_after(profile, port, [None])
    expected = {n: (pytest.approx(v, abs=tolerance[n]), Quality.GOOD) for n, v in values.items()}
    assert expected == reading


@pytest.mark.parametrize(("name", "hazard"), hazard_params())
def test_scenario_hazard_reaches_its_peak(name: str, hazard: str) -> None:
    """At the plateau of each hazard, the values it moves read their peak through the
    agent (out_of_range where the peak passes the sensor's range), the others stay put."""
    scenario, profile = load_scenario(name)
    excursions = scenario.hazards[hazard].excursions()
    start = max(e.delay_s + e.rise_s for e in excursions.values())
    end = min(e.delay_s + e.rise_s + e.hold_s for e in excursions.values())
    assert start <= end, f"{hazard}: its values never hold their peaks together"
    now = [0.0]
    device = SimulatedDevice(profile, 1, scenario, seed=1, clock=lambda: now[0])
    device.inject(hazard)
    now[0] = (start + end) / 2
    values, tolerance = expected_from_scenario(profile, scenario, now[0], hazard)
    with served(device) as port:
        [reading] = read_after(profile, port, [None])
    expected = {}
    for point in profile.channels:
        lo, hi = point.range or (-math.inf, math.inf)
        quality = Quality.GOOD if lo <= values[point.name] <= hi else Quality.OUT_OF_RANGE
        expected[point.name] = (pytest.approx(values[point.name], abs=tolerance[point.name]),
                                quality)
    assert expected == reading


WITH_HEARTBEAT = [pytest.param(name, id=name) for name, _, profile in modbus_scenarios()
                  if profile.heartbeat]


@pytest.mark.parametrize("name", WITH_HEARTBEAT)
def test_scenario_heartbeat_moves_between_polls(name: str) -> None:
    """The heartbeat of a scenario's device changes from one 1 s poll to the next, so a
    healthy simulated device is never marked stale."""
    scenario, profile = load_scenario(name)
    now = [0.0]
    device = SimulatedDevice(profile, 1, scenario, seed=1, clock=lambda: now[0])

    with served(device) as port:
        bus = ModbusTcpBus(type="modbus-tcp", name="t", host="127.0.0.1", port=port)

        async def beats() -> list[float]:
            transport = ModbusTransport(bus)
            try:
                counts = []
                for t in (10.0, 10.9, 12.0):
                    now[0] = t
                    raw = await transport.read(device_config(profile), profile)
                    counts.append(raw[profile.heartbeat])
                return counts
            finally:
                await transport.close()

        first, second, third = asyncio.run(beats())
    assert first != second != third


# --- words from the sources -----------------------------------------------------------

# (profile, pinned engineering values, expected words) from the examples of the sources
# each profile cites, so the encoding is checked against the data sheet and not only
# against the profile itself.
DATA_SHEET_WORDS = [
    # SAFETY_REFERENCE.md §8.3: "an O2 head reporting 0x4400 is %VOL with one decimal";
    # ambient temperature is (raw - 500) / 10 °C.
    ("generic_type_a_hcn", {"unit_code": 2, "decimals": 1, "hcn": 2.5, "temperature": 25.0},
     {("holding", 0): 0x4400, ("holding", 1): 25, ("holding", 7): 750}),
    # §8.4: status, value, decimal places, unit, gas type from 0x0100.
    ("generic_type_b_h2", {"status": 0, "h2": 12.5, "decimals": 1, "unit_code": 1,
                           "gas_type": 7},
     {("holding", 0x0100): 0, ("holding", 0x0101): 125, ("holding", 0x0102): 1,
      ("holding", 0x0103): 1, ("holding", 0x0104): 7}),
    # §8.6: reply FE 04 02 01 90 = 400 ppm.
    ("senseair_s8", {"co2": 400}, {("input", 3): 0x0190}),
    # §8.5: humidity first; 0xFF33 = -20.5 °C.
    ("renke_rs_ws_n01", {"humidity": 54.6, "temperature": -20.5},
     {("holding", 0): 546, ("holding", 1): 0xFF33}),
    # §8.7: float32 with the words swapped (CDAB): 123.456 = 42 F6 E9 79 -> E979 42F6;
    # monitor state in bits 0-3, instrument fault in bits 4-5, high alarm bit 7.
    ("honeywell_midas_nh3", {"nh3": 123.456, "monitor_state": 1, "fault_status": 2,
                             "high_alarm": 1},
     {("holding", 2): 0xE979, ("holding", 3): 0x42F6, ("holding", 0): 0x0001 | 0x20 | 0x80}),
    # ESP32-MB8ART HARDWARE.md: LOW_RES 234 = 23.4 °C; open circuit 30000.
    ("mb8art_8ch_rtd", {"resolution": 0, "t1": 23.4, "t2": 3000.0},
     {("input", 0): 234, ("input", 1): 30000, ("holding", 76): 0}),
    ("mb8art_8ch_rtd", {"resolution": 1, "t1": 23.4}, {("input", 0): 2340}),
]


@pytest.mark.parametrize(("name", "pins", "words"), DATA_SHEET_WORDS,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(DATA_SHEET_WORDS)])
def test_profile_words_match_the_data_sheet(name: str, pins: dict[str, float],
                                            words: dict[tuple[str, int], int]) -> None:
    """The simulator built from the profile holds the words the source's examples show."""
    device = SimulatedDevice(LIBRARY.get(name), 1)
    for point, value in pins.items():
        device.pin(point, value)
    held = device.registers()
    assert words == {key: held[key] for key in words}
