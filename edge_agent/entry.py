"""Confined-space entry: the pre-entry gas test of GB 30871-2022 chapter 6.

Every gas channel of the space's detectors is judged on its latest reading:

- oxygen between ``o2_entry_min`` and ``o2_entry_max`` (19.5-21 %VOL, §6.4);
- a flammable gas at most 0.5 %VOL if its LEL is 4 %VOL or more, else 0.2 %VOL
  (§5.3.2, applied by §6.4), given in the channel's unit: 10 %LEL for methane;
- a toxic gas at most its GBZ 2.1 limit (the MAC, else the PC-TWA), in the
  channel's unit;
- and in every case a fresh, good reading (at most three poll intervals old) from
  a device and a sensor without an active fault. A sensor warming up, a device
  that does not answer or a reading that is not fresh fails the test: no reading
  is no proof of safe air. So does a channel out of service, and a detector whose
  calibration is due or whose last bump test is older than the space allows
  (ALARM_MANAGEMENT.md §6.14; once people are inside, neither stops the watch).

Gases with no entry limit here (CO2, VOC) are reported, not judged.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from edge_agent.config import SiteConfig, Space
from edge_agent.config.defaults import SUBSTANCES, to_unit
from edge_agent.profiles import ProfileLibrary
from edge_agent.records import Quality, Sample

FLAMMABLE_LEL_VOL = {"flammable": None, "h2": 4.0}  # None: the space's flammable_lel_vol


@dataclass(frozen=True)
class SpaceChannel:
    """A gas channel of a space's detectors."""

    channel: str  # device.value
    point: str | None
    gas: str
    unit: str
    max_age_ms: int


@dataclass(frozen=True)
class Verdict:
    """One channel's part of a pre-entry test."""

    channel: str
    point: str | None
    gas: str
    value: float | None
    unit: str
    limit: str  # as a person reads it: "19.5-21 %VOL", "<= 10 %LEL"; "" when not judged
    passed: bool | None  # None: no entry limit for this gas
    reason: str  # why it failed; "" when it passed


@dataclass(frozen=True)
class EntryTest:
    space: str
    ts_ms: int
    passed: bool
    verdicts: list[Verdict]

    def body(self) -> dict[str, Any]:
        """The test as an event body (and a command reply)."""
        return {"space": self.space, "passed": self.passed,
                "channels": [asdict(v) for v in self.verdicts]}


def space_channels(site: SiteConfig, profiles: ProfileLibrary, space: Space) -> list[SpaceChannel]:
    devices = {d.name: d for d in site.devices}
    found = []
    for detector in space.detectors:
        device = devices[detector.device]
        for point in profiles.get(device.profile).channels:
            if point.gas is not None:
                found.append(SpaceChannel(f"{device.name}.{point.name}", detector.point,
                                          point.gas, point.unit or "",
                                          round(3000 * device.poll_interval_s)))
    return found


def overdue(space: Space, site: SiteConfig, today: datetime.date) -> dict[str, str]:
    """The space's detectors that cannot clear it today: device -> why (only the dates
    given in the config are checked).
    """
    devices = {d.name: d for d in site.devices}
    found = {}
    for detector in space.detectors:
        d = devices[detector.device]
        if d.calibrated is not None and today >= (
                due := d.calibrated + datetime.timedelta(d.calibration_interval_days)):
            found[d.name] = f"calibration due since {due} (calibrated {d.calibrated})"
        elif d.bump_tested is not None and (today - d.bump_tested).days > space.bump_max_days:
            found[d.name] = (f"bump test overdue: last {d.bump_tested}, at most every "
                             f"{space.bump_max_days} days")
    return found


def entry_limits(space: Space, gas: str, unit: str,
                 molar_volume_l: float) -> tuple[float | None, float | None] | None:
    """(lowest, highest) reading that allows entry, in ``unit``; None if not judged."""
    u = unit.upper()
    if gas == "o2":
        return (space.o2_entry_min, space.o2_entry_max) if u == "%VOL" else None
    if gas in FLAMMABLE_LEL_VOL:
        lel = FLAMMABLE_LEL_VOL[gas] or space.flammable_lel_vol
        most_vol = 0.5 if lel >= 4.0 else 0.2
        if u == "%LEL":
            return None, round(most_vol / lel * 100, 2)
        if u == "%VOL":
            return None, most_vol
        if u == "PPM":
            return None, most_vol * 10_000
        return None
    substance = SUBSTANCES.get(gas)
    if substance is None:
        return None
    highest = to_unit(substance.oel, gas, unit, molar_volume_l)
    return None if highest is None else (None, highest)


def pre_entry_test(space: Space, channels: list[SpaceChannel], latest: Mapping[str, Sample],
                   faults: Collection[str], now_ms: int, molar_volume_l: float,
                   held: Mapping[str, str] | None = None) -> EntryTest:
    """Judge the latest readings of ``channels``; ``faults``: the keys of active faults;
    ``held``: channels or devices that cannot count now (out of service, calibration
    overdue) and why.
    """
    verdicts = [_judge(space, c, latest.get(c.channel), faults, now_ms, molar_volume_l,
                       held or {}) for c in channels]
    passed = bool(verdicts) and all(v.passed is not False for v in verdicts)
    return EntryTest(space.name, now_ms, passed, verdicts)


def _judge(space: Space, c: SpaceChannel, sample: Sample | None, faults: Collection[str],
           now_ms: int, molar_volume_l: float, held: Mapping[str, str]) -> Verdict:
    limits = entry_limits(space, c.gas, c.unit, molar_volume_l)
    lo, hi = limits or (None, None)
    limit = ("" if limits is None else f"{lo:g}-{hi:g} {c.unit}" if lo is not None
             else f"<= {hi:g} {c.unit}")
    value = sample.value if sample is not None else None

    def verdict(passed: bool | None, reason: str = "") -> Verdict:
        return Verdict(c.channel, c.point, c.gas, value, c.unit, limit, passed, reason)

    device = c.channel.split(".", 1)[0]
    active = sorted(k for k in faults if k.startswith((f"{device}:", f"{c.channel}:")))
    if active:
        return verdict(False, f"fault {', '.join(active)}")
    if why := held.get(c.channel) or held.get(device):
        return verdict(False, why)
    if sample is None or now_ms - sample.ts_ms > c.max_age_ms:
        return verdict(False, "no fresh reading")
    if sample.quality is Quality.NOT_READY:
        return verdict(False, "sensor warming up (not ready)")
    if sample.quality is not Quality.GOOD or value is None:
        return verdict(False, f"reading is {sample.quality.label}")
    if limits is None:
        return verdict(None)
    if lo is not None and value < lo:
        return verdict(False, f"{value:g} {c.unit} is below {lo:g}")
    if hi is not None and value > hi:
        return verdict(False, f"{value:g} {c.unit} is above {hi:g}")
    return verdict(True)
