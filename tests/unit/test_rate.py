"""The rate-of-rise kernel against its twin on random streams with NaN, inf, constant
stretches, gaps and clocks that go back; ramps, noise and the thermal-runaway figures
of SAFETY_REFERENCE §6."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core import rate
from edge_agent.core.rate import RateOfRiseBank, RateOfRiseTwin

NAN, INF = math.nan, math.inf
SPECIAL = {"nan": NAN, "inf": INF, "-inf": -INF}
step_s = st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 200.0])


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict, list[tuple[list[float], float]]]:
    channels = draw(st.integers(1, 3))

    def per_channel(strategy: st.SearchStrategy) -> list:
        return draw(st.lists(strategy, min_size=channels, max_size=channels))

    window = per_channel(st.sampled_from([10.0, 30.0, 60.0, 120.0]))
    params = {
        "window_s": window,
        "rise_per_min": per_channel(st.sampled_from([NAN, 0.5, 1.0, 8.0])),
        "min_samples": per_channel(st.sampled_from([3, 4, 5, 8])),
        "min_span_s": [w * draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])) for w in window],
        "on_delay_s": per_channel(st.sampled_from([0.0, 10.0, 30.0, 180.0])),
        "deadband": per_channel(st.sampled_from([0.0, 0.25, 1.0])),
        "capacity": draw(st.sampled_from([8, 10, 512])),  # >= min_samples
    }
    n = draw(st.integers(1, 60))
    steps = [draw(step_s) for _ in range(n)]
    # per channel: random readings, or a ramp (°C/min) with coarse noise
    kinds = per_channel(st.sampled_from(["random", 0.0, 0.5, 1.0, 2.0, 10.0]))
    noise = st.sampled_from([0.0, 0.0, 0.125, -0.125, 0.5])
    reading = st.one_of(st.floats(-50, 250, allow_nan=False), st.just(NAN), st.just(INF),
                        st.sampled_from([20.0, 21.0]))
    for pos in sorted({0, n // 2, n - 1}):
        kind = draw(st.sampled_from(["gap", "back", "none"]))
        if kind == "gap":
            steps[pos] = draw(st.sampled_from([150.0, 1000.0]))
        elif kind == "back":
            steps[pos] = -draw(st.sampled_from([1.0, 100.0]))
    t, times = draw(st.sampled_from([0.0, 1e6, -50.0])), []
    for dt in steps:
        t += dt
        times.append(t)
    rows = []
    for t in times:
        rows.append([draw(reading) if kind == "random" else 20.0 + kind * t / 60 + draw(noise)
                     for kind in kinds])
    for pos in sorted({0, n // 2, n - 1}):
        kind = draw(st.sampled_from(["nan", "inf", "-inf", "hold", "none"]))
        if kind in SPECIAL:
            rows[pos] = [SPECIAL[kind]] * channels
        elif kind == "hold":
            for k in range(pos, min(n, pos + 6)):
                rows[k] = list(rows[pos])
    return params, list(zip(rows, times, strict=True))


def bank_for(params: dict) -> RateOfRiseBank:
    return RateOfRiseBank(len(params["window_s"]), **params)


@settings(max_examples=300, deadline=None)
@given(streams())
def test_rate_kernel_equals_twin(case: tuple) -> None:
    """Step by step, the compiled kernel and the twin (least squares by math.fsum) agree
    on every channel's slope and alarm."""
    params, cycles = case
    bank = bank_for(params)
    names = ("window_s", "rise_per_min", "min_samples", "min_span_s", "on_delay_s", "deadband")
    twins = [RateOfRiseTwin(*(params[name][c] for name in names), capacity=params["capacity"])
             for c in range(bank.channels)]
    decided = [True] * bank.channels  # False once rounding could have decided the alarm
    for row, t in cycles:
        bank.step(np.array(row), t)
        for c, twin in enumerate(twins):
            slope, alarm = twin.step(row[c], t)
            got = bank.slope[c]
            assert math.isnan(slope) == math.isnan(got), (c, t, slope, got)
            if not math.isnan(slope):
                assert math.isclose(slope, got, rel_tol=1e-7, abs_tol=1e-8), (c, t)
                limit = params["rise_per_min"][c]
                for edge in (limit, limit - params["deadband"][c]):
                    if math.isclose(slope, edge, rel_tol=1e-7, abs_tol=1e-8):
                        decided[c] = False
            if decided[c]:
                assert alarm == bank.alarm[c], (c, t)


