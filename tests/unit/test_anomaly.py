"""The anomaly kernel against its twin on random streams with NaN, inf, constant stretches,
gaps and clocks that go back; the series runner, the state round trip, and the
behaviours the detector is for: spikes and steps found, a slow leak not learned."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core import KERNELS, anomaly
from edge_agent.core.anomaly import HI, MU, AnomalyBank, AnomalyParams, AnomalyTwin, anomaly_step

NAN, INF = math.nan, math.inf

reading = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.floats(19.0, 21.0),  # a channel's normal band, so envelopes and CUSUMs form
    st.just(NAN), st.just(INF), st.just(-INF),
    st.sampled_from([0.0, 20.0, 1e15, -1e16]),  # exact repeats, and the reading limit
)
# time steps: regular, none, sub-interval, gaps, and clocks that go back
step_s = st.sampled_from([60.0, 60.0, 60.0, 0.0, 30.0, 90.0, 600.0, 86400.0, -60.0, -1.0])
SPECIAL = {"nan": NAN, "inf": INF, "-inf": -INF}

# small counts, so that short streams reach every branch: scoring, flags, episodes
# ended by relearning, holds
params = st.builds(
    AnomalyParams,
    warm=st.sampled_from([0.0, 1.0, 3.0]),
    train=st.sampled_from([0.0, 2.0, 10.0]),
    c=st.sampled_from([0.02, 0.5]),
    alpha_s=st.sampled_from([1.0 / 24.0, 0.5, 1.0]),
    w_s=st.sampled_from([0.5, 1.0]),
    alpha_mu=st.sampled_from([0.002, 0.3]),
    alpha_d=st.sampled_from([0.03, 0.5]),
    k=st.sampled_from([0.0, 1.0]),
    h=st.sampled_from([2.0, 100.0]),
    gamma=st.sampled_from([1.0, 2.0]),
    flag=st.sampled_from([0.5, 0.7, 1.0]),
    relearn=st.sampled_from([1.0, 3.0, 1000.0]),
    hold=st.sampled_from([0.0, 2.0]),
    hold_level=st.sampled_from([0.2, 0.9]),
    decay=st.sampled_from([0.0, 0.01]),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[list[float]], list[float]]:
    channels = draw(st.integers(1, 3))
    n = draw(st.integers(1, 60))
    rows = [draw(st.lists(reading, min_size=channels, max_size=channels)) for _ in range(n)]
    steps = [draw(step_s) for _ in range(n)]
    # NaN, inf, a gap, a clock going back or a constant stretch at the first, middle
    # and last positions
    for pos in sorted({0, n // 2, n - 1}):
        kind = draw(st.sampled_from(["nan", "inf", "-inf", "gap", "back", "hold", "none"]))
        if kind in SPECIAL:
            rows[pos] = [SPECIAL[kind]] * channels
        elif kind == "gap":
            steps[pos] = draw(st.sampled_from([3600.0, 1e6, 1e9]))
        elif kind == "back":
            steps[pos] = -draw(st.sampled_from([1.0, 3600.0]))
        elif kind == "hold":
            value = rows[pos]
            for k in range(pos, min(n, pos + draw(st.integers(2, 12)))):
                rows[k] = list(value)
    times = [float(v) for v in np.cumsum(steps) + 1.7e9]
    return rows, times


def _quiet_then(tail: list[float], n: int = 600) -> np.ndarray:
    """A channel swinging 20 ± 0.3 over 48 readings (a daily cycle, say) for n readings,
    then ``tail``: its range is learned within the first cycle."""
    return np.r_[20.0 + 0.3 * np.sin(2.0 * np.pi * np.arange(n) / 48.0), tail]


def _run_one(values: np.ndarray, params: AnomalyParams | None = None) -> AnomalyBank:
    bank = AnomalyBank(1, params)
    bank.run(values[:, None], 60.0 * np.arange(len(values)))
    return bank


@settings(max_examples=300, deadline=None)
@given(streams(), params)
def test_anomaly_kernel_equals_twin(stream: tuple, p: AnomalyParams) -> None:
    """Reading by reading, the compiled kernel and the twin give the same score and flag,
    every score is in [0, 1], and no NaN reaches a score or the state."""
    rows, times = stream
    bank = AnomalyBank(len(rows[0]), p)
    twins = [AnomalyTwin(p) for _ in rows[0]]
    for row, t in zip(rows, times, strict=True):
        scores = bank.step(np.array(row), t).tolist()
        expected = [twin.step(v, t) for twin, v in zip(twins, row, strict=True)]
        assert [s for s, _ in expected] == pytest.approx(scores, rel=1e-12, abs=1e-12)
        assert [f for _, f in expected] == bank.flagged.tolist()
        assert all(0.0 <= s <= 1.0 for s in scores)
    for name, array in bank.state().items():
        assert not np.isnan(array).any() or name == "clock", name
    assert not np.isnan(bank.clock[:, :2]).any()  # only the typical interval may be unknown


@settings(max_examples=50, deadline=None)
@given(streams(), params)
def test_anomaly_series_run_equals_steps(stream: tuple, p: AnomalyParams) -> None:
    """One call over a recorded series gives exactly the scores, and leaves exactly the
    state, of one step per row."""
    rows, times = stream
    x, t = np.array(rows), np.array(times)
    stepped = AnomalyBank(x.shape[1], p)
    expected = np.array([stepped.step(row, ti).copy() for row, ti in zip(x, t, strict=True)])
    batch = AnomalyBank(x.shape[1], p)
    assert np.array_equal(expected, batch.run(x, t))
    for name, array in stepped.state().items():
        assert np.array_equal(array, batch.state()[name], equal_nan=True), name


def test_anomaly_state_round_trip_continues_identically() -> None:
    """A bank restored from ``state()`` scores the rest of a stream as the original does."""
    rng = np.random.default_rng(7)
    x = rng.normal(20.0, 1.0, (900, 4))
    x[rng.random(x.shape) < 0.02] = np.nan
    x[700:720, 2] += 40.0  # an excursion, so that the state holds a flag episode
    x[705, 2] = 60.0
    t = 5.0 * np.arange(900)
    p = AnomalyParams(train=300)
    original = AnomalyBank(4, p)
    original.run(x[:710], t[:710])
    assert original.flagged[2]  # mid-excursion
    assert original.hold[2] > 0  # and mid-hold
    restored = AnomalyBank(4, p)
    restored.load(original.state())
    assert np.array_equal(original.run(x[710:], t[710:]), restored.run(x[710:], t[710:]))
    with pytest.raises(ValueError, match=r"clock: expected shape \(3, 3\), got \(4, 3\)"):
        AnomalyBank(3, p).load(original.state())


def test_anomaly_spike_after_a_stable_stretch_scores_high() -> None:
    """A single spike far outside the learned range scores near 1, once; the readings
    around it score low."""
    bank = AnomalyBank(1)
    scores = bank.run(_quiet_then([27.0, 20.0, 20.1, 19.9])[:, None],
                      60.0 * np.arange(604))[:, 0]
    assert scores[600] > 0.99
    assert scores[100:600].max() < 0.1
    assert scores[601:].max() == 0.0  # the hold: one report per event


def test_anomaly_step_change_scores_high_at_its_onset() -> None:
    """A lasting step of the level is scored high at its first reading, then no more
    while it lasts: the channel stays flagged instead."""
    bank = AnomalyBank(1, AnomalyParams(train=300))
    x = _quiet_then(list(24.0 + 0.3 * np.sin(2.0 * np.pi * np.arange(200) / 48.0)))
    scores = bank.run(x[:, None], 60.0 * np.arange(len(x)))[:, 0]
    assert scores[600] > 0.99
    assert scores[601:].max() == 0.0
    assert bank.flagged[0]


def test_anomaly_slow_ramp_is_flagged_and_not_learned() -> None:
    """A slow leak, starting inside the learned range: it is flagged, no flagged reading
    teaches the model anything, and the envelope keeps the range from before the leak
    (without protect, the model follows the leak)."""
    bank = AnomalyBank(1, AnomalyParams(train=300, relearn=10_000))
    ramp = 0.004 * np.arange(1, 401)  # +1.6 over 400 readings: 0.08 per cycle of ±0.3
    x = _quiet_then([])
    x = np.r_[x, 20.0 + ramp + 0.3 * np.sin(2.0 * np.pi * np.arange(600, 1000) / 48.0)]
    t = 60.0 * np.arange(len(x))
    flags = []
    for i in range(len(x)):
        before = (bank.level[0, MU], bank.level[0, 2], *bank.env[0])
        bank.step(x[i:i + 1], t[i])
        flags.append(bool(bank.flagged[0]))
        if bank.flagged[0]:
            assert before == (bank.level[0, MU], bank.level[0, 2], *bank.env[0]), i
    assert not any(flags[:600])
    assert sum(flags[600:]) > 100
    assert flags[-1]
    assert bank.env[0, HI] == pytest.approx(20.3, abs=1e-3)  # x reached 21.8
    unprotected = _run_one(x, AnomalyParams(train=1e9))
    assert unprotected.env[0, HI] > 21.7
    assert unprotected.level[0, MU] > bank.level[0, MU] + 0.3


def test_anomaly_missing_readings_score_zero_and_change_nothing() -> None:
    """NaN and ±inf readings score 0 and leave every state array as it was, the flag
    included; the next real reading carries on."""
    bank = AnomalyBank(2, AnomalyParams(train=0))
    x = _quiet_then([30.0], n=100)
    for i, v in enumerate(x):
        bank.step(np.array([v, 20.0]), 60.0 * i)
    assert bank.flagged[0]
    before = bank.state()
    for i, missing in enumerate((NAN, INF, -INF, 1e16)):
        assert [0.0, 0.0] == bank.step(np.array([missing, NAN]), 6060.0 + i).tolist()
    for name, array in bank.state().items():
        assert np.array_equal(before[name], array, equal_nan=True), name
    assert 0.0 == bank.step(np.array([20.0, 20.0]), 6120.0)[1]


def test_anomaly_gap_forgets_the_smoothed_level() -> None:
    """After a gap of many typical intervals the smoothed reading starts again from the
    reading; readings at the same time do not move it."""
    bank = AnomalyBank(1)
    for i in range(100):
        bank.step(np.array([20.0]), 60.0 * i)
    bank.step(np.array([25.0]), 60.0 * 99 + 60.0 * 5000)
    assert bank.level[0, 0] == pytest.approx(25.0, abs=1e-9)
    s = bank.level[0, 0]
    bank.step(np.array([10.0]), 60.0 * 99 + 60.0 * 5000)
    assert s == bank.level[0, 0]


def test_anomaly_bank_refuses_bad_input_with_reasons() -> None:
    """Shapes, dtypes and parameters are checked once, with the reason in the message."""
    bank = AnomalyBank(3)
    with pytest.raises(ValueError, match=r"x \(one reading per channel\): expected shape"):
        bank.step(np.zeros(2), 0.0)
    with pytest.raises(TypeError, match="expected numbers"):
        bank.step(np.array(["a", "b", "c"]), 0.0)
    with pytest.raises(ValueError, match="t: nan must be a finite time"):
        bank.step(np.zeros(3), NAN)
    with pytest.raises(ValueError, match=r"t \(one time per row of x\)"):
        bank.run(np.zeros((4, 3)), np.zeros(5))
    with pytest.raises(ValueError, match="expected shape"):
        bank.run(np.zeros(3), np.zeros(3))
    with pytest.raises(TypeError, match="channels: expected an int"):
        AnomalyBank(2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"c: 0\.0 must be > 0"):
        AnomalyParams(c=0.0)
    with pytest.raises(ValueError, match=r"alpha_mu: 2\.0 must be <= 1"):
        AnomalyParams(alpha_mu=2.0)
    with pytest.raises(ValueError, match=r"hold: 2\.5 must be a whole number"):
        AnomalyParams(hold=2.5)
    with pytest.raises(ValueError, match="train: inf must be finite"):
        AnomalyParams(train=INF)


def test_anomaly_is_a_registered_kernel_and_its_doctest_runs() -> None:
    """The conformance tests find the kernel, and its docstring example holds."""
    assert (anomaly_step, AnomalyTwin) == KERNELS["anomaly"]
    assert 0 == doctest.testmod(anomaly).failed


def test_anomaly_twin_written_for_one_channel_agrees_on_a_long_series() -> None:
    """On a long random walk with a leak and spikes (every path, the relearning too),
    the twin and the kernel agree to the last reading."""
    rng = np.random.default_rng(11)
    x = np.cumsum(rng.normal(0.0, 0.5, 3000)) + np.r_[np.zeros(2000), np.linspace(0, 60, 1000)]
    x[rng.integers(0, 3000, 20)] += 30.0
    x[rng.random(3000) < 0.01] = np.nan
    t = 10.0 * np.arange(3000) + rng.uniform(-2.0, 2.0, 3000)
    p = AnomalyParams(train=500, relearn=50)
    scores = AnomalyBank(1, p).run(x[:, None], t)[:, 0]
    twin = AnomalyTwin(p)
    expected = [twin.step(v, ti)[0] for v, ti in zip(x, t, strict=True)]
    assert expected == pytest.approx(scores.tolist(), rel=1e-12, abs=1e-12)
    assert (scores > 0.7).sum() >= 5
