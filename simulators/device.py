"""A simulated field device: a profile from drivers/ plus a scenario that says what the
air around it does and what goes wrong with the device.

Scenario files (``simulators/scenarios/<name>.toml``)::

    profile = "generic_4gas"
    [baseline]
    o2 = { value = 20.9, noise = 0.05 }
    temperature = { value = 24, diurnal = 3, drift_per_h = 0.1 }
    [hazards.co_leak]
    description = "CO rises to 180 ppm"
    co = { peak = 180, rise_s = 15, hold_s = 40, fall_s = 15 }
    [[timeline]]
    at_s = 10
    inject = "co_leak"
    [[timeline]]
    at_s = 30
    action = "timeouts"
    rate = 0.5
    for_s = 20

A hazard moves each named value from its baseline to ``peak`` and back along a
trapezoid (after ``delay_s``: rise, hold, fall), so one hazard can tell a story
(off-gas first, heat later). The timeline replays hazards and device faults at
fixed times after ``start()``, so a test or the demo sees the same run every
time (with a fixed seed).
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_agent.profiles import Profile, ProfileLibrary, Register
from edge_agent.validation import FileError, read_toml, validate

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"

_Strict = ConfigDict(extra="forbid", frozen=True)


class Baseline(BaseModel):
    model_config = _Strict

    value: float
    noise: float = Field(0.0, ge=0, description="standard deviation of the reading noise")
    drift_per_h: float = Field(0.0, description="slow change, units per hour")
    diurnal: float = Field(0.0, ge=0, description="amplitude of a daily sine (temperature)")
    period_s: float = Field(86400.0, gt=0, description="period of the diurnal sine")


class Excursion(BaseModel):
    model_config = _Strict

    peak: float
    delay_s: float = Field(0.0, ge=0, description="wait after the hazard starts")
    rise_s: float = Field(10.0, ge=0)
    hold_s: float = Field(30.0, ge=0)
    fall_s: float = Field(10.0, ge=0)


class Hazard(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)  # extra keys are value names

    description: str = ""

    def excursions(self) -> dict[str, Excursion]:
        return {name: Excursion.model_validate(spec)
                for name, spec in (self.model_extra or {}).items()}


Action = Literal["inject", "pin", "release", "stuck", "drift", "silent", "timeouts", "corrupt"]


class Step(BaseModel):
    """One timeline entry: at ``at_s`` after start, do ``action`` to ``unit`` (default all).

    inject: start hazard ``inject``. pin / release: hold ``point`` at ``value`` (e.g. a
    status code), or let it go. stuck: hold ``point`` where it is. drift: add
    ``per_min`` units per minute to ``point``. silent: answer nothing (unplugged).
    timeouts / corrupt: leave unanswered, or answer with a broken CRC, a share
    ``rate`` of the requests. ``for_s`` ends a fault after that long.
    """

    model_config = _Strict

    at_s: float = Field(ge=0)
    action: Action = "inject"
    inject: str | None = None
    unit: int | None = None
    point: str | None = None
    value: float | None = None
    per_min: float = 0.0
    rate: float = Field(1.0, ge=0, le=1)
    for_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> Step:
        needs = {"inject": ["inject"], "pin": ["point", "value"], "release": ["point"],
                 "stuck": ["point"], "drift": ["point"]}.get(self.action, [])
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ValueError(f"action {self.action} needs {', '.join(missing)}")
        return self


class Scenario(BaseModel):
    model_config = _Strict

    profile: str
    description: str = ""
    baseline: dict[str, Baseline] = Field(default_factory=dict)
    hazards: dict[str, Hazard] = Field(default_factory=dict)
    timeline: list[Step] = Field(default_factory=list)


def load_scenario(name_or_path: str | Path, profiles: ProfileLibrary | None = None
                  ) -> tuple[Scenario, Profile]:
    """Load a scenario and its profile; every value and hazard it names must exist."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIOS_DIR / f"{name_or_path}.toml"
    data, text = read_toml(path)
    scenario = validate(Scenario, data, path=path, text=text)
    profile = (profiles or ProfileLibrary()).get(scenario.profile)
    known = {p.name for p in profile.points}
    problems = [f"baseline.{n}: no value {n!r} in profile {profile.name}"
                for n in scenario.baseline if n not in known]
    for hazard_name, hazard in scenario.hazards.items():
        try:
            excursions = hazard.excursions()
        except ValueError as exc:
            problems.append(f"hazards.{hazard_name}: {exc}")
            continue
        problems += [f"hazards.{hazard_name}.{n}: no value {n!r} in profile {profile.name}"
                     for n in excursions if n not in known]
    for i, step in enumerate(scenario.timeline):
        if step.inject is not None and step.inject not in scenario.hazards:
            problems.append(f"timeline[{i}].inject: no hazard {step.inject!r}")
        if step.point is not None and step.point not in known:
            problems.append(f"timeline[{i}].point: no value {step.point!r} in profile "
                            f"{profile.name}")
    if problems:
        raise FileError(path, problems)
    return scenario, profile