@settings(max_examples=200, deadline=None)
@given(streams())
def test_rate_series_runner_equals_the_step_loop(case: tuple) -> None:
    params, cycles = case
    stepped, series = bank_for(params), bank_for(params)
    slopes, alarms = [], []
    for row, t in cycles:
        stepped.step(np.array(row), t)
        slopes.append(stepped.slope.copy())
        alarms.append(stepped.alarm.copy())
    rows, times = zip(*cycles, strict=True)
    got = series.run(np.array(rows), np.array(times))
    np.testing.assert_array_equal(np.array(slopes), got["slope"])
    np.testing.assert_array_equal(np.array(alarms), got["alarm"])
    for name, saved in stepped.state().items():
        np.testing.assert_array_equal(saved, getattr(series, name), err_msg=name)


@settings(max_examples=200, deadline=None)
@given(streams(), st.integers(0, 60))
def test_rate_state_round_trip_continues_identically(case: tuple, cut: int) -> None:
    params, cycles = case
    cut = min(cut, len(cycles))
    rows, times = (np.array(a) for a in zip(*cycles, strict=True))
    whole, before, after = bank_for(params), bank_for(params), bank_for(params)
    expected = whole.run(rows, times)
    before.run(rows[:cut], times[:cut])
    after.load({name: array.tolist() for name, array in before.state().items()})
    rest = after.run(rows[cut:], times[cut:])
    for name in RateOfRiseBank.OUTPUTS:
        np.testing.assert_array_equal(expected[name][cut:], rest[name])


def series(values: np.ndarray, times: np.ndarray, **kwargs: object) -> dict[str, np.ndarray]:
    bank = RateOfRiseBank(1, **kwargs)
    return {name: out[:, 0] for name, out in bank.run(values[:, None], times).items()}


def test_rate_a_clean_ramp_gives_its_slope() -> None:
    """3 °C/min read every 2 s, with NaN readings mixed in, on a large clock."""
    times = 1.7e9 + np.arange(0.0, 600.0, 2.0)
    values = 25.0 + 3.0 * (times - times[0]) / 60.0
    values[::7] = NAN
    out = series(values, times, window_s=120.0)
    valid = out["slope"][~np.isnan(out["slope"])]
    assert len(valid) > 250
    np.testing.assert_allclose(valid, 3.0, rtol=0, atol=1e-9)
    assert np.isnan(out["slope"][:4]).all()  # fewer than 5 readings over 60 s


def test_rate_noise_on_a_flat_line_stays_far_below_the_limit() -> None:
    """σ = 0.5 °C of white noise read every second, window 120 s: the slope's standard
    deviation is 60σ/sqrt(Σ(t − t̄)²) = 0.078 °C/min, so the 1 °C/min pre-warning sits
    12.8 σ away; over 24 h the largest slope stays under half the limit."""
    rng = np.random.default_rng(20240601)
    times = np.arange(0.0, 24 * 3600.0, 1.0)
    values = 22.0 + rng.normal(0.0, 0.5, times.size)
    out = series(values, times, window_s=120.0, rise_per_min=1.0)
    n = 121
    sd = 60 * 0.5 / math.sqrt(n * (n * n - 1) / 12)
    assert 0.078 == pytest.approx(sd, abs=5e-4)
    steady = out["slope"][200:]
    assert 0.9 * sd < np.std(steady) < 1.1 * sd
    assert np.abs(steady).max() < 6 * sd < 1.0 / 2
    assert not out["alarm"].any()


