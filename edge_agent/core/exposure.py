"""Rolling 15-min STEL and 8-h TWA per toxic channel, with the GBZ 2.1 peak rule, for a
whole poll cycle at once.

The rule is SAFETY_REFERENCE.md §5.4 (our design after GBZ 2.1-2019 and the
detectors of §5.3), in these steps, one channel at a time:

1. A *good* reading is a finite one; a negative reading counts as 0 (Blackline G7
   practice: sensor offset is not negative exposure). A NaN or ±inf reading is no
   reading at all, and time without a counted reading is a coverage gap.
2. A good reading ``c_k`` taken at ``t_k`` counts until the next good reading, for
   at most ``2 × max_gap_s`` (the channel's poll interval): a dead sensor does not
   extend its last value. It is integrated into 1-minute buckets aligned on
   ``floor(t / 60)``: ``bucket += c_k · Δt`` and ``covered += Δt``. A closed
   minute's average is ``bucket / covered``, or 0 for a minute with no coverage
   (RAE TN-119: zero exposure while the instrument was off).
3. ``STEL = Σ(last 15 closed minute averages) / 15``, the divisor being 15 even
   before 15 minutes have passed (GBZ 2.1-2019 PC-STEL: "average over 15 min even
   if exposure is shorter"; ``STEL(t) = (1/15) ∫ C dt`` over the last 15 min).
4. TWA, per channel: ``moving8h`` = ``Σ(last 480 minute averages) / 480`` (OSHA
   mode of the Blackline G7); ``shift`` = ``Σ(minute averages since the shift
   start) / 480``, i.e. ``E = Σ C·T / 8 h`` of OSHA 1910.1000(d)(1)(i) and GBZ 2.1
   with zero exposure for unmeasured time: it never decreases within a shift. A
   ``reset`` input starts a new shift with the minute it arrives in (so send it in
   the shift's first minute); a fresh state is a shift start.
5. Coverage is reported with each value: seconds of good data in the STEL window
   (``stel_cov``, partial below 900 s) and in the TWA window (``twa_cov``).
6. ``stel_over`` = STEL > ``stel_limit``; ``twa_over`` = TWA > ``twa_limit``; a NaN
   limit turns its rule off.
7. Peak rule, for a gas with a PC-TWA but no PC-STEL (``twa_limit`` set,
   ``stel_limit`` NaN), on each good reading ``v`` (GBZ 2.1-2019 §6.3.3, as cited in
   SAFETY_REFERENCE §5.1): ``peak_over`` = v > 5 × PC-TWA (never allowed; held
   while no reading arrives); an *excursion* is a run of readings above
   3 × PC-TWA; ``peak_breach`` latches until the next ``reset`` once an excursion
   lasts more than 15 min, or starts less than 1 h after the previous one ended, or
   is the 5th of the shift; ``excursions`` counts them in the shift (a reset
   during an excursion counts it as the new shift's first).

Values change once a minute, when a minute closes: the open minute is not part of
any window, so one sample at the start of a minute never weighs as a whole minute.

Clock: ``t`` should be a clock that keeps running across a restart of the agent
(the sample's wall-clock time), so that the time the agent was down becomes a gap:
minutes with no coverage and zero exposure, never a stretched value. A clock that
goes *back* (a corrected wall clock) does not corrupt the windows: the open bucket
is closed as it stands, a new bucket starts at ``floor(t / 60)`` of the new clock,
the held reading is dropped (its time to the next reading is unknown), and the
excursion times move back with the clock, so that no time passes across the jump.

Arrays; C channels, W = 480 minutes:
    x            float64[C]    this cycle's reading per channel, NaN where none (ppm, mg/m³)
    t            float64       the cycle's time, seconds (finite)
    reset        bool[C]       input: a new shift starts for this channel
    max_gap_s    float64[C]    poll interval, s (> 0): a reading counts for <= 2 × it
    mode         int64[C]      MOVING8H (0) or SHIFT (1)
    stel_limit   float64[C]    PC-STEL in the channel's unit, NaN: no STEL rule
    twa_limit    float64[C]    PC-TWA in the channel's unit, NaN: no TWA rule
    clock        float64[1]    state: the last cycle's time (NaN: no cycle yet)
    held         float64[C]    state: the reading being counted (NaN: none)
    held_t       float64[C]    state: counted up to this time
    held_end     float64[C]    state: counted at most up to this time
    minute       int64[C]      state: index of the open minute bucket
    bucket       float64[C]    state: Σ c·Δt in the open minute
    covered      float64[C]    state: Σ Δt in the open minute, s
    closed       int64[C]      state: minutes closed so far (ring position = closed % W)
    avg_ring     float64[C, W] state: closed minute averages
    cov_ring     float64[C, W] state: their coverage, s
    sums         float64[C, 4] state: Σ avg and Σ cov of the last 15, then of the last W
    shift        float64[C, 2] state: Σ avg and Σ cov since the shift start
    exc_start    float64[C]    state: start of the running excursion (NaN: none)
    exc_end      float64[C]    state: end of the last excursion (NaN: none this shift)
    exc_count    int64[C]      state: excursions this shift
    over5        bool[C]       state: the last good reading was above 5 × PC-TWA
    breach       bool[C]       state: the excursion rule was broken this shift
    stel, twa, stel_cov, twa_cov       float64[C]  outputs (unit of x; seconds)
    stel_over, twa_over, peak_over, peak_breach  bool[C]  outputs
    excursions   int64[C]      output
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from edge_agent.core._bank import check_row, check_series, load_state, per_channel
from edge_agent.core._jit import JIT, njit

MINUTE_S = 60.0
STEL_MINUTES = 15
TWA_MINUTES = 480
MOVING8H, SHIFT = 0, 1
TWA_MODES = {"moving8h": MOVING8H, "shift": SHIFT}
EXCURSION_FACTOR = 3.0  # GBZ 2.1-2019: excursions above 3 × PC-TWA ...
CEILING_FACTOR = 5.0  # ... and never above 5 × PC-TWA
EXCURSION_MAX_S = 900.0  # each excursion <= 15 min
EXCURSION_SPACING_S = 3600.0  # >= 1 h apart
EXCURSIONS_PER_SHIFT = 4  # <= 4 times a day
MAX_GAP_LIMIT_S = 3600.0  # bounds the work of one step (a reading counts <= 2 h)


@njit(**JIT)
def _close_minute(c, minute, bucket, covered, closed, avg_ring, cov_ring, sums, shift):
    """Close channel c's open bucket into the ring, the W-minute sums and the shift sum;
    open the next.
    """
    cov = covered[c]
    avg = bucket[c] / cov if cov > 0.0 else 0.0
    pos = closed[c] % avg_ring.shape[1]
    sums[c, 2] += avg - avg_ring[c, pos]  # the minute W ago leaves the window
    sums[c, 3] += cov - cov_ring[c, pos]
    avg_ring[c, pos] = avg
    cov_ring[c, pos] = cov
    closed[c] += 1
    shift[c, 0] += avg
    shift[c, 1] += cov
    bucket[c] = 0.0
    covered[c] = 0.0
    minute[c] += 1


@njit(**JIT)
def _skip_minutes(c, k, closed, avg_ring, cov_ring, sums):
    """Push k minutes without coverage (zero exposure); more than W just empty the ring."""
    width = avg_ring.shape[1]
    for j in range(min(k, width)):
        pos = (closed[c] + j) % width
        sums[c, 2] -= avg_ring[c, pos]
        sums[c, 3] -= cov_ring[c, pos]
        avg_ring[c, pos] = 0.0
        cov_ring[c, pos] = 0.0
    closed[c] += k


@njit(**JIT)
def _window_sums(c, before, closed, avg_ring, cov_ring, sums):
    """Σ avg and Σ cov over the last 15 closed minutes of channel c, now that ``closed``
    moved on from ``before``; the W-minute sums run in ``_close_minute``, and are summed
    afresh each time ``closed`` passes a multiple of W, so that no rounding builds up.
    """
    width = avg_ring.shape[1]
    s15 = c15 = 0.0
    pos = closed[c] % width
    for _ in range(STEL_MINUTES):  # newest first
        pos = pos - 1 if pos > 0 else width - 1
        s15 += avg_ring[c, pos]
        c15 += cov_ring[c, pos]
    sums[c, 0], sums[c, 1] = s15, c15
    if closed[c] // width != before // width:
        sw = cw = 0.0
        for pos in range(width):
            sw += avg_ring[c, pos]
            cw += cov_ring[c, pos]
        sums[c, 2], sums[c, 3] = sw, cw


@njit(**JIT)
def _advance(c, t, now, held, held_t, held_end, minute, bucket, covered, closed, avg_ring,
             cov_ring, sums, shift):
    """Count channel c's held reading up to t, closing every minute before ``now`` (t's
    own) and summing the windows afresh if one closed.
    """
    before = closed[c]
    v = held[c]
    if not math.isnan(v):
        end = min(t, held_end[c])
        a = held_t[c]
        while a < end:
            edge = (minute[c] + 1) * MINUTE_S
            b = min(end, edge)
            if b <= a:  # a state not aligned with its minute (never from this kernel)
                break
            bucket[c] += v * (b - a)
            covered[c] += b - a
            a = b
            if a >= edge:
                _close_minute(c, minute, bucket, covered, closed, avg_ring, cov_ring, sums,
                              shift)
        held_t[c] = a
        if a >= held_end[c]:
            held[c] = math.nan  # counted for its whole allowance
    if minute[c] < now:
        _close_minute(c, minute, bucket, covered, closed, avg_ring, cov_ring, sums, shift)
        _skip_minutes(c, now - minute[c], closed, avg_ring, cov_ring, sums)
        minute[c] = now
    if closed[c] != before:
        _window_sums(c, before, closed, avg_ring, cov_ring, sums)


@njit(**JIT)
def _count(c, t, held, held_t, held_end, bucket, covered):
    """Count channel c's held reading up to t, within its open minute."""
    v = held[c]
    if not math.isnan(v):
        a, stop = held_t[c], held_end[c]
        end = min(t, stop)
        if a < end:
            bucket[c] += v * (end - a)
            covered[c] += end - a
            held_t[c] = end
        if end >= stop:
            held[c] = math.nan  # counted for its whole allowance


