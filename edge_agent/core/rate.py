"""Rate of rise per channel: the least-squares slope over a sliding window, with an
alarm on a sustained rise, for a whole poll cycle at once.

The estimate (SAFETY_REFERENCE.md §6.4: "linear regression over a 60–180 s window
to avoid noise-triggered alarms") at the cycle's time ``t``, over the good readings
``(t_i, x_i)`` with ``t - window_s <= t_i <= t``:

    slope = 60 · Σ (t_i − t̄)(x_i − x̄) / Σ (t_i − t̄)²    (unit of x per minute)

It is *valid* only with at least ``min_samples`` readings spanning at least
``min_span_s`` seconds (never from two points: two points fit any noise exactly);
otherwise the slope is NaN. The kernel keeps running sums over the window (O(1) per
reading), relative to an anchor reading that it moves, recomputing the sums, once it
is two windows old: so a large clock value or a long run costs no precision. For
white noise of standard deviation σ on
readings every Δ seconds, the slope's standard deviation is
``60 σ / sqrt(Σ (t_i − t̄)²) ≈ 60 σ · sqrt(12 / (n³ Δ²))``: 0.16 σ per minute for
n = 121 readings over 120 s.

A reading that is NaN or ±inf is skipped. A gap longer than the window restarts the
estimate (no reading is left in the window); so does a clock going back (the
readings before it cannot be placed on the new clock).

The alarm (§6.4: "rate >= ~1 °C/min sustained for >= 3 min" pre-warning, ">= ~8
°C/min" alarm; clearing deadband and on-delay after ALARM_MANAGEMENT.md §1.3):
    raised   once valid slopes have stayed >= rise_per_min for on_delay_s seconds;
    cleared  by a valid slope < rise_per_min − deadband;
    a cycle without a valid slope restarts the on-delay and never clears an alarm.
A NaN ``rise_per_min`` turns the alarm off (the slope is still given).

Arrays; C channels, N = the ring's capacity (readings kept per channel):
    x             float64[C]     this cycle's reading per channel, NaN where none
    t             float64        the cycle's time, seconds (finite)
    window_s      float64[C]     regression window, s (> 0)
    rise_per_min  float64[C]     alarm limit, unit of x per minute; NaN: no alarm
    min_samples   int64[C]       readings the window needs (>= 3)
    min_span_s    float64[C]     seconds the readings in the window must span (>= 0)
    on_delay_s    float64[C]     s the slope must stay at or above the limit (>= 0)
    deadband      float64[C]     unit of x per minute (>= 0)
    clock         float64[1]     state: the last cycle's time (NaN: no cycle yet)
    ring          float64[C, N, 2]  state: time and value of the last N good readings
    head          int64[C]       state: ring position of the next reading
    count         int64[C]       state: readings in the window (the newest ones)
    sums          float64[C, 6]  state: anchor time and value, then Σd, Σy, Σd², Σdy
                                 over the window, d and y relative to the anchor
    pending       float64[C]     state: since when the slope has been at or above the
                                 limit, before the alarm (NaN: not)
    active        bool[C]        state: the alarm is raised
    slope         float64[C]     output: per minute, NaN where not valid
    alarm         bool[C]        output: the alarm, as ``active``
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from edge_agent.core._bank import check_row, check_series, load_state, per_channel
from edge_agent.core._jit import JIT, njit


@njit(**JIT)
def _window_sums(c, ring, head, count, sums):
    """Recompute channel c's sums over its ``count`` newest readings, anchored at the
    newest one (so that the running sums never grow far from zero).
    """
    cap = ring.shape[1]
    newest = (head[c] + cap - 1) % cap
    at, ax = ring[c, newest, 0], ring[c, newest, 1]
    sd = sy = sdd = sdy = 0.0
    for j in range(count[c]):
        pos = (head[c] + cap - 1 - j) % cap
        d, y = ring[c, pos, 0] - at, ring[c, pos, 1] - ax
        sd += d
        sy += y
        sdd += d * d
        sdy += d * y
    sums[c, 0], sums[c, 1], sums[c, 2] = at, ax, sd
    sums[c, 3], sums[c, 4], sums[c, 5] = sy, sdd, sdy


@njit(**JIT)
def rate_step(x, t, window_s, rise_per_min, min_samples, min_span_s, on_delay_s, deadband,
              clock, ring, head, count, sums, pending, active, slope, alarm):
    """Advance every channel by one cycle; return how many channels are in alarm.

    A ramp of 1.5 °C/min read every 10 s, with a 1 °C/min limit to hold for 30 s; the
    estimate needs 5 readings over half the 60 s window, so it is valid from t = 40 s:

    >>> import numpy as np
    >>> bank = RateOfRiseBank(1, window_s=60.0, rise_per_min=1.0, on_delay_s=30.0)
    >>> seen = {}
    >>> for t in range(0, 100, 10):
    ...     _ = bank.step(np.array([20.0 + 1.5 * t / 60.0]), float(t))
    ...     seen[t] = (round(float(bank.slope[0]), 6), bool(bank.alarm[0]))
    >>> seen[30], seen[40], seen[60], seen[70]
    ((nan, False), (1.5, False), (1.5, False), (1.5, True))
    """
    if not math.isfinite(t):  # refused by the bank; here: no time passes
        t = clock[0] if math.isfinite(clock[0]) else 0.0
    back = not math.isnan(clock[0]) and t < clock[0]
    clock[0] = t
    cap = ring.shape[1]
    alarms = 0
    for c in range(x.shape[0]):  # restarts and re-anchoring: rare, kept out of the next loop
        if back:
            count[c] = 0
            pending[c] = math.nan
        elif count[c] > 0 and not t - sums[c, 0] <= 2.0 * window_s[c]:
            _window_sums(c, ring, head, count, sums)  # re-anchor (NaN: loaded)
    for c in range(x.shape[0]):
        n, h = count[c], head[c]  # readings in the window; where the next one goes
        oldest = t - window_s[c]
        at, ax, sd, sy, sdd, sdy = (sums[c, 0], sums[c, 1], sums[c, 2], sums[c, 3],
                                    sums[c, 4], sums[c, 5])
        while n > 0:  # readings that fell out of the window, oldest first
            pos = h - n if h >= n else h - n + cap
            if ring[c, pos, 0] >= oldest:
                break
            d, y = ring[c, pos, 0] - at, ring[c, pos, 1] - ax
            sd, sy, sdd, sdy = sd - d, sy - y, sdd - d * d, sdy - d * y
            n -= 1
        v = x[c]
        if math.isfinite(v):
            if n == cap:  # the ring is full: its oldest reading leaves the window
                d, y = ring[c, h, 0] - at, ring[c, h, 1] - ax
                sd, sy, sdd, sdy = sd - d, sy - y, sdd - d * d, sdy - d * y
                n -= 1
            if n == 0:
                at, ax, sd, sy, sdd, sdy = t, v, 0.0, 0.0, 0.0, 0.0
            ring[c, h, 0] = t
            ring[c, h, 1] = v
            h = h + 1 if h + 1 < cap else 0
            n += 1
            d, y = t - at, v - ax
            sd, sy, sdd, sdy = sd + d, sy + y, sdd + d * d, sdy + d * y
        count[c], head[c] = n, h
        sums[c, 0], sums[c, 1], sums[c, 2] = at, ax, sd
        sums[c, 3], sums[c, 4], sums[c, 5] = sy, sdd, sdy
        s = math.nan
        if n >= 2 and n >= min_samples[c]:
            last = ring[c, h - 1 if h > 0 else cap - 1, 0]
            first = ring[c, h - n if h >= n else h - n + cap, 0]
            if last - first >= min_span_s[c] and last > first:
                s = 60.0 * (n * sdy - sd * sy) / (n * sdd - sd * sd)
        slope[c] = s
        limit = rise_per_min[c]
        if math.isnan(limit):
            active[c] = False
            pending[c] = math.nan
        elif math.isnan(s):
            pending[c] = math.nan
        elif active[c]:
            if s < limit - deadband[c]:
                active[c] = False
        elif s >= limit:
            if math.isnan(pending[c]):
                pending[c] = t
            if t - pending[c] >= on_delay_s[c]:
                active[c] = True
                pending[c] = math.nan
        else:
            pending[c] = math.nan
        alarm[c] = active[c]
        if active[c]:
            alarms += 1
    return alarms


@njit(**JIT)
def rate_run(x, t, window_s, rise_per_min, min_samples, min_span_s, on_delay_s, deadband,
             clock, ring, head, count, sums, pending, active, slope, alarm):
    """A recorded series: row k of ``x[T, C]``, ``t[T]`` is one cycle, exactly as
    ``rate_step``; outputs are ``[T, C]``.
    """
    for k in range(x.shape[0]):
        rate_step(x[k], t[k], window_s, rise_per_min, min_samples, min_span_s, on_delay_s,
                  deadband, clock, ring, head, count, sums, pending, active, slope[k],
                  alarm[k])


class RateOfRiseTwin:
    """Plain-Python statement of the rule for one channel, written from the text above:
    the least-squares slope of the window's readings (sums by ``math.fsum``), then the
    alarm's on-delay and deadband.
    """

    def __init__(self, window_s: float, rise_per_min: float = math.nan, min_samples: int = 5,
                 min_span_s: float = 0.0, on_delay_s: float = 0.0, deadband: float = 0.0,
                 capacity: int = 512) -> None:
        self.window_s, self.rise_per_min = window_s, rise_per_min
        self.min_samples, self.min_span_s = min_samples, min_span_s
        self.on_delay_s, self.deadband, self.capacity = on_delay_s, deadband, capacity
        self.readings: list[tuple[float, float]] = []  # good readings since the clock went back
        self.last_t = math.nan
        self.pending: float | None = None
        self.active = False

    def estimate(self, t: float) -> float:
        window = [(ti, xi) for ti, xi in self.readings[-self.capacity:]
                  if ti >= t - self.window_s]
        times = [ti for ti, _ in window]
        if len(window) < max(2, self.min_samples) or not times:
            return math.nan
        span = max(times) - min(times)
        if span < self.min_span_s or span <= 0:
            return math.nan
        n = len(window)
        t_bar = math.fsum(times) / n
        x_bar = math.fsum(xi for _, xi in window) / n
        sxy = math.fsum((ti - t_bar) * (xi - x_bar) for ti, xi in window)
        sxx = math.fsum((ti - t_bar) ** 2 for ti in times)
        return 60.0 * sxy / sxx

    def step(self, value: float, t: float) -> tuple[float, bool]:
        """Take one reading (NaN: none) at time t; return (slope per minute, alarm)."""
        if t < self.last_t:
            self.readings, self.pending = [], None
        self.last_t = t
        if math.isfinite(value):
            self.readings.append((t, value))
        slope = self.estimate(t)
        if math.isnan(self.rise_per_min):
            self.active, self.pending = False, None
        elif math.isnan(slope):
            self.pending = None
        elif self.active:
            self.active = slope >= self.rise_per_min - self.deadband
        elif slope >= self.rise_per_min:
            self.pending = t if self.pending is None else self.pending
            if t - self.pending >= self.on_delay_s:
                self.active, self.pending = True, None
        else:
            self.pending = None
        return slope, self.active


class RateOfRiseBank:
    """Rate-of-rise estimates and alarms of C channels, checked once, stepped by the
    compiled kernel; state handed out for persistence.

    Args:
        channels: number of channels C.
        window_s: regression window, s (> 0), scalar or one per channel.
        rise_per_min: alarm limit per channel, unit per minute; NaN: no alarm.
        min_samples: readings a valid estimate needs (>= 3).
        min_span_s: seconds these readings must span (>= 0); default half the window.
        on_delay_s: seconds the slope must stay at or above the limit (>= 0).
        deadband: how far below the limit the slope must fall to clear (>= 0).
        capacity: readings kept per channel; the window holds at most this many, so
            make it at least ``window_s`` / the poll interval.

    After ``step`` the outputs are the attributes ``slope`` and ``alarm`` (overwritten
    by the next call); ``run`` returns them as ``[T, C]`` arrays for a recorded series.
    """

    STATE = ("clock", "ring", "head", "count", "sums", "pending", "active")
    OUTPUTS = ("slope", "alarm")

    def __init__(self, channels: int, *, window_s: float | np.ndarray = 120.0,
                 rise_per_min: float | np.ndarray = math.nan,
                 min_samples: int | np.ndarray = 5,
                 min_span_s: float | np.ndarray | None = None,
                 on_delay_s: float | np.ndarray = 0.0, deadband: float | np.ndarray = 0.0,
                 capacity: int = 512) -> None:
        if not isinstance(channels, int | np.integer) or channels < 1:
            raise ValueError(f"channels: must be a whole number >= 1, got {channels!r}")
        if not isinstance(capacity, int | np.integer) or capacity < 3:
            raise ValueError(f"capacity: must be a whole number >= 3 (readings kept per "
                             f"channel), got {capacity!r}")
        n = self.channels = int(channels)
        self.window_s = per_channel("window_s", window_s, np.float64, n)
        if not ((self.window_s > 0) & np.isfinite(self.window_s)).all():
            raise ValueError(f"window_s: must be finite and > 0 s, got {self.window_s.tolist()}")
        self.rise_per_min = per_channel("rise_per_min", rise_per_min, np.float64, n)
        if np.isinf(self.rise_per_min).any():
            raise ValueError("rise_per_min: must be finite, or NaN for no alarm")
        self.min_samples = per_channel("min_samples", min_samples, np.int64, n)
        if (self.min_samples < 3).any():
            raise ValueError(f"min_samples: must be >= 3 (two points fit any noise exactly), "
                             f"got {self.min_samples.tolist()}")
        if (self.min_samples > capacity).any():
            raise ValueError(f"min_samples: must be <= capacity ({capacity}), the readings "
                             "kept per channel")
        self.min_span_s = per_channel(
            "min_span_s", self.window_s / 2 if min_span_s is None else min_span_s, np.float64, n)
        self.on_delay_s = per_channel("on_delay_s", on_delay_s, np.float64, n)
        self.deadband = per_channel("deadband", deadband, np.float64, n)
        for name in ("min_span_s", "on_delay_s", "deadband"):
            value = getattr(self, name)
            if not ((value >= 0) & np.isfinite(value)).all():
                raise ValueError(f"{name}: must be finite and >= 0, got {value.tolist()}")
        if (self.min_span_s > self.window_s).any():
            raise ValueError("min_span_s: must be <= window_s, or no estimate is ever valid")
        self.clock = np.full(1, np.nan)
        self.ring = np.zeros((n, capacity, 2))
        self.head, self.count = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.sums = np.full((n, 6), np.nan)
        self.pending = np.full(n, np.nan)
        self.active = np.zeros(n, np.bool_)
        self.slope, self.alarm = np.full(n, np.nan), np.zeros(n, np.bool_)

    def _params(self) -> tuple:
        return (self.window_s, self.rise_per_min, self.min_samples, self.min_span_s,
                self.on_delay_s, self.deadband, *(getattr(self, name) for name in self.STATE))

    def step(self, x: np.ndarray, t: float) -> int:
        """One poll cycle: ``x`` float64[C] (NaN: no good reading), ``t`` seconds.
        Returns how many channels are in alarm.
        """
        check_row("x", x, np.float64, self.channels)
        if not math.isfinite(t):
            raise ValueError(f"t: must be a finite time in seconds, got {t!r}")
        return rate_step(x, float(t), *self._params(), self.slope, self.alarm)

    def run(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """A recorded series ``x[T, C]``, ``t[T]``, continuing from the current state;
        returns ``slope`` and ``alarm`` as ``[T, C]``.
        """
        x, t = check_series(x, t, self.channels)
        out = {"slope": np.zeros(x.shape), "alarm": np.zeros(x.shape, np.bool_)}
        rate_run(x, t, *self._params(), out["slope"], out["alarm"])
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).copy() for name in self.STATE}

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        load_state(self, state)
