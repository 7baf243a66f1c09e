"""From kernel flags to alarm and fault events, each episode with its own id.

The engine holds the limit arrays of the site, runs the threshold kernel on each
poll result, and turns every state change into an event: ``raised`` when a
limit is reached, ``returned_to_normal`` when it clears. Active alarms come back
from the buffer after a restart with the id they were raised with, so an alarm
raised before a restart ends with the same id after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.core import ThresholdBank
from edge_agent.records import ActiveAlarm, CoreState, Event, EventClass

__all__ = ["AlarmEngine", "LimitSpec", "Outcome"]


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One alarm limit of one channel, as the engine needs it."""

    channel: str
    level: int
    direction: str  # "above" | "below"
    setpoint: float
    deadband: float
    unit: str
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0
    latch: bool = False

    @property
    def key(self) -> str:
        return f"{self.channel}:{self.direction}:{self.level}"


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


def _new_id() -> str:
    return uuid.uuid4().hex


def aligned(now: dict[str, np.ndarray], keys: list[str], saved_keys: list[str],
            saved: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``now`` with the rows of ``saved`` copied in where their keys match."""
    index = {key: i for i, key in enumerate(keys)}
    pairs = [(index[key], j) for j, key in enumerate(saved_keys) if key in index]
    out = {name: array.copy() for name, array in now.items()}
    for name, array in out.items():
        if name in saved and pairs and saved[name].shape[1:] == array.shape[1:]:
            rows, saved_rows = zip(*pairs, strict=True)
            array[list(rows)] = saved[name][list(saved_rows)]
    return out


class AlarmEngine:
    """Alarm limits and fault conditions of one site."""

    def __init__(self, channels: Sequence[str], limits: Sequence[LimitSpec],
                 fault_keys: Iterable[str] = (), restored: dict[str, ActiveAlarm] | None = None,
                 new_id: Callable[[], str] = _new_id) -> None:
        self.channels = {name: i for i, name in enumerate(channels)}
        self.limits = list(limits)
        self._new_id = new_id
        self.bank = ThresholdBank(
            np.array([self.channels[x.channel] for x in limits], dtype=np.int64),
            np.array([x.setpoint for x in limits]),
            np.array([x.direction == "above" for x in limits]),
            np.array([x.deadband for x in limits]),
            on_delay=np.array([x.on_delay_s for x in limits]),
            off_delay=np.array([x.off_delay_s for x in limits]),
            latch=np.array([x.latch for x in limits], dtype=bool))
        self._last = np.full(len(self.channels), np.nan)  # last reading per channel
        self._fault_keys = set(fault_keys)
        # Load (or compile) the kernel now, not on the first reading: a NaN-only
        # cycle before any reading changes no state.
        self.bank.step(np.full(max(1, len(self.channels)), np.nan), 0.0)
        self.active: dict[str, ActiveAlarm] = {}
        self._orphans: list[ActiveAlarm] = []
        for key, alarm in (restored or {}).items():
            index = self._limit_index(key)
            if index is not None:
                # Raised before the restart: the alarm holds until readings say otherwise.
                self.bank.active[index] = self.bank.condition[index] = True
            if index is not None or key in self._fault_keys:
                self.active[key] = alarm
            else:
                self._orphans.append(alarm)

    def snapshot(self) -> CoreState:
        """The core's state, to store with a cycle so a restart continues from it."""
        return {"threshold": ([x.key for x in self.limits], self.bank.state())}

    def restore(self, saved: CoreState) -> None:
        """Continue from a stored snapshot, row by key: limits added since start fresh,
        limits gone are dropped. Which alarms are active comes from the active alarms
        stored with the events, which are never older than the snapshot.
        """
        if "threshold" in saved:
            keys, arrays = saved["threshold"]
            self.bank.load(aligned(self.bank.state(), [x.key for x in self.limits], keys,
                                   arrays))
        for i, limit in enumerate(self.limits):
            self.bank.active[i] = limit.key in self.active
            if self.bank.active[i]:
                self.bank.condition[i] = True

    def _limit_index(self, key: str) -> int | None:
        for i, limit in enumerate(self.limits):
            if limit.key == key:
                return i
        return None

    def withdraw_orphans(self, ts_ms: int) -> Outcome:
        """End the restored alarms whose limit or device is no longer in the config."""
        out = Outcome()
        for alarm in self._orphans:
            out.events.append(Event(ts_ms, alarm.cls, "withdrawn", alarm.alarm_id,  # type: ignore[arg-type]
                                    alarm.key, {"reason": "no longer in the site config"}))
            out.ended.append(alarm.key)
        self._orphans.clear()
        return out

    def judge(self, values: dict[str, float], ts_ms: int) -> Outcome:
        """Run the limits on one poll result (channel -> value, NaN if unknown).

        Every limit is stepped, not only those of the polled channels, so on- and
        off-delays run on time whichever device was polled.
        """
        vector = np.full(len(self.channels), np.nan)
        for name, value in values.items():
            vector[self.channels[name]] = value
        np.copyto(self._last, vector, where=~np.isnan(vector))
        out = Outcome()
        if not self.bank.step(vector, ts_ms / 1000):
            return out
        for i in np.flatnonzero(self.bank.changed):
            limit = self.limits[i]
            value = self._last[self.channels[limit.channel]]
            details = {"channel": limit.channel, "kind": "threshold", "level": limit.level,
                       "direction": limit.direction, "setpoint": limit.setpoint,
                       "deadband": limit.deadband, "latch": limit.latch,
                       "value": None if np.isnan(value) else float(value), "unit": limit.unit}
            out.extend(self._transition("alarm", limit.key, bool(self.bank.active[i]), ts_ms,
                                        details))
        return out

    def ack(self, key: str, ts_ms: int, by: str) -> Outcome:
        """A person acknowledged the alarm ``key``; a latched alarm whose condition is
        gone ends at the next cycle. KeyError if no such alarm is active.
        """
        alarm = self.active[key]
        index = self._limit_index(key)
        if index is not None:
            self.bank.acked[index] = True
        return Outcome(events=[Event(ts_ms, alarm.cls, "acknowledged", alarm.alarm_id,  # type: ignore[arg-type]
                                     key, {"by": by})])

    def fault(self, key: str, active: bool, ts_ms: int, details: dict[str, Any]) -> Outcome:
        """Report a fault condition (e.g. ``gas1:comm_lost``); events only on a change."""
        if key not in self._fault_keys:
            raise KeyError(f"unknown fault {key!r}")
        if active == (key in self.active):
            return Outcome()
        return self._transition("fault", key, active, ts_ms, details)

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
