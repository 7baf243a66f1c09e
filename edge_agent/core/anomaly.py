"""Statistical anomaly score per channel, for a whole poll cycle at once: advisory, never a
replacement for the threshold alarms.

Each channel learns its own normal behaviour online and scores every reading in
[0, 1], higher meaning more anomalous (river's contract). Three detectors look at
the reading x; the score is the largest of their scores a1, a2, a3:

1. *Envelope* (an extreme-value test: the record test of Chandler 1952, used as an
   adaptive extreme threshold in the spirit of SPOT, Siffer et al., KDD 2017): the
   range ``[lo, hi]`` of the readings learned so far. A reading beyond it by
   ``r = max(0, x − hi, lo − x) / (hi − lo)`` spans scores ``a1 = r / (r + c)``.
2. The same test on a smoothed reading, ``s ← s + α_s (x − s)``, against the range
   of ``s``: it sees a shift of the level that single noisy readings hide;
   ``a2 = w_s · r_s / (r_s + c)``.
3. *CUSUM* (Page 1954) of a robust z-score against a slow baseline:
   ``z = (x − μ) / (1.2533 d)`` clipped to ±50, where μ ← μ + α_μ (x − μ) and
   d ← d + α_d (|x − μ| − d) (1.2533 d estimates σ from the mean absolute
   deviation of a normal law); ``S⁺ ← max(0, S⁺ + z − k)``, ``S⁻ ← max(0, S⁻ − z − k)``,
   ``a3 = min(1, f · (max(S⁺, S⁻) / h)^γ)``, which is the flag level f when a sum
   reaches h. It sees a slow ramp (a leak) that stays inside the envelope.

*Excursions and protect* (river's ``protect_anomaly_detector``). While a channel
trains (its first ``train`` readings, and at least ``warm``), every reading is
learned at once: the envelopes widen to it, μ and d follow it, and a CUSUM decision
restarts the sums. Afterwards:

- A reading outside an envelope starts or continues an *excursion*. The envelopes
  do not widen while it lasts; if it ends (a reading back inside, not flagged)
  without ever having been flagged, the envelopes then take in its extremes; μ and
  d follow its unflagged readings. A slow drift therefore keeps being measured
  against the range from before it, instead of dragging the range along.
- A reading scoring ``>= flag`` *flags* the channel and teaches nothing: not the
  envelopes (ever: a flagged excursion is dropped when it ends), not μ, not d. So a
  leak is not learned as normal.
- In an excursion a reading scores only if it is more anomalous than every earlier
  reading of it, and a flagged excursion scores once, at its first flagged reading:
  each escalation is reported once, ``flagged`` says while it lasts.
- An excursion lasting ``relearn`` readings is the channel's new normal: the
  envelopes take it in, μ restarts at the reading, the sums at 0.

Post-processing: a score ``>= hold_level`` starts a hold of ``hold`` readings that
score 0, unless they score ``>= flag``, which always reaches the alarm layer (one
report per event, as NAB's detectors do; ``flagged`` is never held back).

Time: α_s, α_μ and α_d apply per typical interval between the channel's readings
(``dt_typ``, followed slowly: each interval, clipped to [dt_typ/4, 4 dt_typ], moves it
by 1 %); a reading ``n`` intervals after the last (``dt / dt_typ`` rounded, at least 1:
poll jitter is no gap) uses ``1 − (1 − α)^n``, so a long gap forgets the old smoothed
level. A reading at the same time as the last, or before
it, moves nothing that depends on time.

Missing readings: a NaN or ±inf reading (or one beyond ±1e15, which no sensor
sends and which could overflow the sums) scores 0 and changes nothing: no learning,
no counting, no clock, the flag stays as it was; a failed sensor is the fault
path's business. The first ``warm`` readings of a channel score 0 while μ and d
form (as a running mean and mean absolute deviation).

Arrays, C channels:
    x        float64[C]     this cycle's reading per channel, NaN where none
    t        float64        the cycle's time, seconds
    params   float64[16]    the parameters, in the order of ``PARAMS``, then 1 / h
    clock    float64[C, 3]  state: readings taken, time of the last, typical interval
                            (NaN until two readings)
    env      float64[C, 4]  state: lo, hi of the readings; lo, hi of the smoothed readings
    level    float64[C, 5]  state: smoothed reading s, baseline μ, deviation d, S⁺, S⁻
    episode  float64[C, 7]  state: readings in the excursion so far (0: none), lo, hi of
                            its readings and of its smoothed readings, 1 if it was
                            flagged, its highest score
    hold     float64[C]     state: readings left to score 0
    flagged  bool[C]        state and output: the channel's last reading flagged it
    score    float64[C]     output: this cycle's score, 0 where no reading
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edge_agent.core._jit import JIT, njit

PARAMS = ("warm", "train", "c", "alpha_s", "w_s", "alpha_mu", "alpha_d", "k", "h", "gamma",
          "flag", "relearn", "hold", "hold_level", "decay")
(WARM, TRAIN, C_ENV, ALPHA_S, W_S, ALPHA_MU, ALPHA_D, K_CUSUM, H_CUSUM, GAMMA, FLAG, RELEARN,
 HOLD, HOLD_LEVEL, DECAY) = range(len(PARAMS))
INV_H = len(PARAMS)  # 1 / h, after the parameters: a product per reading, not a quotient

# state columns
N_SEEN, T_LAST, DT_TYP = range(3)
LO, HI, S_LO, S_HI = range(4)
S, MU, DEV, UP, DOWN = range(5)
EP_LEN, EP_LO, EP_HI, EP_SLO, EP_SHI, EP_FLAG, EP_MAX = range(7)

SIGMA_PER_MAD = 1.2533  # sqrt(pi / 2): σ / E|x − μ| for a normal law
Z_MAX = 50.0  # one reading moves a CUSUM sum by at most this many σ
DT_FOLLOW = 0.01  # how fast the typical interval follows the intervals seen
GAP_MAX = 1000.0  # intervals: a longer gap counts as this long
READING_MAX = 1e15  # a larger magnitude is no reading: it keeps every sum finite


@dataclass(frozen=True)
class AnomalyParams:
    """The detector's parameters, one set for every channel.

    The defaults are the one set tuned on the whole NAB corpus (docs/anomaly.md).
    Counts are in readings of the channel; ``alpha_*`` and ``decay`` are per typical
    interval between its readings.
    """

    warm: float = 50.0
    """Readings that score 0 at the start, while μ and d form."""
    train: float = 3000.0
    """Readings learned whatever they score, before a flag can stop the learning."""
    c: float = 0.02
    """Envelope excess, in spans, that scores 0.5."""
    alpha_s: float = 1.0 / 24.0
    """Smoothing factor of the reading, for the smoothed envelope."""
    w_s: float = 0.3
    """Weight of the smoothed envelope's score (below ``flag``: it never flags alone)."""
    alpha_mu: float = 0.002
    """Factor of the baseline μ."""
    alpha_d: float = 0.03
    """Factor of the mean absolute deviation d."""
    k: float = 1.0
    """CUSUM allowance, σ per reading."""
    h: float = 100.0
    """CUSUM decision interval, σ: a sum reaching it flags the channel."""
    gamma: float = 2.0
    """Shape of the CUSUM score below h."""
    flag: float = 0.7
    """A score at or above it flags the channel, which then stops learning."""
    relearn: float = 1000.0
    """Readings of one excursion after which it is the channel's new normal."""
    hold: float = 60.0
    """Readings that score 0 after a score >= hold_level (a score >= flag still passes)."""
    hold_level: float = 0.2
    """Score that starts a hold."""
    decay: float = 0.0
    """Fraction of each envelope's span given up per interval (0: remember for ever)."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: {value!r} must be finite and >= 0")
        for name in ("c", "h", "gamma", "flag"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: {getattr(self, name)!r} must be > 0 "
                                 "(a divisor, or a flag level every reading would reach)")
        for name in ("warm", "train", "relearn", "hold"):
            if getattr(self, name) != int(getattr(self, name)):
                raise ValueError(f"{name}: {getattr(self, name)!r} must be a whole number "
                                 "of readings")
        for name in ("alpha_s", "alpha_mu", "alpha_d", "w_s", "flag", "hold_level", "decay"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name}: {getattr(self, name)!r} must be <= 1 "
                                 "(a factor or a score)")

    def array(self) -> np.ndarray:
        """The parameters as the kernel takes them, in the order of ``PARAMS``, then
        ``1 / h``.
        """
        return np.array([*(getattr(self, name) for name in PARAMS), 1.0 / self.h])


@njit(**JIT)
def _excess(v, lo, hi):
    """How far ``v`` lies outside ``[lo, hi]``, in spans (inf when the span is 0)."""
    out = max(v - hi, lo - v, 0.0)
    if out == 0.0:
        return 0.0
    span = hi - lo
    if not span > 0.0 or span == math.inf:
        return math.inf
    return out / span


@njit(**JIT)
def _ratio(r, c):
    """``r / (r + c)`` for r in [0, inf]."""
    if r == math.inf:
        return 1.0
    return r / (r + c)


@njit(**JIT)
def _factor(alpha, steps):
    """The factor over ``steps`` intervals of a per-interval factor ``alpha``."""
    if steps == 1.0:
        return alpha
    return 1.0 - (1.0 - alpha) ** steps


@njit(**JIT)
def _follow(c, v, steps, p, level):
    """The baseline μ and the deviation d follow reading ``v``."""
    r = v - level[c, MU]
    level[c, MU] += _factor(p[ALPHA_MU], steps) * r
    level[c, DEV] += _factor(p[ALPHA_D], steps) * (abs(r) - level[c, DEV])


@njit(**JIT)
def _take_in(c, env, episode):
    """The envelopes widen to the excursion's readings."""
    env[c, LO] = min(env[c, LO], episode[c, EP_LO])
    env[c, HI] = max(env[c, HI], episode[c, EP_HI])
    env[c, S_LO] = min(env[c, S_LO], episode[c, EP_SLO])
    env[c, S_HI] = max(env[c, S_HI], episode[c, EP_SHI])


