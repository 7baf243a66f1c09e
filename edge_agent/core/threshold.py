"""Two-level alarm limits with a clearing deadband, on- and off-delays and latching, for
a whole poll cycle at once.

Each limit watches one channel. Its *condition* is reached when the value is >= the
setpoint (a limit above: toxic and flammable gases, high O2) or <= it (a limit below:
low O2); once reached it holds until the value is back past the setpoint by more
than the deadband, so a reading hovering at the setpoint does not chatter (OPC UA
Part 9 B.1.5). The *alarm* follows the condition with delays (OPC UA B.1.5,
ALARM_MANAGEMENT.md §1.3): it is raised once the condition has held for
``on_delay`` seconds and ends once the condition has been gone for ``off_delay``
seconds. A latching alarm ends only when, in addition, a person has reset it
(``acked``): a reset never ends an alarm whose condition still holds (gas panels
refuse a reset while gas is present, ALARM_MANAGEMENT.md §2).

A NaN reading (failed or missing) leaves the condition as it is; the delays keep
running on the condition last seen, and the missing reading is a fault elsewhere.

Arrays, one entry per limit (length L); ``values`` has one entry per channel:
    values     float64[C]  this cycle's reading per channel, NaN where none
    t          float64     the cycle's time, seconds
    channel    int64[L]    index into ``values`` of the channel the limit watches
    setpoint   float64[L]  in the channel's unit
    above      bool[L]     True for a limit above its setpoint, False for one below
    deadband   float64[L]  >= 0, in the channel's unit
    on_delay   float64[L]  seconds the condition must hold before the alarm
    off_delay  float64[L]  seconds the condition must be gone before the alarm ends
    latch      bool[L]     the alarm ends only once reset
    condition  bool[L]     state: the setpoint reached (with the deadband)
    since      float64[L]  state: when ``condition`` last changed (NaN: never)
    active     bool[L]     state: the alarm is raised
    acked      bool[L]     state: reset by a person since it was raised (set by the engine)
    changed    bool[L]     output: True where ``active`` flipped in this call
"""

from __future__ import annotations

import math

import numpy as np

from edge_agent.core._jit import JIT, njit


@njit(**JIT)
def threshold_step(values, t, channel, setpoint, above, deadband, on_delay, off_delay, latch,
                   condition, since, active, acked, changed):
    """Advance every limit by one cycle; return how many alarms were raised or ended.

    >>> import numpy as np
    >>> bank = ThresholdBank(np.array([0]), np.array([24.0]), np.array([True]),
    ...                      np.array([1.0]), on_delay=np.array([5.0]))
    >>> [bank.step(np.array([co]), t) for co, t in ((30.0, 0.0), (30.0, 4.0), (30.0, 5.0))]
    [0, 0, 1]
    >>> bool(bank.active[0])
    True
    """
    n = 0
    for i in range(setpoint.shape[0]):
        changed[i] = False
        x = values[channel[i]]
        if not math.isnan(x):
            if above[i]:
                now = x >= setpoint[i] - deadband[i] if condition[i] else x >= setpoint[i]
            else:
                now = x <= setpoint[i] + deadband[i] if condition[i] else x <= setpoint[i]
            if now != condition[i] or math.isnan(since[i]):
                if now != condition[i]:
                    condition[i] = now
                since[i] = t
        if math.isnan(since[i]):
            continue  # no reading yet
        held = t - since[i]
        if not active[i]:
            if condition[i] and held >= on_delay[i]:
                active[i] = True
                acked[i] = False
                changed[i] = True
                n += 1
        elif not condition[i] and held >= off_delay[i] and (acked[i] or not latch[i]):
            active[i] = False
            changed[i] = True
            n += 1
    return n


@njit(**JIT)
def threshold_run(values, t, channel, setpoint, above, deadband, on_delay, off_delay, latch,
                  condition, since, active, acked, changed, out_active):
    """A recorded series: row k of ``values[T, C]``, ``t[T]`` is one cycle, exactly as
    ``threshold_step``; ``out_active[T, L]`` is the alarm state after each cycle.
    """
    for k in range(values.shape[0]):
        threshold_step(values[k], t[k], channel, setpoint, above, deadband, on_delay,
                       off_delay, latch, condition, since, active, acked, changed)
        for i in range(active.shape[0]):
            out_active[k, i] = active[i]