@dataclass
class _Injection:
    excursions: dict[str, Excursion]
    start: float


@dataclass
class _Fault:
    action: str
    rate: float
    until: float | None


@dataclass
class _Drift:
    per_s: float
    start: float


@dataclass
class _State:
    pinned: dict[str, float] = field(default_factory=dict)
    injections: list[_Injection] = field(default_factory=list)
    drifts: dict[str, _Drift] = field(default_factory=dict)
    faults: list[_Fault] = field(default_factory=list)


class SimulatedDevice:
    """Values of one device over time and how it answers; thread-safe."""

    def __init__(self, profile: Profile, unit_id: int = 1, scenario: Scenario | None = None,
                 seed: int | None = None, clock=time.monotonic) -> None:
        self.profile = profile
        self.unit_id = unit_id
        self.scenario = scenario or Scenario(profile=profile.name)
        self._clock = clock
        self._random = random.Random(seed)
        self._state = _State()
        self._lock = threading.RLock()
        self._born = clock()
        self._timeline_start: float | None = None
        self._done = 0  # timeline steps applied
        self.outputs: dict[str, int] = {}  # what masters wrote to the profile's outputs

    # --- what tests, the demo and the timeline do to it ----------------------------

    def pin(self, name: str, value: float) -> None:
        """Hold ``name`` at exactly ``value`` (no noise) until released."""
        self.profile.point(name)  # KeyError for a name the profile lacks
        with self._lock:
            self._state.pinned[name] = value

    def release(self, name: str) -> None:
        with self._lock:
            self._state.pinned.pop(name, None)

    def inject(self, hazard: str) -> None:
        """Start the scenario's hazard ``hazard`` now."""
        if hazard not in self.scenario.hazards:
            raise KeyError(f"no hazard {hazard!r}; the scenario has "
                           f"{', '.join(self.scenario.hazards) or 'none'}")
        with self._lock:
            self._state.injections.append(
                _Injection(self.scenario.hazards[hazard].excursions(), self._clock()))

    def fault(self, action: str, rate: float = 1.0, for_s: float | None = None) -> None:
        """Start answering badly: silent, timeouts or corrupt (see Step)."""
        now = self._clock()
        with self._lock:
            self._state.faults.append(_Fault(action, rate, now + for_s if for_s else None))

    def write(self, output: str, value: int) -> None:
        """A master wrote ``value`` to the output ``output``; values read there follow."""
        spec = next(o for o in self.profile.outputs if o.name == output)
        with self._lock:
            self.outputs[output] = value
            for reg in self.profile.registers:
                if (reg.function.value, reg.address) == (spec.function, spec.address):
                    self._state.pinned[reg.name] = float(value)

    def heal(self) -> None:
        """End every answering fault."""
        with self._lock:
            self._state.faults.clear()

    def start(self) -> None:
        """Start the scenario's timeline now."""
        with self._lock:
            self._timeline_start, self._done = self._clock(), 0

    def _run_timeline(self, now: float) -> None:
        if self._timeline_start is None:
            return
        steps = self.scenario.timeline
        while self._done < len(steps) and now - self._timeline_start >= steps[self._done].at_s:
            step = steps[self._done]
            self._done += 1
            if step.unit is None or step.unit == self.unit_id:
                self._apply(step, now)

    def _apply(self, step: Step, now: float) -> None:
        if step.action == "inject":
            self.inject(step.inject)  # type: ignore[arg-type]
        elif step.action == "pin":
            self._state.pinned[step.point] = step.value  # type: ignore[index,assignment]
        elif step.action == "release":
            self._state.pinned.pop(step.point, None)  # type: ignore[arg-type]
        elif step.action == "stuck":
            self._state.pinned[step.point] = self._value(  # type: ignore[index]
                self.profile.point(step.point), now)  # type: ignore[arg-type]
        elif step.action == "drift":
            self._state.drifts[step.point] = _Drift(step.per_min / 60, now)  # type: ignore[index]
        else:
            self._state.faults.append(_Fault(step.action, step.rate,
                                             now + step.for_s if step.for_s else None))

    # --- what the servers ask -----------------------------------------------------

    def answer(self) -> Literal["answer", "silent", "corrupt"]:
        """How to treat the request that just came in."""
        now = self._clock()
        with self._lock:
            self._run_timeline(now)
            self._state.faults = [f for f in self._state.faults
                                  if f.until is None or now < f.until]
            for f in self._state.faults:
                if f.action == "silent":
                    return "silent"
                if self._random.random() < f.rate:
                    return "silent" if f.action == "timeouts" else "corrupt"
            return "answer"

    def values(self) -> dict[str, float]:
        """Every value's engineering value now (published and helper values)."""
        now = self._clock()
        with self._lock:
            self._run_timeline(now)
            return {p.name: self._value(p, now) for p in self.profile.points}

    def _value(self, point, now: float) -> float:
        state = self._state
        if point.name in state.pinned:
            return state.pinned[point.name]
        base = self.scenario.baseline.get(point.name, Baseline(value=0.0))
        age = now - self._born
        value = base.value + base.drift_per_h * age / 3600
        if base.diurnal:
            value += base.diurnal * math.sin(2 * math.pi * age / base.period_s)
        for injection in state.injections:
            exc = injection.excursions.get(point.name)
            if exc is not None:
                value += _trapezoid(now - injection.start, exc) * (exc.peak - base.value)
        if point.name in state.drifts:
            drift = state.drifts[point.name]
            value += drift.per_s * (now - drift.start)
        return value + self._random.gauss(0.0, base.noise) if base.noise else value

    def raw(self) -> dict[str, float]:
        """The raw number of every value, as the device holds it."""
        values = self.values()
        raw = {}
        for point in self.profile.points:
            decimals = int(values[point.decimals_from]) if point.decimals_from else 0
            raw[point.name] = point.raw_for(values[point.name], decimals)
        return raw

    def registers(self) -> dict[tuple[str, int], int]:
        """The words (and bits) a Modbus device would hold now: (function, address) -> word."""
        raw = self.raw()
        words: dict[tuple[str, int], int] = {}
        # Whole registers first, then the bit fields packed into shared ones.
        for reg in sorted(self.profile.registers, key=lambda r: r.bits is not None):
            wire = reg.bytes_from_raw(raw[reg.name])
            if reg.bits is not None:  # a field packed into a shared register
                lo, hi = reg.bits
                mask = (1 << (hi - lo + 1)) - 1
                key = (reg.function.value, reg.address)
                field_value = int.from_bytes(wire, "big") & mask
                words[key] = (words.get(key, 0) & ~(mask << lo)) | field_value << lo
                continue
            for i, word in enumerate(_words(reg, wire)):
                words[(reg.function.value, reg.address + i)] = word
        return words


def _words(reg: Register, wire: bytes) -> list[int]:
    if len(wire) == 1:
        return [wire[0]]
    return [int.from_bytes(wire[i:i + 2], "big") for i in range(0, len(wire), 2)]


def _trapezoid(t: float, exc: Excursion) -> float:
    """0 before and after, 1 while holding, linear in between."""
    t -= exc.delay_s
    if t < 0:
        return 0.0
    if t < exc.rise_s:
        return t / exc.rise_s
    t -= exc.rise_s
    if t < exc.hold_s:
        return 1.0
    t -= exc.hold_s
    return max(0.0, 1.0 - t / exc.fall_s) if exc.fall_s else 0.0