@njit(**JIT)
def _excursion(c, v, s, a, n, up, down, flag_now, steps, p, env, level, episode, flagged):
    """A reading outside an envelope, or flagging: the excursion goes on (the envelopes
    learn it only once it ends unflagged); returns its score, which is a's only if it
    is more anomalous than every reading before it in the excursion.
    """
    out = a
    if n == 0.0:
        episode[c, EP_LO], episode[c, EP_HI] = v, v
        episode[c, EP_SLO], episode[c, EP_SHI] = s, s
        episode[c, EP_FLAG], episode[c, EP_MAX] = 0.0, a
    else:
        episode[c, EP_LO] = min(episode[c, EP_LO], v)
        episode[c, EP_HI] = max(episode[c, EP_HI], v)
        episode[c, EP_SLO] = min(episode[c, EP_SLO], s)
        episode[c, EP_SHI] = max(episode[c, EP_SHI], s)
        if a <= episode[c, EP_MAX]:
            out = 0.0
        episode[c, EP_MAX] = max(a, episode[c, EP_MAX])
    episode[c, EP_LEN] = n + 1.0
    level[c, UP], level[c, DOWN] = up, down
    if flag_now:
        if episode[c, EP_FLAG] > 0.0:
            out = 0.0  # a flagged excursion is reported once
        episode[c, EP_FLAG] = 1.0  # and never learned
    else:
        _follow(c, v, steps, p, level)
    flagged[c] = flag_now
    if n + 1.0 >= p[RELEARN]:
        # a new normal: the envelopes take the excursion in, the baseline restarts
        _take_in(c, env, episode)
        level[c, MU] = v
        level[c, UP], level[c, DOWN] = 0.0, 0.0
        episode[c, EP_LEN] = 0.0
        flagged[c] = False
    return out