def ramp_from(start_s: float, rate_per_min: float, end_s: float = 1800.0,
              every_s: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Flat 25 °C, then a ramp of ``rate_per_min`` from ``start_s`` on."""
    times = np.arange(0.0, end_s, every_s)
    return 25.0 + rate_per_min * np.clip(times - start_s, 0, None) / 60.0, times


def first_alarm(out: dict[str, np.ndarray], times: np.ndarray) -> float:
    raised = np.flatnonzero(out["alarm"])
    return float(times[raised[0]]) if raised.size else math.inf


def test_rate_pre_warning_at_1_c_per_min_sustained_3_min() -> None:
    """§6.4 pre-warning: ≥ 1 °C/min for ≥ 3 min. A 1.2 °C/min rise from t = 600 s is
    flagged once the slope has held for 180 s (not before 780 s, and within the window
    after that); 0.8 °C/min never is."""
    kwargs = {"window_s": 120.0, "rise_per_min": 1.0, "on_delay_s": 180.0}
    values, times = ramp_from(600.0, 1.2)
    raised = first_alarm(series(values, times, **kwargs), times)
    assert 600 + 180 <= raised <= 600 + 180 + 120
    values, times = ramp_from(600.0, 0.8)
    assert not series(values, times, **kwargs)["alarm"].any()


def test_rate_alarm_at_8_c_per_min() -> None:
    """§6.4 alarm L2 / heat-detector practice: ≥ ~8 °C/min. A 10 °C/min rise is flagged
    within the 60 s window; the 1.2 °C/min pre-warning rise is not."""
    kwargs = {"window_s": 60.0, "rise_per_min": 8.0}
    values, times = ramp_from(600.0, 10.0)
    raised = first_alarm(series(values, times, **kwargs), times)
    assert 600 < raised <= 600 + 60
    values, times = ramp_from(600.0, 1.2)
    assert not series(values, times, **kwargs)["alarm"].any()


def test_rate_does_not_alarm_on_two_points() -> None:
    """Two readings 10 °C apart give no estimate at all (min_samples >= 3)."""
    out = series(np.array([20.0, 30.0, NAN]), np.array([0.0, 60.0, 70.0]), window_s=120.0,
                 rise_per_min=1.0, min_samples=3, min_span_s=0.0)
    assert np.isnan(out["slope"]).all()
    assert not out["alarm"].any()


def test_rate_gap_longer_than_the_window_restarts() -> None:
    times = np.array([0.0, 10.0, 20.0, 30.0, 200.0, 210.0, 220.0, 230.0])
    values = 20.0 + times / 10.0
    out = series(values, times, window_s=60.0, min_samples=3, min_span_s=20.0)
    assert [False, False, True, True, False, False, True, True] == list(~np.isnan(out["slope"]))


def test_rate_clock_going_back_restarts_and_keeps_the_alarm() -> None:
    """A clock set back: the readings before it cannot be placed, the estimate starts
    again, and the raised alarm stays until a valid slope clears it."""
    times = np.array([0.0, 10.0, 20.0, 30.0, 5.0, 15.0, 25.0])
    values = np.array([20.0, 22.0, 24.0, 26.0, 26.0, 26.0, 26.0])
    out = series(values, times, window_s=60.0, rise_per_min=5.0, min_samples=3,
                 min_span_s=0.0)
    assert [False, False, True, True, True, True, False] == out["alarm"].tolist()
    assert np.isnan(out["slope"][4:6]).all()


def test_rate_deadband_holds_the_alarm() -> None:
    """Raised at 1 °C/min, held while the slope stays above 1 − 0.5, cleared below."""
    times = np.arange(0.0, 400.0, 10.0)
    rates = np.where(times < 150, 1.2, np.where(times < 300, 0.7, 0.2))
    values = 20.0 + np.concatenate([[0.0], np.cumsum(rates[:-1] * 10.0 / 60.0)])
    out = series(values, times, window_s=30.0, rise_per_min=1.0, deadband=0.5,
                 min_samples=3, min_span_s=0.0)
    assert out["alarm"][140 // 10]
    assert out["alarm"][290 // 10]
    assert not out["alarm"][-1]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window_s": 0.0}, "window_s: must be finite and > 0"),
    ({"window_s": [10.0, 20.0]}, "window_s: expected a scalar or 1 entries"),
    ({"rise_per_min": INF}, "rise_per_min: must be finite"),
    ({"min_samples": 2}, r"min_samples: must be >= 3 \(two points"),
    ({"min_samples": 600}, r"min_samples: must be <= capacity \(512\)"),
    ({"min_span_s": -1.0}, "min_span_s: must be finite and >= 0"),
    ({"min_span_s": 200.0}, "min_span_s: must be <= window_s"),
    ({"on_delay_s": NAN}, "on_delay_s: must be finite and >= 0"),
    ({"deadband": -0.1}, "deadband: must be finite and >= 0"),
    ({"capacity": 2}, "capacity: must be a whole number >= 3"),
])
def test_rate_bank_refuses_bad_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateOfRiseBank(1, **kwargs)


def test_rate_bank_refuses_bad_inputs_and_states() -> None:
    bank = RateOfRiseBank(2)
    with pytest.raises(ValueError, match=r"x: expected a float64 array of shape \(2,\)"):
        bank.step(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="t: must be a finite time"):
        bank.step(np.zeros(2), INF)
    with pytest.raises(ValueError, match=r"x: expected a float64 array of shape \(T, 2\)"):
        bank.run(np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"state\['ring'\]: expected float64\[2, 512, 2\]"):
        bank.load(RateOfRiseBank(2, capacity=8).state())


def test_rate_doctest() -> None:
    assert 0 == doctest.testmod(rate).failed