@njit(inline="always", **JIT)
def _judge(c, t, v, reset, max_gap_s, mode, stel_limit, twa_limit, held, held_t, held_end,
           sums, shift, exc_start, exc_end, exc_count, over5, breach, stel, twa, stel_cov,
           twa_cov, stel_over, twa_over, peak_over, peak_breach, excursions):
    """Channel c's new reading v, its shift reset, the peak rule and the outputs; 1 if
    a flag is set.
    """
    running = not math.isnan(exc_start[c])
    if reset:
        shift[c, 0] = 0.0
        shift[c, 1] = 0.0
        exc_count[c] = 1 if running else 0
        exc_end[c] = math.nan
        breach[c] = False
    peak_rule = math.isnan(stel_limit[c]) and not math.isnan(twa_limit[c])
    if math.isfinite(v):
        v = max(v, 0.0)
        held[c] = v
        held_t[c] = t
        held_end[c] = t + 2.0 * max_gap_s[c]
        if peak_rule:
            over5[c] = v > CEILING_FACTOR * twa_limit[c]
            if v > EXCURSION_FACTOR * twa_limit[c]:
                if not running:
                    exc_count[c] += 1
                    if exc_count[c] > EXCURSIONS_PER_SHIFT or (
                            t - exc_end[c] < EXCURSION_SPACING_S):  # False while NaN
                        breach[c] = True
                    exc_start[c] = t
            elif running:
                exc_start[c] = math.nan
                exc_end[c] = t
    if peak_rule and t - exc_start[c] > EXCURSION_MAX_S:
        breach[c] = True
    stel[c] = sums[c, 0] / STEL_MINUTES
    stel_cov[c] = sums[c, 1]
    if mode[c] == SHIFT:
        twa[c] = shift[c, 0] / TWA_MINUTES
        twa_cov[c] = shift[c, 1]
    else:
        twa[c] = sums[c, 2] / TWA_MINUTES
        twa_cov[c] = sums[c, 3]
    stel_over[c] = stel[c] > stel_limit[c]  # False for a NaN limit
    twa_over[c] = twa[c] > twa_limit[c]
    peak_over[c] = peak_rule and over5[c]
    peak_breach[c] = peak_rule and breach[c]
    excursions[c] = exc_count[c] if peak_rule else 0
    return 1 if stel_over[c] or twa_over[c] or peak_over[c] or peak_breach[c] else 0