@njit(inline="always", **JIT)
def _channel(c, v, t, p, clock, env, level, episode, hold, flagged, score):
    """Take channel ``c``'s reading ``v`` at ``t``; write ``score[c]`` and ``flagged[c]``."""
    score[c] = 0.0
    if not abs(v) <= READING_MAX:
        return  # NaN, ±inf: no reading; nothing learned or counted, the flag as it was
    seen = clock[c, N_SEEN]
    steps = 1.0  # intervals since the last reading, in typical intervals
    if seen > 0.0:
        dt = t - clock[c, T_LAST]
        typ = clock[c, DT_TYP]
        if not dt > 0.0:
            steps = 0.0
        elif math.isnan(typ):
            clock[c, DT_TYP] = dt
        else:
            if dt >= 1.5 * typ:  # rounds to 2 intervals or more; less is jitter, no gap
                steps = min(math.floor(dt / typ + 0.5), GAP_MAX)
            clock[c, DT_TYP] = typ + DT_FOLLOW * (min(max(dt, 0.25 * typ), 4.0 * typ) - typ)
    clock[c, T_LAST] = t

    s = v if seen == 0.0 else level[c, S] + _factor(p[ALPHA_S], steps) * (v - level[c, S])
    level[c, S] = s
    mu, dev = level[c, MU], level[c, DEV]
    up, down = level[c, UP], level[c, DOWN]
    a = 0.0
    if seen >= p[WARM]:
        sigma = SIGMA_PER_MAD * dev
        if not sigma > 0.0:
            sigma = 1e-12 * max(abs(mu), 1.0)  # a channel that never varied
        z = min(max((v - mu) / sigma, -Z_MAX), Z_MAX)
        up = max(0.0, up + z - p[K_CUSUM])
        down = max(0.0, down - z - p[K_CUSUM])
        lo, hi, s_lo, s_hi = env[c, LO], env[c, HI], env[c, S_LO], env[c, S_HI]
        a1 = a2 = 0.0  # within the envelopes (the common case: no division)
        if v < lo or v > hi:
            a1 = _ratio(_excess(v, lo, hi), p[C_ENV])
        if s < s_lo or s > s_hi:
            a2 = p[W_S] * _ratio(_excess(s, s_lo, s_hi), p[C_ENV])
        q = max(up, down) * p[INV_H]
        a3 = min(1.0, p[FLAG] * (q * q if p[GAMMA] == 2.0 else q ** p[GAMMA]))
        a = max(a1, a2, a3)

    n = episode[c, EP_LEN]
    flag_now = False
    if seen >= p[TRAIN] and seen >= p[WARM]:
        flag_now = a >= p[FLAG]
        outside = v < env[c, LO] or v > env[c, HI] or s < env[c, S_LO] or s > env[c, S_HI]
    else:
        outside = False  # while training, every reading is learned at once
    if flag_now or outside:
        out = _excursion(c, v, s, a, n, up, down, flag_now, steps, p, env, level, episode,
                         flagged)
    else:
        out = a
        if n > 0.0 and episode[c, EP_FLAG] == 0.0:
            _take_in(c, env, episode)  # an excursion ended unflagged: it was normal
        episode[c, EP_LEN] = 0.0
        flagged[c] = False
        if max(up, down) >= p[H_CUSUM]:
            up, down = 0.0, 0.0  # a decision while training restarts the sums
        level[c, UP], level[c, DOWN] = up, down
        if seen == 0.0:
            env[c, LO], env[c, HI], env[c, S_LO], env[c, S_HI] = v, v, s, s
        else:
            env[c, LO] = min(env[c, LO], v)
            env[c, HI] = max(env[c, HI], v)
            env[c, S_LO] = min(env[c, S_LO], s)
            env[c, S_HI] = max(env[c, S_HI], s)
            if p[DECAY] > 0.0 and steps > 0.0:
                give = 0.5 * _factor(p[DECAY], steps)
                cut = give * (env[c, HI] - env[c, LO])
                env[c, LO] += cut
                env[c, HI] -= cut
                cut = give * (env[c, S_HI] - env[c, S_LO])
                env[c, S_LO] += cut
                env[c, S_HI] -= cut
        if seen < p[WARM]:  # running mean and mean absolute deviation
            r = v - mu
            level[c, MU] = mu + r / (seen + 1.0)
            level[c, DEV] = dev + (abs(r) - dev) / (seen + 1.0)
        else:
            _follow(c, v, steps, p, level)
    clock[c, N_SEEN] = seen + 1.0

    if hold[c] > 0.0 and out < p[FLAG]:
        hold[c] -= 1.0
        out = 0.0
    elif out >= p[HOLD_LEVEL] and p[HOLD] > 0.0:
        hold[c] = p[HOLD]
    score[c] = out


