"""Sensor faults per channel: stuck (flatline), physically impossible spike, sample gap,
and drift against a redundant sensor, for a whole poll cycle at once.

Each fault is a flag per channel, reported and never dropped. A *reading* is a finite
value of ``x`` (NaN or ±inf: none). The rules, in the order the kernel applies them:

spike
    A reading is a spike when it moved from the previous reading faster than the
    physics allows, ``|x − x_prev| > max_rate · (t − t_prev)``, and, if the previous
    reading was itself a spike, also from the last reading that was not. So an
    isolated spike is flagged once and the return to the true value is not, and a real
    step (faster than ``max_rate``) costs one reading: the next one confirms the new
    level. ``spike`` is True in the cycle of that reading only. A spike must not feed
    the alarms: ``clean`` is the reading where it is neither missing nor a spike, NaN
    otherwise, and is what the other rules here use (and what the alarm kernels
    should be given). The first reading, and the first after the clock went back, is
    not judged. ``max_rate`` is the fastest change the sensor can show, per second
    (its own response time bounds it); NaN turns the rule off.
stuck
    A live gas sensor always shows some noise. A *stretch* starts at a clean reading
    that is more than ``epsilon`` away from the first reading of the current stretch.
    ``stuck`` is raised at a clean reading once the stretch has lasted ``stuck_s``
    seconds, and cleared once that condition has been false for ``stuck_s`` seconds
    (judged at clean readings: with no reading, nothing changes). NaN ``stuck_s``: off.
gap
    No reading for more than ``gap_s`` seconds (since the last one, or since the first
    cycle), judged every cycle. Cleared once readings have come without such a gap
    for ``gap_s`` seconds. Spikes count as readings here: the sensor is talking.
    NaN ``gap_s``: off.
drift
    For each pair ``(a, b, tolerance, duration)``: while both channels have a clean
    reading no older than their ``gap_s``, the pair is compared on those last clean
    readings, each cycle; ``|x_a − x_b| > tolerance`` for ``duration`` seconds in a row
    raises the pair, and ``<= tolerance`` for ``duration`` seconds in a row clears it.
    A cycle where the pair cannot be compared restarts both delays and changes no
    flag. ``drift`` is True on every channel of a raised pair (a channel may be in
    several pairs).

Clock: a clock that goes back counts as no time passing: every stored time moves
back with it, so no duration grows or shrinks across the jump.

Arrays; C channels, P pairs:
    x            float64[C]  this cycle's reading per channel, NaN where none
    t            float64     the cycle's time, seconds (finite)
    epsilon      float64[C]  stuck: largest change that is still no change (>= 0)
    stuck_s      float64[C]  stuck: seconds; NaN: off
    max_rate     float64[C]  spike: unit of x per second; NaN: off
    gap_s        float64[C]  gap: seconds; NaN: off
    pair_a       int64[P]    drift: channel index a
    pair_b       int64[P]    drift: channel index b
    pair_tol     float64[P]  drift: tolerance, unit of x (>= 0)
    pair_s       float64[P]  drift: seconds (>= 0)
    clock        float64[1]  state: the last cycle's time (NaN: no cycle yet)
    recv_t       float64[C]  state: time of the last reading (or of the first cycle)
    prev_x, prev_t           float64[C]  state: the previous reading (NaN: none)
    prev_spike   bool[C]     state: it was a spike
    ref_x, ref_t float64[C]  state: the last clean reading (NaN: none)
    stretch_x, stretch_t     float64[C]  state: first reading of the current stretch
    stuck_on     bool[C]     state: stuck raised
    stuck_off    float64[C]  state: since when its condition has been false (NaN: not)
    gap_on       bool[C]     state: gap raised
    gap_off      float64[C]  state: since when its condition has been false (NaN: not)
    pair_on      float64[P]  state: since when the pair has differed (NaN: not)
    pair_off     float64[P]  state: since when the pair has agreed (NaN: not)
    pair_active  bool[P]     state: the pair is raised
    clean        float64[C]  output: the reading if it is neither missing nor a spike
    stuck, spike, gap, drift bool[C]  outputs
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from edge_agent.core._bank import check_row, check_series, load_state, per_channel
from edge_agent.core._jit import JIT, njit


@njit(**JIT)
def _off_delayed(i, condition, t, off_s, on, off_since):
    """Raise flag i with its condition; clear it once the condition has been false for
    ``off_s`` seconds.
    """
    if condition:
        on[i] = True
        off_since[i] = math.nan
    elif on[i]:
        if math.isnan(off_since[i]):
            off_since[i] = t
        if t - off_since[i] >= off_s:
            on[i] = False
            off_since[i] = math.nan


@njit(**JIT)
def sensor_faults_step(x, t, epsilon, stuck_s, max_rate, gap_s, pair_a, pair_b, pair_tol,
                       pair_s, clock, recv_t, prev_x, prev_t, prev_spike, ref_x, ref_t,
                       stretch_x, stretch_t, stuck_on, stuck_off, gap_on, gap_off, pair_on,
                       pair_off, pair_active, clean, stuck, spike, gap, drift):
    """Advance every channel and pair by one cycle; return how many channels show a fault.

    Channel 0 reads 5.0 ppm and nothing else; channel 1 is alive, spikes to 50 ppm at
    t = 20 s (more than 1 ppm/s), then falls silent from 30 s to 70 s:

    >>> import numpy as np
    >>> nan = float("nan")
    >>> bank = SensorFaultBank(2, epsilon=0.05, stuck_s=60.0, max_rate=1.0, gap_s=15.0)
    >>> out = bank.run(np.array([[5.0, 5.1], [5.0, 5.3], [5.0, 50.0], [5.0, 5.2],
    ...                          [5.0, nan], [5.0, nan], [5.0, nan], [5.0, 5.0]]),
    ...                np.arange(0.0, 80.0, 10.0))
    >>> out["stuck"][:, 0].astype(int).tolist()
    [0, 0, 0, 0, 0, 0, 1, 1]
    >>> out["spike"][:, 1].astype(int).tolist(), float(out["clean"][2, 1])
    ([0, 0, 1, 0, 0, 0, 0, 0], nan)
    >>> out["gap"][:, 1].astype(int).tolist()  # held 15 s after the readings return
    [0, 0, 0, 0, 0, 1, 1, 1]
    """
    if not math.isfinite(t):  # refused by the bank; here: no time passes
        t = clock[0] if math.isfinite(clock[0]) else 0.0
    back = t - clock[0] if t < clock[0] else 0.0  # False while clock is NaN
    clock[0] = t
    if back < 0.0:  # a loop of its own: rare, and kept out of the common one
        for c in range(x.shape[0]):
            recv_t[c] += back
            ref_t[c] += back
            stretch_t[c] += back
            stuck_off[c] += back
            gap_off[c] += back
            prev_x[c] = math.nan  # the time since the previous reading is unknown
    for c in range(x.shape[0]):
        if math.isnan(recv_t[c]):
            recv_t[c] = t  # the first cycle: a gap counts from here
        v = x[c]
        spike[c] = False
        clean[c] = math.nan
        if math.isfinite(v):
            recv_t[c] = t
            if not math.isnan(prev_x[c]) and not math.isnan(max_rate[c]):
                fast = abs(v - prev_x[c]) > max_rate[c] * (t - prev_t[c])
                if fast and prev_spike[c]:
                    fast = abs(v - ref_x[c]) > max_rate[c] * (t - ref_t[c])
                spike[c] = fast
            prev_x[c] = v
            prev_t[c] = t
            prev_spike[c] = spike[c]
            if not spike[c]:
                clean[c] = v
                ref_x[c] = v
                ref_t[c] = t
                if math.isnan(stuck_s[c]):
                    stuck_on[c] = False
                else:
                    if math.isnan(stretch_x[c]) or abs(v - stretch_x[c]) > epsilon[c]:
                        stretch_x[c] = v
                        stretch_t[c] = t
                    _off_delayed(c, t - stretch_t[c] >= stuck_s[c], t, stuck_s[c], stuck_on,
                                 stuck_off)
        if math.isnan(gap_s[c]):
            gap_on[c] = False
        else:
            _off_delayed(c, t - recv_t[c] > gap_s[c], t, gap_s[c], gap_on, gap_off)
        stuck[c] = stuck_on[c]
        gap[c] = gap_on[c]
        drift[c] = False
    for p in range(pair_a.shape[0]):
        a, b = pair_a[p], pair_b[p]
        if back < 0.0:
            pair_on[p] += back
            pair_off[p] += back
        # not (age > gap_s) rather than age <= gap_s: fresh for ever when gap_s is NaN
        fresh = not (math.isnan(ref_x[a]) or math.isnan(ref_x[b]) or
                     t - ref_t[a] > gap_s[a] or t - ref_t[b] > gap_s[b])
        if not fresh:
            pair_on[p] = math.nan
            pair_off[p] = math.nan
        elif abs(ref_x[a] - ref_x[b]) > pair_tol[p]:
            pair_off[p] = math.nan
            if not pair_active[p]:
                if math.isnan(pair_on[p]):
                    pair_on[p] = t
                if t - pair_on[p] >= pair_s[p]:
                    pair_active[p] = True
                    pair_on[p] = math.nan
        else:
            pair_on[p] = math.nan
            if pair_active[p]:
                if math.isnan(pair_off[p]):
                    pair_off[p] = t
                if t - pair_off[p] >= pair_s[p]:
                    pair_active[p] = False
                    pair_off[p] = math.nan
        if pair_active[p]:
            drift[a] = True
            drift[b] = True
    faulty = 0
    for c in range(x.shape[0]):
        if stuck[c] or spike[c] or gap[c] or drift[c]:
            faulty += 1
    return faulty


@njit(**JIT)
def sensor_faults_run(x, t, epsilon, stuck_s, max_rate, gap_s, pair_a, pair_b, pair_tol,
                      pair_s, clock, recv_t, prev_x, prev_t, prev_spike, ref_x, ref_t,
                      stretch_x, stretch_t, stuck_on, stuck_off, gap_on, gap_off, pair_on,
                      pair_off, pair_active, clean, stuck, spike, gap, drift):
    """A recorded series: row k of ``x[T, C]``, ``t[T]`` is one cycle, exactly as
    ``sensor_faults_step``; outputs are ``[T, C]``.
    """
    for k in range(x.shape[0]):
        sensor_faults_step(x[k], t[k], epsilon, stuck_s, max_rate, gap_s, pair_a, pair_b,
                           pair_tol, pair_s, clock, recv_t, prev_x, prev_t, prev_spike, ref_x,
                           ref_t, stretch_x, stretch_t, stuck_on, stuck_off, gap_on, gap_off,
                           pair_on, pair_off, pair_active, clean[k], stuck[k], spike[k],
                           gap[k], drift[k])


class SensorFaultTwin:
    """Plain-Python statement of the four rules, written from the text above, on a clock
    ``tau`` that stands still when ``t`` goes back.
    """

    def __init__(self, epsilon: Sequence[float], stuck_s: Sequence[float],
                 max_rate: Sequence[float], gap_s: Sequence[float],
                 pairs: Sequence[tuple[int, int, float, float]] = ()) -> None:
        self.epsilon, self.stuck_s = list(epsilon), list(stuck_s)
        self.max_rate, self.gap_s, self.pairs = list(max_rate), list(gap_s), list(pairs)
        n = len(self.epsilon)
        self.tau: float | None = None
        self.last_t: float | None = None
        self.heard: list[float | None] = [None] * n  # last reading, or the first cycle
        self.previous: list[tuple[float, float, bool] | None] = [None] * n  # x, tau, spike
        self.trusted: list[tuple[float, float] | None] = [None] * n  # last clean x, tau
        self.stretch: list[tuple[float, float] | None] = [None] * n
        self.stuck = [False] * n
        self.stuck_false_since: list[float | None] = [None] * n
        self.gap = [False] * n
        self.gap_false_since: list[float | None] = [None] * n
        self.differ_since: list[float | None] = [None] * len(self.pairs)
        self.agree_since: list[float | None] = [None] * len(self.pairs)
        self.drifting = [False] * len(self.pairs)

    @staticmethod
    def _flag(on: bool, since: float | None, condition: bool, tau: float,
              hold_s: float) -> tuple[bool, float | None]:
        """A flag raised by its condition and held until it has been false for hold_s."""
        if condition:
            return True, None
        if not on:
            return False, since
        since = tau if since is None else since
        return (False, None) if tau - since >= hold_s else (True, since)

    def step(self, values: Sequence[float], t: float) -> dict[str, list]:
        went_back = self.last_t is not None and t < self.last_t
        tau = self.tau = t if self.tau is None else self.tau + max(0.0, t - self.last_t)
        self.last_t = t
        out: dict[str, list] = {"clean": [], "spike": [], "stuck": [], "gap": []}
        for c, v in enumerate(values):
            if went_back:
                self.previous[c] = None
            if self.heard[c] is None:
                self.heard[c] = tau
            spike = False
            if math.isfinite(v):
                self.heard[c] = tau
                prev, rate = self.previous[c], self.max_rate[c]
                if prev is not None and not math.isnan(rate):
                    px, ptau, was_spike = prev
                    spike = abs(v - px) > rate * (tau - ptau)
                    if spike and was_spike:
                        rx, rtau = self.trusted[c]
                        spike = abs(v - rx) > rate * (tau - rtau)
                self.previous[c] = (v, tau, spike)
                if not spike:
                    self.trusted[c] = (v, tau)
                    self._stuck(c, v, tau)
            if math.isnan(self.gap_s[c]):
                self.gap[c] = False
            else:
                self.gap[c], self.gap_false_since[c] = self._flag(
                    self.gap[c], self.gap_false_since[c], tau - self.heard[c] > self.gap_s[c],
                    tau, self.gap_s[c])
            out["clean"].append(v if math.isfinite(v) and not spike else math.nan)
            out["spike"].append(spike)
            out["stuck"].append(self.stuck[c])
            out["gap"].append(self.gap[c])
        drift = [False] * len(values)
        for p, (a, b, tolerance, duration) in enumerate(self.pairs):
            self._pair(p, a, b, tolerance, duration, tau)
            if self.drifting[p]:
                drift[a] = drift[b] = True
        out["drift"] = drift
        return out

    def _stuck(self, c: int, v: float, tau: float) -> None:
        if math.isnan(self.stuck_s[c]):
            self.stuck[c] = False
            return
        stretch = self.stretch[c]
        if stretch is None or abs(v - stretch[0]) > self.epsilon[c]:
            stretch = self.stretch[c] = (v, tau)
        self.stuck[c], self.stuck_false_since[c] = self._flag(
            self.stuck[c], self.stuck_false_since[c], tau - stretch[1] >= self.stuck_s[c], tau,
            self.stuck_s[c])

    def _pair(self, p: int, a: int, b: int, tolerance: float, duration: float,
              tau: float) -> None:
        def fresh(c: int) -> bool:
            trusted = self.trusted[c]
            return trusted is not None and (math.isnan(self.gap_s[c]) or
                                            tau - trusted[1] <= self.gap_s[c])

        if not (fresh(a) and fresh(b)):
            self.differ_since[p] = self.agree_since[p] = None
            return
        if abs(self.trusted[a][0] - self.trusted[b][0]) > tolerance:
            self.agree_since[p] = None
            if not self.drifting[p]:
                since = self.differ_since[p] = (tau if self.differ_since[p] is None
                                                else self.differ_since[p])
                if tau - since >= duration:
                    self.drifting[p], self.differ_since[p] = True, None
        else:
            self.differ_since[p] = None
            if self.drifting[p]:
                since = self.agree_since[p] = (tau if self.agree_since[p] is None
                                               else self.agree_since[p])
                if tau - since >= duration:
                    self.drifting[p], self.agree_since[p] = False, None


class SensorFaultBank:
    """Stuck, spike, gap and drift faults of C channels, checked once, stepped by the
    compiled kernel; state handed out for persistence.

    Args:
        channels: number of channels C.
        epsilon: stuck: largest change that is still no change, unit of x (>= 0).
        stuck_s: stuck: seconds without change that make a fault; NaN: off.
        max_rate: spike: fastest possible change, unit of x per second (> 0); NaN: off.
        gap_s: gap: seconds without a reading that make a fault (> 0); NaN: off.
        pairs: drift: ``(a, b, tolerance, duration_s)`` per pair of redundant sensors,
            channel indices a != b.

    Each per-channel parameter is a scalar or one value per channel. After ``step``
    the outputs are the attributes named in ``OUTPUTS`` (overwritten by the next
    call); ``run`` returns them as ``[T, C]`` arrays for a recorded series.
    """

    STATE = ("clock", "recv_t", "prev_x", "prev_t", "prev_spike", "ref_x", "ref_t",
             "stretch_x", "stretch_t", "stuck_on", "stuck_off", "gap_on", "gap_off", "pair_on",
             "pair_off", "pair_active")
    OUTPUTS = ("clean", "stuck", "spike", "gap", "drift")
    _OUTPUT_DTYPES = (np.float64, np.bool_, np.bool_, np.bool_, np.bool_)

    def __init__(self, channels: int, *, epsilon: float | np.ndarray = 0.0,
                 stuck_s: float | np.ndarray = math.nan,
                 max_rate: float | np.ndarray = math.nan, gap_s: float | np.ndarray = math.nan,
                 pairs: Sequence[tuple[int, int, float, float]] = ()) -> None:
        if not isinstance(channels, int | np.integer) or channels < 1:
            raise ValueError(f"channels: must be a whole number >= 1, got {channels!r}")
        n = self.channels = int(channels)
        self.epsilon = per_channel("epsilon", epsilon, np.float64, n)
        if not ((self.epsilon >= 0) & np.isfinite(self.epsilon)).all():
            raise ValueError(f"epsilon: must be finite and >= 0, got {self.epsilon.tolist()}")
        for name, value in (("stuck_s", stuck_s), ("max_rate", max_rate), ("gap_s", gap_s)):
            array = per_channel(name, value, np.float64, n)
            if ((array <= 0) | np.isinf(array)).any():
                raise ValueError(f"{name}: must be > 0 and finite, or NaN for off; got "
                                 f"{array.tolist()}")
            setattr(self, name, array)
        rows = [tuple(pair) for pair in pairs]
        for k, row in enumerate(rows):
            if len(row) != 4:
                raise ValueError(f"pairs[{k}]: expected (a, b, tolerance, duration_s), "
                                 f"got {row!r}")
            a, b, tolerance, duration = row
            if not all(isinstance(i, int | np.integer) and 0 <= i < n for i in (a, b)) or a == b:
                raise ValueError(f"pairs[{k}]: a and b must be two different channel indices "
                                 f"in 0..{n - 1}, got {a!r}, {b!r}")
            for what, value in (("tolerance", tolerance), ("duration_s", duration)):
                if not (isinstance(value, int | float | np.number) and math.isfinite(value)
                        and value >= 0):
                    raise ValueError(f"pairs[{k}]: {what} must be finite and >= 0, "
                                     f"got {value!r}")
        self.pair_a = np.array([row[0] for row in rows], dtype=np.int64)
        self.pair_b = np.array([row[1] for row in rows], dtype=np.int64)
        self.pair_tol = np.array([row[2] for row in rows], dtype=np.float64)
        self.pair_s = np.array([row[3] for row in rows], dtype=np.float64)
        p = len(rows)
        self.clock = np.full(1, np.nan)
        for name in ("recv_t", "prev_x", "prev_t", "ref_x", "ref_t", "stretch_x", "stretch_t",
                     "stuck_off", "gap_off"):
            setattr(self, name, np.full(n, np.nan))
        self.prev_spike, self.stuck_on = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
        self.gap_on = np.zeros(n, np.bool_)
        self.pair_on, self.pair_off = np.full(p, np.nan), np.full(p, np.nan)
        self.pair_active = np.zeros(p, np.bool_)
        for name, dtype in zip(self.OUTPUTS, self._OUTPUT_DTYPES, strict=True):
            setattr(self, name, np.zeros(n, dtype))

    def _params(self) -> tuple:
        return (self.epsilon, self.stuck_s, self.max_rate, self.gap_s, self.pair_a,
                self.pair_b, self.pair_tol, self.pair_s,
                *(getattr(self, name) for name in self.STATE))

    def step(self, x: np.ndarray, t: float) -> int:
        """One poll cycle: ``x`` float64[C] (NaN: no reading), ``t`` seconds. Returns how
        many channels show a fault.
        """
        check_row("x", x, np.float64, self.channels)
        if not math.isfinite(t):
            raise ValueError(f"t: must be a finite time in seconds, got {t!r}")
        return sensor_faults_step(x, float(t), *self._params(),
                                  *(getattr(self, name) for name in self.OUTPUTS))

    def run(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """A recorded series ``x[T, C]``, ``t[T]``, continuing from the current state;
        returns each output as ``[T, C]``.
        """
        x, t = check_series(x, t, self.channels)
        out = {name: np.zeros(x.shape, dtype) for name, dtype in
               zip(self.OUTPUTS, self._OUTPUT_DTYPES, strict=True)}
        sensor_faults_run(x, t, *self._params(), *out.values())
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).copy() for name in self.STATE}

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        load_state(self, state)