@njit(**JIT)
def exposure_step(x, t, reset, max_gap_s, mode, stel_limit, twa_limit,
                  clock, held, held_t, held_end, minute, bucket, covered, closed, avg_ring,
                  cov_ring, sums, shift, exc_start, exc_end, exc_count, over5, breach,
                  stel, twa, stel_cov, twa_cov, stel_over, twa_over, peak_over, peak_breach,
                  excursions):
    """Advance every channel by one cycle; return how many channels have a flag set.

    A 10-minute pulse of 45 ppm CO sampled once a minute gives, once 15 minutes have
    closed, STEL = 45 × 10/15 = 30 ppm: exactly the PC-STEL, which is not above it.

    >>> import numpy as np
    >>> bank = ExposureBank(1, max_gap_s=60.0, stel_limit=30.0, twa_limit=20.0)
    >>> for m in range(16):
    ...     _ = bank.step(np.array([45.0 if m < 10 else 0.0]), 60.0 * m)
    >>> float(bank.stel[0]), float(bank.stel_cov[0]), bool(bank.stel_over[0])
    (30.0, 900.0, False)
    >>> round(float(bank.twa[0]), 4), float(bank.twa_cov[0])  # 450 ppm·min / 480 min
    (0.9375, 900.0)
    """
    if not math.isfinite(t):  # refused by the bank; here: no time passes
        t = clock[0] if math.isfinite(clock[0]) else 0.0
    fresh = math.isnan(clock[0])
    back = t - clock[0] if not fresh and t < clock[0] else 0.0
    now = np.int64(math.floor(t / MINUTE_S))
    same_minute = not fresh and back == 0.0 and now == math.floor(clock[0] / MINUTE_S)
    clock[0] = t
    flagged = 0
    if same_minute:  # most cycles: a loop of its own, kept small, counts the held readings
        for c in range(x.shape[0]):
            if minute[c] == now:
                _count(c, t, held, held_t, held_end, bucket, covered)
            else:  # a channel that has not seen this minute's start (a restored state)
                _advance(c, t, now, held, held_t, held_end, minute, bucket, covered, closed,
                         avg_ring, cov_ring, sums, shift)
            flagged += _judge(c, t, x[c], reset[c], max_gap_s, mode, stel_limit, twa_limit,
                              held, held_t, held_end, sums, shift, exc_start, exc_end,
                              exc_count, over5, breach, stel, twa, stel_cov, twa_cov,
                              stel_over, twa_over, peak_over, peak_breach, excursions)
        return flagged
    for c in range(x.shape[0]):
        if fresh:
            minute[c] = now
        elif back < 0.0:
            before = closed[c]
            _close_minute(c, minute, bucket, covered, closed, avg_ring, cov_ring, sums, shift)
            minute[c] = now
            held[c] = math.nan
            exc_start[c] += back
            exc_end[c] += back
            _window_sums(c, before, closed, avg_ring, cov_ring, sums)
        else:
            _advance(c, t, now, held, held_t, held_end, minute, bucket, covered, closed,
                     avg_ring, cov_ring, sums, shift)
        flagged += _judge(c, t, x[c], reset[c], max_gap_s, mode, stel_limit, twa_limit,
                          held, held_t, held_end, sums, shift, exc_start, exc_end,
                          exc_count, over5, breach, stel, twa, stel_cov, twa_cov,
                          stel_over, twa_over, peak_over, peak_breach, excursions)
    return flagged