@njit(**JIT)
def anomaly_step(x, t, params, clock, env, level, episode, hold, flagged, score):
    """Score one poll cycle of every channel; return how many channels are flagged.

    A temperature channel between 19.5 and 20.5 °C, then a reading of 21 °C: half a
    span past its range, a1 = 0.5 / (0.5 + 0.02); it flags the channel, so the range
    does not learn it:

    >>> import numpy as np
    >>> bank = AnomalyBank(1, AnomalyParams(warm=5, train=0))
    >>> for i, v in enumerate([20.0, 20.5, 19.5, 20.2, 19.8, 20.1, 20.0]):
    ...     _ = bank.step(np.array([v]), 60.0 * i)
    >>> round(float(bank.step(np.array([21.0]), 420.0)[0]), 3)
    0.962
    >>> bool(bank.flagged[0]), float(bank.env[0, HI])
    (True, 20.5)
    """
    n = 0
    for c in range(x.shape[0]):
        _channel(c, x[c], t, params, clock, env, level, episode, hold, flagged, score)
        if flagged[c]:
            n += 1
    return n


@njit(**JIT)
def anomaly_run(x, t, params, clock, env, level, episode, hold, flagged, scores):
    """Score a recorded series, ``x`` float64[T, C] at times ``t`` float64[T], into
    ``scores`` float64[T, C], row by row exactly as T calls of ``anomaly_step``.
    """
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            _channel(c, x[i, c], t[i], params, clock, env, level, episode, hold, flagged,
                     scores[i])