class LimitTwin:
    """Plain-Python statement of the rule for one limit, written from the text above."""

    def __init__(self, setpoint: float, direction: str, deadband: float = 0.0,
                 on_delay: float = 0.0, off_delay: float = 0.0, latch: bool = False) -> None:
        self.setpoint, self.direction, self.deadband = setpoint, direction, deadband
        self.on_delay, self.off_delay, self.latch = on_delay, off_delay, latch
        self.condition, self.since, self.active, self.acked = False, math.nan, False, False

    def reached(self, value: float) -> bool:
        """Whether the setpoint is reached, given where the condition stands now."""
        margin = self.deadband if self.condition else 0.0
        if self.direction == "above":
            return value >= self.setpoint - margin
        return value <= self.setpoint + margin

    def step(self, value: float, t: float) -> bool:
        """Take one reading (NaN: none) at time t; return whether the alarm flipped."""
        if not math.isnan(value):
            now = self.reached(value)
            if now != self.condition or math.isnan(self.since):
                self.condition, self.since = now, t
        if math.isnan(self.since):
            return False
        if not self.active and self.condition and t - self.since >= self.on_delay:
            self.active, self.acked = True, False
            return True
        ends = not self.condition and t - self.since >= self.off_delay
        if self.active and ends and (self.acked or not self.latch):
            self.active = False
            return True
        return False


class ThresholdBank:
    """The limits of a site as arrays, checked once, stepped by the compiled kernel."""

    STATE = ("condition", "since", "active", "acked")

    def __init__(self, channel: np.ndarray, setpoint: np.ndarray, above: np.ndarray,
                 deadband: np.ndarray, *, on_delay: np.ndarray | None = None,
                 off_delay: np.ndarray | None = None, latch: np.ndarray | None = None) -> None:
        n = len(setpoint)
        zeros = np.zeros(n)
        self.channel = _array("channel", channel, np.int64, n)
        self.setpoint = _array("setpoint", setpoint, np.float64, n)
        self.above = _array("above", above, np.bool_, n)
        self.deadband = _array("deadband", deadband, np.float64, n)
        self.on_delay = _array("on_delay", zeros if on_delay is None else on_delay, np.float64, n)
        self.off_delay = _array("off_delay", zeros if off_delay is None else off_delay,
                                np.float64, n)
        self.latch = _array("latch", np.zeros(n, bool) if latch is None else latch, np.bool_, n)
        for name in ("deadband", "on_delay", "off_delay"):
            if (getattr(self, name) < 0).any() or not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"{name}: must be finite and >= 0")
        self.condition = np.zeros(n, np.bool_)
        self.since = np.full(n, np.nan)
        self.active = np.zeros(n, np.bool_)
        self.acked = np.zeros(n, np.bool_)
        self.changed = np.zeros(n, np.bool_)

    def step(self, values: np.ndarray, t: float) -> int:
        return threshold_step(values, float(t), self.channel, self.setpoint, self.above,
                              self.deadband, self.on_delay, self.off_delay, self.latch,
                              self.condition, self.since, self.active, self.acked, self.changed)

    def run(self, values: np.ndarray, t: np.ndarray) -> np.ndarray:
        """A recorded series ``values[T, C]``, ``t[T]``, continuing from the current
        state; returns the alarm state after each cycle, ``[T, L]``.
        """
        values = np.ascontiguousarray(values, dtype=np.float64)
        t = np.ascontiguousarray(t, dtype=np.float64)
        if values.ndim != 2 or t.shape != (values.shape[0],):
            raise ValueError(f"values: expected (T, C) with t of (T,), got {values.shape} "
                             f"and {t.shape}")
        out = np.zeros((values.shape[0], len(self.setpoint)), np.bool_)
        threshold_run(values, t, self.channel, self.setpoint, self.above, self.deadband,
                      self.on_delay, self.off_delay, self.latch, self.condition, self.since,
                      self.active, self.acked, self.changed, out)
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).copy() for name in self.STATE}

    def load(self, state: dict[str, np.ndarray]) -> None:
        for name in self.STATE:
            getattr(self, name)[:] = state[name]


def _array(name: str, value: np.ndarray, dtype: type, n: int) -> np.ndarray:
    array = np.ascontiguousarray(value, dtype=dtype)
    if array.shape != (n,):
        raise ValueError(f"{name}: expected {n} entries (one per limit), got shape {array.shape}")
    return array