@njit(**JIT)
def exposure_run(x, t, reset, max_gap_s, mode, stel_limit, twa_limit,
                 clock, held, held_t, held_end, minute, bucket, covered, closed, avg_ring,
                 cov_ring, sums, shift, exc_start, exc_end, exc_count, over5, breach,
                 stel, twa, stel_cov, twa_cov, stel_over, twa_over, peak_over, peak_breach,
                 excursions):
    """A recorded series: row k of ``x[T, C]``, ``t[T]``, ``reset[T, C]`` is one cycle,
    exactly as ``exposure_step``; outputs are ``[T, C]``.
    """
    for k in range(x.shape[0]):
        exposure_step(x[k], t[k], reset[k], max_gap_s, mode, stel_limit, twa_limit,
                      clock, held, held_t, held_end, minute, bucket, covered, closed,
                      avg_ring, cov_ring, sums, shift, exc_start, exc_end, exc_count, over5,
                      breach, stel[k], twa[k], stel_cov[k], twa_cov[k], stel_over[k],
                      twa_over[k], peak_over[k], peak_breach[k], excursions[k])


class ExposureTwin:
    """Plain-Python statement of §5.4 for one channel, written from the formulas above.

    It keeps the whole history and, at every cycle, integrates the held readings into
    minutes and averages the windows afresh; the peak rule is followed reading by
    reading on a clock that never goes back.
    """

    def __init__(self, max_gap_s: float, twa_mode: str = "moving8h",
                 stel_limit: float = math.nan, twa_limit: float = math.nan) -> None:
        self.max_gap_s, self.twa_mode = max_gap_s, twa_mode
        self.stel_limit, self.twa_limit = stel_limit, twa_limit
        self.shift_start: tuple[int, int] | None = None  # (segment, minute) of the last reset
        self.segments: list[list[tuple[float, float]]] = []  # split where the clock went back
        # peak rule, on the clock tau that stands still when t goes back
        self.tau = self.last_t = math.nan
        self.over5, self.breach, self.count = False, False, 0
        self.start: float | None = None
        self.end: float | None = None

    def step(self, value: float, t: float, reset: bool = False) -> dict[str, float]:
        if not self.segments or t < self.last_t:
            self.segments.append([])
        self.segments[-1].append((t, value))
        self.tau = t if math.isnan(self.tau) else self.tau + max(0.0, t - self.last_t)
        self.last_t = t
        if reset:
            self.shift_start = (len(self.segments) - 1, math.floor(t / 60))
        return {**self._windows(), **self._peak(value, reset)}

    def _minutes(self) -> tuple[dict[tuple[int, int], list[float]], list[int], list[int]]:
        """∫C dt and covered seconds per (segment, minute), with each segment's first
        minute and its number of closed minutes.
        """
        integral: dict[tuple[int, int], list[float]] = {}
        firsts, lengths = [], []
        last_segment = len(self.segments) - 1
        for s, cycles in enumerate(self.segments):
            seg_end = cycles[-1][0]
            good = [(t, max(v, 0.0)) for t, v in cycles if math.isfinite(v)]
            for k, (tk, ck) in enumerate(good):
                until = tk + 2 * self.max_gap_s
                if k + 1 < len(good):
                    until = min(until, good[k + 1][0])
                until = min(until, seg_end)
                a = tk
                while a < until:  # the piece of [tk, until) inside each minute
                    m = math.floor(a / 60)
                    b = min(until, (m + 1) * 60.0)
                    cell = integral.setdefault((s, m), [0.0, 0.0])
                    cell[0] += ck * (b - a)
                    cell[1] += b - a
                    a = b
            first, last = math.floor(cycles[0][0] / 60), math.floor(seg_end / 60)
            firsts.append(first)
            lengths.append(last - first + (0 if s == last_segment else 1))  # open minute
        return integral, firsts, lengths

    def _windows(self) -> dict[str, float]:
        integral, firsts, lengths = self._minutes()
        offsets = [sum(lengths[:s]) for s in range(len(lengths))]
        total = sum(lengths)

        def position(s: int, m: int) -> int:
            return offsets[s] + m - firsts[s]

        def window(since: int) -> tuple[float, float]:
            """Σ minute averages and Σ coverage of the closed minutes at >= since."""
            avg = cov = 0.0
            for (s, m), (dose, seconds) in integral.items():
                pos = position(s, m)
                if since <= pos < total and seconds > 0:
                    avg += dose / seconds
                    cov += seconds
            return avg, cov

        stel_sum, stel_cov = window(total - 15)
        if self.twa_mode == "shift":
            twa_sum, twa_cov = window(0 if self.shift_start is None
                                      else position(*self.shift_start))
        else:
            twa_sum, twa_cov = window(total - 480)
        stel, twa = stel_sum / 15, twa_sum / 480
        return {"stel": stel, "twa": twa, "stel_cov": stel_cov, "twa_cov": twa_cov,
                "stel_over": stel > self.stel_limit, "twa_over": twa > self.twa_limit}

    def _peak(self, value: float, reset: bool) -> dict[str, float]:
        on = math.isnan(self.stel_limit) and not math.isnan(self.twa_limit)
        if reset:
            self.count = 1 if self.start is not None else 0
            self.end, self.breach = None, False
        if math.isfinite(value) and on:
            v = max(value, 0.0)
            self.over5 = v > 5 * self.twa_limit
            if v > 3 * self.twa_limit and self.start is None:
                self.count += 1
                too_soon = self.end is not None and self.tau - self.end < 3600
                if self.count > 4 or too_soon:
                    self.breach = True
                self.start = self.tau
            elif v <= 3 * self.twa_limit and self.start is not None:
                self.start, self.end = None, self.tau
        if on and self.start is not None and self.tau - self.start > 900:
            self.breach = True
        return {"peak_over": on and self.over5, "peak_breach": on and self.breach,
                "excursions": self.count if on else 0}