class AnomalyTwin:
    """Plain-Python statement of the detector for one channel, written from the text at
    the top of this module; ``step`` returns the score and whether the reading flagged.
    """

    def __init__(self, params: AnomalyParams | None = None) -> None:
        self.p = params if params is not None else AnomalyParams()
        self.readings = 0
        self.last_t = math.nan
        self.typical_dt = math.nan
        self.lo = self.hi = self.s_lo = self.s_hi = 0.0  # the envelopes
        self.s = self.mu = self.d = self.up = self.down = 0.0
        self.excursion: list[tuple[float, float]] = []  # (reading, smoothed reading)
        self.excursion_flagged = False
        self.excursion_worst = 0.0
        self.hold_left = 0.0
        self.flagged = False

    @staticmethod
    def _per(alpha: float, intervals: float) -> float:
        """A per-interval factor over ``intervals`` intervals."""
        return alpha if intervals == 1.0 else 1.0 - (1.0 - alpha) ** intervals

    @staticmethod
    def _beyond(v: float, lo: float, hi: float) -> float:
        """Distance of v outside [lo, hi] in spans of it."""
        if lo <= v <= hi:
            return 0.0
        if hi - lo <= 0.0 or hi - lo == math.inf:
            return math.inf
        return (v - hi if v > hi else lo - v) / (hi - lo)

    def _novelty(self, r: float) -> float:
        return 1.0 if r == math.inf else r / (r + self.p.c)

    def _widen(self, readings: list[tuple[float, float]]) -> None:
        self.lo = min(self.lo, *(x for x, _ in readings))
        self.hi = max(self.hi, *(x for x, _ in readings))
        self.s_lo = min(self.s_lo, *(s for _, s in readings))
        self.s_hi = max(self.s_hi, *(s for _, s in readings))

    def _follow(self, x: float, intervals: float) -> None:
        residual = x - self.mu
        self.mu += self._per(self.p.alpha_mu, intervals) * residual
        self.d += self._per(self.p.alpha_d, intervals) * (abs(residual) - self.d)

    def step(self, x: float, t: float) -> tuple[float, bool]:
        p = self.p
        if math.isnan(x) or abs(x) > 1e15:  # no reading (±inf included)
            return 0.0, self.flagged
        first = self.readings == 0
        intervals = 1.0
        if not first:
            dt = t - self.last_t
            if dt <= 0.0:
                intervals = 0.0
            elif math.isnan(self.typical_dt):
                self.typical_dt = dt
            else:
                if dt >= 1.5 * self.typical_dt:
                    intervals = min(math.floor(dt / self.typical_dt + 0.5), 1000.0)
                clipped = min(max(dt, self.typical_dt / 4.0), 4.0 * self.typical_dt)
                self.typical_dt += 0.01 * (clipped - self.typical_dt)
        self.last_t = t
        self.s = x if first else self.s + self._per(p.alpha_s, intervals) * (x - self.s)

        score = 0.0
        up, down = self.up, self.down
        if self.readings >= p.warm:
            sigma = 1.2533 * self.d
            if sigma <= 0.0:
                sigma = 1e-12 * max(abs(self.mu), 1.0)
            z = max(-50.0, min(50.0, (x - self.mu) / sigma))
            up, down = max(0.0, up + z - p.k), max(0.0, down - z - p.k)
            score = max(self._novelty(self._beyond(x, self.lo, self.hi)),
                        p.w_s * self._novelty(self._beyond(self.s, self.s_lo, self.s_hi)),
                        min(1.0, p.flag * (max(up, down) * (1.0 / p.h)) ** p.gamma))

        trained = self.readings >= p.train and self.readings >= p.warm
        flag = trained and score >= p.flag
        outside = trained and not (self.lo <= x <= self.hi and self.s_lo <= self.s <= self.s_hi)
        if flag or outside:
            score_out = 0.0 if self.excursion and score <= self.excursion_worst else score
            self.excursion_worst = max(self.excursion_worst, score) if self.excursion else score
            if not self.excursion:
                self.excursion_flagged = False
            self.excursion.append((x, self.s))
            self.up, self.down, self.flagged = up, down, flag
            if flag:
                if self.excursion_flagged:
                    score_out = 0.0
                self.excursion_flagged = True
            else:
                self._follow(x, intervals)
            if len(self.excursion) >= p.relearn:  # a new normal
                self._widen(self.excursion)
                self.mu, self.up, self.down, self.flagged = x, 0.0, 0.0, False
                self.excursion = []
            score = score_out
        else:
            if self.excursion and not self.excursion_flagged:
                self._widen(self.excursion)
            self.excursion, self.flagged = [], False
            self.up, self.down = (0.0, 0.0) if max(up, down) >= p.h else (up, down)
            if first:
                self.lo = self.hi = x
                self.s_lo = self.s_hi = self.s
            else:
                self._widen([(x, self.s)])
                if p.decay > 0.0 and intervals > 0.0:
                    give = 0.5 * self._per(p.decay, intervals)
                    width, s_width = self.hi - self.lo, self.s_hi - self.s_lo
                    self.lo, self.hi = self.lo + give * width, self.hi - give * width
                    self.s_lo, self.s_hi = self.s_lo + give * s_width, self.s_hi - give * s_width
            if self.readings < p.warm:
                n = self.readings + 1.0
                residual = x - self.mu
                self.mu, self.d = self.mu + residual / n, self.d + (abs(residual) - self.d) / n
            else:
                self._follow(x, intervals)
        self.readings += 1

        if self.hold_left > 0 and score < p.flag:
            self.hold_left -= 1
            score = 0.0
        elif score >= p.hold_level and p.hold > 0:
            self.hold_left = p.hold
        return score, self.flagged


