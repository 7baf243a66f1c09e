"""A simulated field device: a profile from drivers/ plus a scenario that says what the
air around it does (baseline, noise, hazards that can be injected).

Scenario files (``simulators/scenarios/<name>.toml``)::

    profile = "generic_4gas"
    [baseline]
    o2 = { value = 20.9, noise = 0.05 }
    [hazards.co_leak]
    description = "CO rises to 180 ppm"
    co = { peak = 180, rise_s = 15, hold_s = 40, fall_s = 15 }

A hazard moves each named register from its baseline to ``peak`` and back along
a trapezoid (rise, hold, fall). Tests can also pin a register to an exact value.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.profiles import Profile, ProfileLibrary
from edge_agent.validation import FileError, read_toml, validate

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"

_Strict = ConfigDict(extra="forbid", frozen=True)


class Baseline(BaseModel):
    model_config = _Strict

    value: float
    noise: float = Field(0.0, ge=0, description="standard deviation of the reading noise")


class Excursion(BaseModel):
    model_config = _Strict

    peak: float
    rise_s: float = Field(10.0, ge=0)
    hold_s: float = Field(30.0, ge=0)
    fall_s: float = Field(10.0, ge=0)


class Hazard(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)  # extra keys are register names

    description: str = ""

    def excursions(self) -> dict[str, Excursion]:
        return {name: Excursion.model_validate(spec)
                for name, spec in (self.model_extra or {}).items()}


class Scenario(BaseModel):
    model_config = _Strict

    profile: str
    description: str = ""
    baseline: dict[str, Baseline] = Field(default_factory=dict)
    hazards: dict[str, Hazard] = Field(default_factory=dict)


def load_scenario(name_or_path: str | Path, profiles: ProfileLibrary | None = None
                  ) -> tuple[Scenario, Profile]:
    """Load a scenario and its profile; every register it names must be in the profile."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIOS_DIR / f"{name_or_path}.toml"
    data, text = read_toml(path)
    scenario = validate(Scenario, data, path=path, text=text)
    profile = (profiles or ProfileLibrary()).get(scenario.profile)
    known = {r.name for r in profile.registers}
    problems = [f"baseline.{n}: no register {n!r} in profile {profile.name}"
                for n in scenario.baseline if n not in known]
    for hazard_name, hazard in scenario.hazards.items():
        try:
            excursions = hazard.excursions()
        except ValueError as exc:
            problems.append(f"hazards.{hazard_name}: {exc}")
            continue
        problems += [f"hazards.{hazard_name}.{n}: no register {n!r} in profile {profile.name}"
                     for n in excursions if n not in known]
    if problems:
        raise FileError(path, problems)
    return scenario, profile


@dataclass
class _Injection:
    excursions: dict[str, Excursion]
    start: float


class SimulatedDevice:
    """Values of one device over time; thread-safe, read by the Modbus server."""

    def __init__(self, profile: Profile, unit_id: int = 1, scenario: Scenario | None = None,
                 seed: int | None = None, clock=time.monotonic) -> None:
        self.profile = profile
        self.unit_id = unit_id
        self.scenario = scenario or Scenario(profile=profile.name)
        self._clock = clock
        self._random = random.Random(seed)
        self._pinned: dict[str, float] = {}
        self._injections: list[_Injection] = []
        self._lock = threading.Lock()

    def pin(self, register: str, value: float) -> None:
        """Hold ``register`` at exactly ``value`` (no noise) until released."""
        self.profile.register(register)  # KeyError for a name the profile lacks
        with self._lock:
            self._pinned[register] = value

    def release(self, register: str) -> None:
        with self._lock:
            self._pinned.pop(register, None)

    def inject(self, hazard: str) -> None:
        """Start the scenario's hazard ``hazard`` now."""
        if hazard not in self.scenario.hazards:
            raise KeyError(f"no hazard {hazard!r}; the scenario has "
                           f"{', '.join(self.scenario.hazards) or 'none'}")
        with self._lock:
            self._injections.append(_Injection(self.scenario.hazards[hazard].excursions(),
                                               self._clock()))

    def values(self) -> dict[str, float]:
        """Every register's engineering value now."""
        now = self._clock()
        with self._lock:
            out = {}
            for reg in self.profile.registers:
                if reg.name in self._pinned:
                    out[reg.name] = self._pinned[reg.name]
                    continue
                base = self.scenario.baseline.get(reg.name, Baseline(value=0.0))
                value = base.value
                for injection in self._injections:
                    exc = injection.excursions.get(reg.name)
                    if exc is not None:
                        value += _trapezoid(now - injection.start, exc) * (exc.peak - base.value)
                out[reg.name] = value + self._random.gauss(0.0, base.noise) if base.noise else value
            return out

    def registers(self) -> dict[tuple[str, int], int]:
        """The register words a real device would hold now: (function, address) -> word."""
        words = {}
        for name, value in self.values().items():
            reg = self.profile.register(name)
            for i, word in enumerate(reg.encode(value)):
                words[(reg.function.value, reg.address + i)] = word
        return words


def _trapezoid(t: float, exc: Excursion) -> float:
    """0 before and after, 1 while holding, linear in between."""
    if t < 0:
        return 0.0
    if t < exc.rise_s:
        return t / exc.rise_s
    t -= exc.rise_s
    if t < exc.hold_s:
        return 1.0
    t -= exc.hold_s
    return max(0.0, 1.0 - t / exc.fall_s) if exc.fall_s else 0.0