class ExposureBank:
    """STEL, TWA and the peak rule of C toxic channels, checked once, stepped by the
    compiled kernel; state handed out for persistence.

    Args:
        channels: number of channels C.
        max_gap_s: each channel's poll interval, s; a reading counts for at most twice
            it. Scalar or one per channel.
        stel_limit: PC-STEL per channel, in the channel's unit; NaN: no STEL rule.
        twa_limit: PC-TWA per channel; NaN: no TWA rule (and no peak rule).
        twa_mode: ``"moving8h"`` or ``"shift"``, one for all or one per channel.

    After ``step`` the outputs are the attributes named in ``OUTPUTS`` (overwritten by
    the next call); ``run`` returns them as ``[T, C]`` arrays for a recorded series.
    """

    STATE = ("clock", "held", "held_t", "held_end", "minute", "bucket", "covered", "closed",
             "avg_ring", "cov_ring", "sums", "shift", "exc_start", "exc_end", "exc_count",
             "over5", "breach")
    OUTPUTS = ("stel", "twa", "stel_cov", "twa_cov", "stel_over", "twa_over", "peak_over",
               "peak_breach", "excursions")
    _OUTPUT_DTYPES = (np.float64,) * 4 + (np.bool_,) * 4 + (np.int64,)

    def __init__(self, channels: int, *, max_gap_s: float | np.ndarray,
                 stel_limit: float | np.ndarray = math.nan,
                 twa_limit: float | np.ndarray = math.nan,
                 twa_mode: str | list[str] = "moving8h") -> None:
        if not isinstance(channels, int | np.integer) or channels < 1:
            raise ValueError(f"channels: must be a whole number >= 1, got {channels!r}")
        n = self.channels = int(channels)
        self.max_gap_s = per_channel("max_gap_s", max_gap_s, np.float64, n)
        if not ((self.max_gap_s > 0) & (self.max_gap_s <= MAX_GAP_LIMIT_S)).all():
            raise ValueError(f"max_gap_s: must be > 0 and <= {MAX_GAP_LIMIT_S:g} s (a poll "
                             f"interval), got {self.max_gap_s.tolist()}")
        self.stel_limit = _limit("stel_limit", stel_limit, n)
        self.twa_limit = _limit("twa_limit", twa_limit, n)
        modes = [twa_mode] * n if isinstance(twa_mode, str) else list(twa_mode)
        unknown = sorted({str(m) for m in modes} - set(TWA_MODES))
        if unknown or len(modes) != n:
            raise ValueError(f"twa_mode: expected {n} of {sorted(TWA_MODES)}, got {twa_mode!r}")
        self.mode = np.array([TWA_MODES[m] for m in modes], dtype=np.int64)
        f, i = np.float64, np.int64
        self.clock = np.full(1, np.nan)
        self.held = np.full(n, np.nan)
        self.held_t, self.held_end = np.zeros(n), np.zeros(n)
        self.minute, self.closed = np.zeros(n, i), np.zeros(n, i)
        self.bucket, self.covered = np.zeros(n, f), np.zeros(n, f)
        self.avg_ring, self.cov_ring = np.zeros((n, TWA_MINUTES)), np.zeros((n, TWA_MINUTES))
        self.sums, self.shift = np.zeros((n, 4)), np.zeros((n, 2))
        self.exc_start, self.exc_end = np.full(n, np.nan), np.full(n, np.nan)
        self.exc_count = np.zeros(n, i)
        self.over5, self.breach = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
        for name, dtype in zip(self.OUTPUTS, self._OUTPUT_DTYPES, strict=True):
            setattr(self, name, np.zeros(n, dtype))
        self._no_reset = np.zeros(n, np.bool_)

    def _params(self) -> tuple:
        return (self.max_gap_s, self.mode, self.stel_limit, self.twa_limit,
                *(getattr(self, name) for name in self.STATE))

    def step(self, x: np.ndarray, t: float, reset: np.ndarray | None = None) -> int:
        """One poll cycle: ``x`` float64[C] (NaN: no good reading), ``t`` seconds,
        ``reset`` bool[C] where a shift starts. Returns how many channels are flagged.
        """
        check_row("x", x, np.float64, self.channels)
        reset = self._no_reset if reset is None else reset
        check_row("reset", reset, np.bool_, self.channels)
        if not math.isfinite(t):
            raise ValueError(f"t: must be a finite time in seconds, got {t!r}")
        return exposure_step(x, float(t), reset, *self._params(),
                             *(getattr(self, name) for name in self.OUTPUTS))

    def run(self, x: np.ndarray, t: np.ndarray,
            reset: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """A recorded series ``x[T, C]``, ``t[T]`` (``reset[T, C]``), continuing from the
        current state; returns each output as ``[T, C]``.
        """
        x, t = check_series(x, t, self.channels)
        if reset is None:
            reset = np.zeros(x.shape, np.bool_)
        elif not isinstance(reset, np.ndarray) or reset.dtype != np.bool_ or (
                reset.shape != x.shape):
            raise ValueError(f"reset: must be a bool array of shape {x.shape}")
        out = {name: np.zeros(x.shape, dtype) for name, dtype in
               zip(self.OUTPUTS, self._OUTPUT_DTYPES, strict=True)}
        exposure_run(x, t, np.ascontiguousarray(reset), *self._params(), *out.values())
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).copy() for name in self.STATE}

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        load_state(self, state)


def _limit(name: str, value: object, n: int) -> np.ndarray:
    array = per_channel(name, value, np.float64, n)
    if ((array <= 0) | np.isinf(array)).any():
        raise ValueError(f"{name}: must be > 0 and finite, or NaN for no rule; got "
                         f"{array.tolist()}")
    return array