STATE = {"clock": (3,), "env": (4,), "level": (5,), "episode": (7,), "hold": (),
         "flagged": ()}


class AnomalyBank:
    """The anomaly state of C channels as arrays, checked once, stepped by the kernel.

    Args:
        channels: how many channels (C), one reading each per cycle.
        params: the detector's parameters; the defaults suit channels of any kind.
    """

    def __init__(self, channels: int, params: AnomalyParams | None = None) -> None:
        if isinstance(channels, bool) or not isinstance(channels, int | np.integer):
            raise TypeError(f"channels: expected an int, got {type(channels).__name__}")
        if channels < 1:
            raise ValueError(f"channels: {channels} must be >= 1")
        self.channels = int(channels)
        self.params = params if params is not None else AnomalyParams()
        if not isinstance(self.params, AnomalyParams):
            raise TypeError(f"params: expected AnomalyParams, got {type(params).__name__}")
        self._params = self.params.array()
        self.clock = np.zeros((self.channels, 3))
        self.clock[:, DT_TYP] = np.nan
        self.env = np.zeros((self.channels, 4))
        self.level = np.zeros((self.channels, 5))
        self.episode = np.zeros((self.channels, 7))
        self.hold = np.zeros(self.channels)
        self.flagged = np.zeros(self.channels, dtype=np.bool_)
        self.score = np.zeros(self.channels)

    def _floats(self, value: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"{name}: expected numbers, got dtype {array.dtype}")
        if array.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")
        return np.ascontiguousarray(array, dtype=np.float64)

    def step(self, x: np.ndarray, t: float) -> np.ndarray:
        """Score one poll cycle: ``x`` holds one reading per channel (NaN: none), taken
        at ``t`` seconds. Returns the scores, an array the next call overwrites.
        """
        x = self._floats(x, (self.channels,), "x (one reading per channel)")
        if not isinstance(t, int | float | np.floating | np.integer) or not math.isfinite(t):
            raise ValueError(f"t: {t!r} must be a finite time in seconds")
        anomaly_step(x, float(t), self._params, self.clock, self.env, self.level, self.episode,
                     self.hold, self.flagged, self.score)
        return self.score

    def run(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Score a recorded series in one call: ``x`` of shape (T, C), ``t`` of shape (T,).

        Returns the (T, C) scores, the same as T calls of ``step``, and leaves the
        state where those calls would.
        """
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"x: expected shape (T, {self.channels}), got {x.shape}")
        x = self._floats(x, (x.shape[0], self.channels), "x (T rows of one reading per "
                         "channel)")
        t = self._floats(t, (x.shape[0],), "t (one time per row of x)")
        if not np.isfinite(t).all():
            raise ValueError("t: every time must be finite")
        scores = np.zeros(x.shape)
        anomaly_run(x, t, self._params, self.clock, self.env, self.level, self.episode,
                    self.hold, self.flagged, scores)
        if len(scores):
            self.score[:] = scores[-1]
        return scores

    def state(self) -> dict[str, np.ndarray]:
        """The channels' state, one row per channel, to store so that a restart continues
        where it was.
        """
        return {name: getattr(self, name).copy() for name in STATE}

    def load(self, state: dict[str, np.ndarray]) -> None:
        """Continue from a ``state()``, whose arrays must be of this bank's shapes."""
        for name, tail in STATE.items():
            if name not in state:
                raise ValueError(f"{name}: missing from the state to load")
            target = getattr(self, name)
            array = np.asarray(state[name])
            if array.shape != (self.channels, *tail):
                raise ValueError(f"{name}: expected shape {(self.channels, *tail)}, "
                                 f"got {array.shape}")
            target[:] = array
