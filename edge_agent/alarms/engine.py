"""The alarm engine: every kernel of the core over the channels of a site, and every
change of state as an event with one id per episode.

Per poll result, in this order:
1. sensor faults (stuck, spike, gap, drift against a redundant sensor); a spike is
   taken out of the readings that the other rules see;
2. the rate of change of the channels that need one (rate limits, rule terms);
3. the limits, on values and on rates (threshold kernel: deadband, delays, latch);
4. exposure: rolling STEL and TWA, the peak rule;
5. advisory anomaly scores;
6. combined rules across channels.
Each state change is an event: ``raised`` and ``returned_to_normal`` with the same
id. Alarms of a channel whose sensor is faulty are never cleared by the fault: they
are marked ``unreliable`` (and ``reliable`` again), same id.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.alarms.specs import ChannelSpec, LimitSpec, RuleSpec, SiteSpec
from edge_agent.core import (
    AnomalyBank,
    ExposureBank,
    RateOfRiseBank,
    RuleBank,
    SensorFaultBank,
    ThresholdBank,
)
from edge_agent.records import ActiveAlarm, CoreState, Event, EventClass

__all__ = ["AlarmEngine", "Outcome"]

SENSOR_FAULTS = ("stuck", "spike", "gap", "drift")
# The exposure kernel's flags and the alarm each raises: a reading above 5 × PC-TWA,
# which is never allowed (peak_5x); a broken excursion rule of GBZ 2.1 (excursions
# above 3 × PC-TWA too long, too close or too many: peak). Every one of them is an
# exceeded legal limit: level 2.
EXPOSURE = {"stel_over": "stel", "twa_over": "twa", "peak_over": "peak_5x",
            "peak_breach": "peak"}
EXPOSURE_LEVEL = {"stel": 2, "twa": 2, "peak": 2, "peak_5x": 2}


@dataclass
class Outcome:
    """What one judgement produced: events, and the active-alarm changes to store."""

    events: list[Event] = field(default_factory=list)
    raised: list[ActiveAlarm] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        self.events += other.events
        self.raised += other.raised
        self.ended += other.ended


RING_MIN = 16  # readings a rate window's ring keeps, at least


def _readings_in(channel: ChannelSpec) -> int:
    """Readings of the channel's rate window, with room for polls that come early."""
    return math.ceil(1.25 * channel.rate_window_s / channel.poll_interval_s) + 2  # type: ignore[operator]


def _new_id() -> str:
    return uuid.uuid4().hex


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def aligned(now: dict[str, np.ndarray], keys: list[str], saved_keys: list[str],
            saved: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``now`` with the rows of ``saved`` copied in where their keys match; arrays that
    are not per key (a kernel's clock) are taken whole when their shapes agree.
    """
    index = {key: i for i, key in enumerate(keys)}
    pairs = [(index[key], j) for j, key in enumerate(saved_keys) if key in index]
    out = {name: array.copy() for name, array in now.items()}
    for name, array in out.items():
        old = saved.get(name)
        if old is None:
            continue
        if array.shape[:1] != (len(keys),) or old.shape[:1] != (len(saved_keys),):
            if old.shape == array.shape:
                array[...] = old
        elif pairs and old.shape[1:] == array.shape[1:]:
            rows, saved_rows = zip(*pairs, strict=True)
            array[list(rows)] = old[list(saved_rows)]
    return out


class AlarmEngine:
    """Every rule of one site, stepped on each poll result."""

    def __init__(self, spec: SiteSpec, restored: dict[str, ActiveAlarm] | None = None,
                 new_id: Callable[[], str] = _new_id) -> None:
        self.spec = spec
        self._new_id = new_id
        chans = self.specs = list(spec.channels)
        self.channels = {c.name: i for i, c in enumerate(chans)}
        n = max(1, len(chans))
        self._last = np.full(n, np.nan)  # last good reading per channel
        self._last_slope = np.full(n, np.nan)

        self.faults = self._fault_bank(chans, spec)
        self._rate_of = [i for i, c in enumerate(chans) if c.rate_window_s is not None]
        self.rates = RateOfRiseBank(len(self._rate_of), window_s=np.array(
            [chans[i].rate_window_s for i in self._rate_of]), capacity=max(
            [RING_MIN, *(_readings_in(chans[i]) for i in self._rate_of)])
        ) if self._rate_of else None
        self.limits = spec.limits()
        rate_row = {i: len(chans) + r for r, i in enumerate(self._rate_of)}
        rows = [rate_row[self.channels[x.channel]] if x.on_rate else self.channels[x.channel]
                for x in self.limits]
        self.bank = ThresholdBank(
            np.array(rows, dtype=np.int64),
            np.array([-x.setpoint if x.direction == "fall" else x.setpoint
                      for x in self.limits]),
            np.array([x.direction in ("above", "rise") for x in self.limits]),
            np.array([x.deadband for x in self.limits]),
            on_delay=np.array([x.on_delay_s for x in self.limits]),
            off_delay=np.array([x.off_delay_s for x in self.limits]),
            latch=np.array([x.latch for x in self.limits], dtype=bool))
        self._exposed = [i for i, c in enumerate(chans) if c.exposure is not None]
        self._minute: int | None = None  # local minute of the last cycle (shift starts)
        self.exposure = ExposureBank(
            len(self._exposed),
            max_gap_s=np.array([chans[i].exposure.max_gap_s for i in self._exposed]),
            stel_limit=np.array([_nan(chans[i].exposure.stel) for i in self._exposed]),
            twa_limit=np.array([_nan(chans[i].exposure.twa) for i in self._exposed]),
            twa_mode=[chans[i].exposure.twa_mode for i in self._exposed],
        ) if self._exposed else None
        self._scored = [i for i, c in enumerate(chans) if c.anomaly]
        self.anomaly = AnomalyBank(len(self._scored)) if self._scored else None
        self.rules = list(spec.rules)
        terms = [(r, term) for r, rule in enumerate(self.rules) for term in rule.terms]
        self._terms = [term for _, term in terms]
        self._votes = np.array([rule.votes or len(rule.terms) for rule in self.rules],
                               dtype=np.int64)
        self.rule_bank = RuleBank(np.array([r for r, _ in terms], dtype=np.int64),
                                  np.array([rule.within_s for rule in self.rules]),
                                  self._votes) if self.rules else None

        self._keys = self._all_keys(spec)
        self._names = [c.name for c in chans]
        # Each flag array's alarm keys, row by row, and back (see _to_check).
        self._flag_keys = {fault: [f"{c.name}:{fault}" for c in chans]
                           for fault in SENSOR_FAULTS} | {
            kind: [f"{chans[i].name}:{kind}" for i in self._exposed]
            for kind in EXPOSURE.values()} | {
            "anomaly": [f"{chans[i].name}:anomaly" for i in self._scored]}
        self._flag_rows = {kind: {key: r for r, key in enumerate(keys)}
                           for kind, keys in self._flag_keys.items()}
        self._levels = {x.key: x.level for x in self.limits} | {
            r.key: r.level for r in self.rules} | {
            key: EXPOSURE_LEVEL[kind] for kind in EXPOSURE.values()
            for key in self._flag_keys[kind]}
        self.active: dict[str, ActiveAlarm] = {}
        self._orphans: list[ActiveAlarm] = []
        for key, alarm in (restored or {}).items():
            (self.active.__setitem__(key, alarm) if key in self._keys
             else self._orphans.append(alarm))
        self._unreliable: set[str] = set()
        _warm_up()
        self._sync_threshold_with_active()

    # --- building ---------------------------------------------------------------

    def _fault_bank(self, chans: list[ChannelSpec], spec: SiteSpec) -> SensorFaultBank | None:
        if not spec.pairs and not any(c.faults for c in chans):
            return None
        def per(name: str, default: float) -> np.ndarray:
            return np.array([_nan(getattr(c.faults, name)) if c.faults else default
                             for c in chans])
        return SensorFaultBank(
            len(chans), epsilon=np.array([c.faults.epsilon if c.faults else 0.0 for c in chans]),
            stuck_s=per("stuck_s", math.nan), max_rate=per("max_rate_per_s", math.nan),
            gap_s=per("gap_s", math.nan),
            pairs=[(self.channels[p.a], self.channels[p.b], p.tolerance, p.duration_s)
                   for p in spec.pairs])

    def _all_keys(self, spec: SiteSpec) -> set[str]:
        keys = {x.key for x in self.limits} | {r.key for r in self.rules}
        keys |= set(spec.fault_keys)
        for c in spec.channels:
            if c.faults or any(c.name in (p.a, p.b) for p in spec.pairs):
                keys |= {f"{c.name}:{f}" for f in SENSOR_FAULTS}
            if c.exposure:
                keys |= {f"{c.name}:{e}" for e in EXPOSURE.values()}
            if c.anomaly:
                keys.add(f"{c.name}:anomaly")
        return keys

    # --- persistence ------------------------------------------------------------

    def _banks(self) -> dict[str, tuple[Any, list[str]]]:
        names = [c.name for c in self.specs]
        banks = {"threshold": (self.bank, [x.key for x in self.limits]),
                 "faults": (self.faults, names),
                 "rate": (self.rates, [names[i] for i in self._rate_of]),
                 "exposure": (self.exposure, [names[i] for i in self._exposed]),
                 "anomaly": (self.anomaly, [names[i] for i in self._scored]),
                 "rules": (self.rule_bank, [f"{r.key}:{i}" for r in self.rules
                                            for i in range(len(r.terms))])}
        return {name: pair for name, pair in banks.items() if pair[0] is not None}

    def snapshot(self) -> CoreState:
        """The core's state, to store with a cycle so a restart continues from it."""
        return {name: (keys, bank.state()) for name, (bank, keys) in self._banks().items()}

    def restore(self, saved: CoreState) -> None:
        """Continue from a stored snapshot, row by key: rules added since start fresh,
        rules gone are dropped. Which alarms are active comes from the active alarms
        stored with the events, which are never older than the snapshot.
        """
        for name, (bank, keys) in self._banks().items():
            if name in saved:
                saved_keys, arrays = saved[name]
                bank.load(aligned(bank.state(), keys, saved_keys, arrays))
        self._sync_threshold_with_active()

    def _sync_threshold_with_active(self) -> None:
        for i, limit in enumerate(self.limits):
            self.bank.active[i] = limit.key in self.active
            if self.bank.active[i]:
                self.bank.condition[i] = True  # holds until readings say otherwise

    # --- judging ----------------------------------------------------------------

    def withdraw_orphans(self, ts_ms: int) -> Outcome:
        """End the restored alarms whose rule or device is no longer in the config."""
        out = Outcome()
        for alarm in self._orphans:
            out.events.append(Event(ts_ms, alarm.cls, "withdrawn", alarm.alarm_id,  # type: ignore[arg-type]
                                    alarm.key, {"reason": "no longer in the site config"}))
            out.ended.append(alarm.key)
        self._orphans.clear()
        return out

    def judge(self, values: dict[str, float], ts_ms: int, t: float | None = None) -> Outcome:
        """Run every rule on one poll result (channel -> value, NaN if no fresh reading).

        ``ts_ms`` is the wall time the events carry; ``t``, in seconds, is the time
        the kernels run on (default: the same), which the daemon keeps free of wall
        clock steps (edge_agent/clock.py). Every rule is stepped, not only those of
        the polled channels, so delays and windows run on time whichever device was
        polled.
        """
        x = np.full(len(self.specs), np.nan)
        for name, value in values.items():
            x[self.channels[name]] = value
        out = Outcome()
        self._step_kernels(x, ts_ms / 1000 if t is None else t, out, ts_ms)
        return out

    def _to_check(self, kind: str, flags: np.ndarray) -> list[int]:
        """The rows of ``flags`` whose alarm may have to change: flagged now, or active
        now. Every other row is neither, so it needs no look: a poll costs what is flagged
        or active, not a loop over every channel of the site, for every device polled.
        """
        rows = self._flag_rows[kind]
        return sorted({*np.flatnonzero(flags).tolist(),
                       *(rows[key] for key in self.active if key in rows)})

    def _step_kernels(self, x: np.ndarray, t: float, out: Outcome, ts_ms: int) -> None:
        names = self._names
        clean = x
        if self.faults is not None:
            self.faults.step(x, t)
            clean = self.faults.clean.copy()
            for fault in SENSOR_FAULTS:
                flags, keys = getattr(self.faults, fault), self._flag_keys[fault]
                for i in self._to_check(fault, flags):
                    key = keys[i]
                    if key in self._keys and bool(flags[i]) != (key in self.active):
                        out.extend(self._transition("fault", key, bool(flags[i]), ts_ms, {
                            "channel": names[i], "kind": fault, "value": _value(x[i])}))
        np.copyto(self._last, clean, where=~np.isnan(clean))

        slopes = np.full(len(self._rate_of), np.nan)
        if self.rates is not None:
            self.rates.step(clean[self._rate_of], t)
            slopes = self.rates.slope.copy()
            for r, i in enumerate(self._rate_of):
                if not math.isnan(slopes[r]):
                    self._last_slope[i] = slopes[r]

        if self.bank.step(np.concatenate([clean, slopes]), t):
            for i in np.flatnonzero(self.bank.changed):
                out.extend(self._limit_event(self.limits[i], bool(self.bank.active[i]), ts_ms))

        if self.exposure is not None:
            self.exposure.step(clean[self._exposed], t, self._shift_starts(t))
            for flag, kind in EXPOSURE.items():
                flags, keys = getattr(self.exposure, flag), self._flag_keys[kind]
                for r in self._to_check(kind, flags):
                    i, key, active = self._exposed[r], keys[r], bool(flags[r])
                    if active != (key in self.active):
                        out.extend(self._transition("alarm", key, active, ts_ms,
                                                    self._exposure_details(i, r, kind)))

        if self.anomaly is not None:
            scores = self.anomaly.step(clean[self._scored], t)
            flags, keys = self.anomaly.flagged, self._flag_keys["anomaly"]
            for r in self._to_check("anomaly", flags):
                i, key, active = self._scored[r], keys[r], bool(flags[r])
                if active != (key in self.active):
                    out.extend(self._transition("anomaly", key, active, ts_ms, {
                        "channel": names[i], "kind": "anomaly", "score": round(float(
                            scores[r]), 4), "value": _value(clean[i])}))

        if self.rule_bank is not None:
            self._compensate_votes()
            terms = np.array([self._term_holds(term) for term in self._terms], dtype=np.bool_)
            if self.rule_bank.step(terms, t):
                for r in np.flatnonzero(self.rule_bank.changed):
                    rule = self.rules[r]
                    out.extend(self._transition("alarm", rule.key,
                                                bool(self.rule_bank.active[r]), ts_ms,
                                                self._rule_details(rule)))

    def _compensate_votes(self) -> None:
        """A term on a faulty channel can no longer vote, so a rule needs one term fewer
        for each (never fewer than one): a fault never makes an alarm harder to raise
        (ALARM_MANAGEMENT.md §6.7; Touchpoint Pro 9.6.5 vote compensation).
        """
        faulty = self.faulty_channels()
        for r, rule in enumerate(self.rules):
            lost = sum(1 for t in rule.terms if t.channel in faulty)
            self.rule_bank.need[r] = max(1, self._votes[r] - lost)  # type: ignore[union-attr]

    def _shift_starts(self, t: float) -> np.ndarray:
        """Where a shift (or, without shifts, a day) starts between the last cycle and
        this one, in local time.
        """
        minute = int((t + time.localtime(t).tm_gmtoff) // 60)  # local minutes since 1970
        last, self._minute = self._minute, minute
        starts = np.zeros(len(self._exposed), np.bool_)
        if last is None or minute <= last:
            return starts
        for r, i in enumerate(self._exposed):
            start = self.specs[i].exposure.shift_start_min
            if start is None:
                start = 0  # no shifts: the peak rule's day starts at local midnight
            # the first minute after ``last`` that is the shift start, reached by now?
            if (start - last - 1) % 1440 <= minute - last - 1:
                starts[r] = True
        return starts

    def _term_holds(self, term: Any) -> bool:
        i = self.channels[term.channel]
        value = self._last[i] if term.kind in ("above", "below") else self._last_slope[i]
        if math.isnan(value):
            return False
        return {"above": value >= term.value, "below": value <= term.value,
                "rising": value >= term.value, "falling": value <= -term.value}[term.kind]

    def _limit_event(self, limit: LimitSpec, active: bool, ts_ms: int) -> Outcome:
        i = self.channels[limit.channel]
        reading = self._last_slope[i] if limit.on_rate else self._last[i]
        details = {"channel": limit.channel, "kind": "rate" if limit.on_rate else "threshold",
                   "level": limit.level, "direction": limit.direction,
                   "setpoint": limit.setpoint, "deadband": limit.deadband,
                   "latch": limit.latch, "value": _value(reading),
                   "unit": f"{limit.unit}/min" if limit.on_rate else limit.unit}
        return self._transition("alarm", limit.key, active, ts_ms, details)

    def _exposure_details(self, i: int, r: int, kind: str) -> dict[str, Any]:
        spec = self.specs[i].exposure
        bank = self.exposure
        return {"channel": self.specs[i].name, "kind": kind, "level": EXPOSURE_LEVEL[kind],
                "unit": self.specs[i].unit,
                "stel": _value(bank.stel[r]), "twa": _value(bank.twa[r]),
                "stel_limit": spec.stel, "twa_limit": spec.twa,
                "twa_mode": spec.twa_mode, "stel_coverage_s": _value(bank.stel_cov[r]),
                "twa_coverage_s": _value(bank.twa_cov[r])}

    def _rule_details(self, rule: RuleSpec) -> dict[str, Any]:
        return {"kind": "combined", "rule": rule.name, "level": rule.level,
                "description": rule.description, "within_s": rule.within_s,
                "votes": rule.votes or len(rule.terms),
                "terms": [{"channel": t.channel, "kind": t.kind, "value": t.value,
                           "reading": _value(self._last[self.channels[t.channel]]
                                             if t.kind in ("above", "below")
                                             else self._last_slope[self.channels[t.channel]])}
                          for t in rule.terms]}

    # --- faults reported by the caller, acknowledgements, reliability ----------

    def fault(self, key: str, active: bool, ts_ms: int, details: dict[str, Any]) -> Outcome:
        """Report a fault condition (e.g. ``gas1:comm_lost``); events only on a change."""
        if key not in self._keys:
            raise KeyError(f"unknown fault {key!r}")
        if active == (key in self.active):
            return Outcome()
        return self._transition("fault", key, active, ts_ms, details)

    def reset(self, key: str, ts_ms: int, by: str) -> Outcome:
        """A person reset the latched alarm ``key``, whose condition is gone: it ends at
        the next cycle. The caller checks that it may (lifecycle.AlarmBook).
        """
        alarm = self.active[key]
        self.bank.acked[[i for i, x in enumerate(self.limits) if x.key == key]] = True
        return Outcome(events=[Event(ts_ms, "alarm", "reset", alarm.alarm_id, key, {"by": by})])

    def latched(self) -> set[str]:
        """The active latching limits whose condition is gone: held until a reset."""
        held = self.bank.active & ~self.bank.condition & self.bank.latch
        return {self.limits[i].key for i in np.flatnonzero(held)}

    def reliability(self, ts_ms: int) -> Outcome:
        """Mark the active alarms of channels whose sensor or device has a fault as
        ``unreliable``, and as ``reliable`` again once every such fault has ended.
        """
        faulty = self.faulty_channels()
        out = Outcome()
        for key, alarm in self.active.items():
            if alarm.cls != "alarm":
                continue
            channels = self.channels_of(key)
            now = bool(channels & faulty)
            if now != (key in self._unreliable):
                (self._unreliable.add if now else self._unreliable.discard)(key)
                out.events.append(Event(ts_ms, "alarm", "unreliable" if now else "reliable",
                                        alarm.alarm_id, key, {
                                            "faulty_channels": sorted(channels & faulty)}))
        self._unreliable &= set(self.active)
        return out

    def faulty_channels(self) -> set[str]:
        """The channels whose sensor or device has an active fault."""
        faulty = set()
        for key, alarm in self.active.items():
            if alarm.cls == "fault":
                where = key.rsplit(":", 1)[0]
                faulty |= {c.name for c in self.specs if where in (c.name, c.device)}
        return faulty

    def channels_of(self, key: str) -> set[str]:
        """The channels the alarm ``key`` is about."""
        for rule in self.rules:
            if rule.key == key:
                return {t.channel for t in rule.terms}
        return {key.split(":", 1)[0]}

    def _transition(self, cls: EventClass, key: str, active: bool, ts_ms: int,
                    details: dict[str, Any]) -> Outcome:
        out = Outcome()
        if active:
            alarm = ActiveAlarm(key, self._new_id(), cls, ts_ms)
            self.active[key] = alarm
            out.raised.append(alarm)
            out.events.append(Event(ts_ms, cls, "raised", alarm.alarm_id, key, details))
        else:
            alarm = self.active.pop(key)
            out.ended.append(key)
            out.events.append(Event(ts_ms, cls, "returned_to_normal", alarm.alarm_id, key,
                                    {**details, "raised_ts": alarm.raised_ms}))
        return out

    def all_keys(self) -> Iterable[str]:
        """Every alarm and fault key of the site."""
        return self._keys

    def alarm_keys(self) -> list[str]:
        """The keys of class ``alarm``: limits, combined rules, exposure."""
        return sorted(self._levels)

    def level_of(self, key: str) -> int:
        """The alarm level of a key (limits, rules, exposure); 0 for faults and anomalies."""
        return self._levels.get(key, 0)

    def score(self, channel: str) -> float:
        """The channel's last anomaly score (NaN when it has no anomaly detector)."""
        i = self.channels[channel]
        if self.anomaly is None or i not in self._scored:
            return math.nan
        return float(self.anomaly.score[self._scored.index(i)])


def _value(v: float) -> float | None:
    return None if math.isnan(v) else round(float(v), 6)


_warmed = False


def _warm_up() -> None:
    """Load (or compile) every kernel once, on throwaway one-channel banks, so that the
    first poll does not wait for it and no site state starts from a made-up cycle.
    """
    global _warmed
    if _warmed:
        return
    one, t = np.array([math.nan]), 0.0
    ThresholdBank(np.array([0]), np.array([1.0]), np.array([True]), np.array([0.0])).step(one, t)
    SensorFaultBank(1).step(one, t)
    RateOfRiseBank(1).step(one, t)
    ExposureBank(1, max_gap_s=1.0).step(one, t)
    AnomalyBank(1).step(one, t)
    RuleBank(np.array([0]), np.array([0.0])).step(np.array([False]), t)
    _warmed = True
