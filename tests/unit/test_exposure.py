"""The exposure kernel (STEL, TWA, peak rule) against its twin on random streams with
NaN, inf, constant stretches, gaps and clocks that go back; scripted series whose
figures are worked out by hand."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core import exposure
from edge_agent.core.exposure import ExposureBank, ExposureTwin

NAN, INF = math.nan, math.inf
MIN = 60.0
HOUR = 3600.0

reading = st.one_of(
    st.floats(-5, 200, allow_nan=False),
    st.just(NAN), st.just(INF), st.just(-INF),
    st.sampled_from([0.0, 10.0, 15.0, 30.0, 50.0, 75.0]),  # limits and their multiples
)
# time steps (dyadic, so that every time is exact): none, sub-minute, minute edges, past
# the STEL window, past the 8 h window, and clocks that go back
step_s = st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0, 30.0, 59.5, 60.0, 61.0, 120.0, 300.0,
                          900.0, 3600.0, 30000.0, -1.0, -60.0, -1000.0])
SPECIAL = {"nan": NAN, "inf": INF, "-inf": -INF}


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict, list[tuple[list[float], float, list[bool]]]]:
    channels = draw(st.integers(1, 3))

    def per_channel(strategy: st.SearchStrategy) -> list:
        return draw(st.lists(strategy, min_size=channels, max_size=channels))

    params = {
        "max_gap_s": per_channel(st.sampled_from([1.0, 5.0, 10.0, 30.0, 60.0, 300.0])),
        "stel_limit": per_channel(st.sampled_from([NAN, 5.0, 25.0, 50.0])),
        "twa_limit": per_channel(st.sampled_from([NAN, 5.0, 10.0, 25.0])),
        "twa_mode": per_channel(st.sampled_from(["moving8h", "shift"])),
    }
    n = draw(st.integers(1, 40))
    rows = [per_channel(reading) for _ in range(n)]
    steps = [draw(step_s) for _ in range(n)]
    resets = [per_channel(st.sampled_from([False] * 6 + [True])) for _ in range(n)]
    # NaN, inf, a long gap, a clock going back or a constant stretch at the first,
    # middle and last positions
    for pos in sorted({0, n // 2, n - 1}):
        kind = draw(st.sampled_from(["nan", "inf", "-inf", "gap", "back", "hold", "none"]))
        if kind in SPECIAL:
            rows[pos] = [SPECIAL[kind]] * channels
        elif kind == "gap":
            steps[pos] = draw(st.sampled_from([1000.0, 9 * HOUR, 40 * HOUR]))
        elif kind == "back":
            steps[pos] = -draw(st.sampled_from([0.5, 61.0, 2 * HOUR]))
        elif kind == "hold":
            for k in range(pos, min(n, pos + 5)):
                rows[k] = list(rows[pos])
    t, times = draw(st.sampled_from([0.0, 17.5, -300.0, 1.7e9])), []
    for dt in steps:
        t += dt
        times.append(t)
    return params, list(zip(rows, times, resets, strict=True))


def bank_for(params: dict) -> ExposureBank:
    return ExposureBank(len(params["max_gap_s"]), max_gap_s=params["max_gap_s"],
                        stel_limit=params["stel_limit"], twa_limit=params["twa_limit"],
                        twa_mode=params["twa_mode"])


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=300, deadline=None)
@given(streams())
def test_exposure_kernel_equals_twin(case: tuple) -> None:
    """Step by step, the compiled kernel and the twin written from §5.4 agree on every
    channel's STEL, TWA, coverage and flags."""
    params, cycles = case
    bank = bank_for(params)
    twins = [ExposureTwin(params["max_gap_s"][c], params["twa_mode"][c],
                          params["stel_limit"][c], params["twa_limit"][c])
             for c in range(bank.channels)]
    for row, t, reset in cycles:
        bank.step(np.array(row), t, np.array(reset))
        for c, twin in enumerate(twins):
            want = twin.step(row[c], t, reset[c])
            for name in ("stel", "twa", "stel_cov", "twa_cov"):
                assert close(want[name], getattr(bank, name)[c]), (name, c, t)
            for name, value, limit in (("stel_over", "stel", "stel_limit"),
                                       ("twa_over", "twa", "twa_limit")):
                if not close(want[value], params[limit][c]):  # rounding decides at the limit
                    assert want[name] == getattr(bank, name)[c], (name, c, t)
            for name in ("peak_over", "peak_breach", "excursions"):
                assert want[name] == getattr(bank, name)[c], (name, c, t)


def as_series(cycles: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, times, resets = zip(*cycles, strict=True)
    return np.array(rows), np.array(times), np.array(resets)


@settings(max_examples=200, deadline=None)
@given(streams())
def test_exposure_series_runner_equals_the_step_loop(case: tuple) -> None:
    """The compiled series runner gives exactly what stepping row by row gives."""
    params, cycles = case
    stepped, series = bank_for(params), bank_for(params)
    expected = {name: [] for name in ExposureBank.OUTPUTS}
    for row, t, reset in cycles:
        stepped.step(np.array(row), t, np.array(reset))
        for name in ExposureBank.OUTPUTS:
            expected[name].append(getattr(stepped, name).copy())
    got = series.run(*as_series(cycles))
    for name in ExposureBank.OUTPUTS:
        np.testing.assert_array_equal(np.array(expected[name]), got[name], err_msg=name)
    for name, saved in stepped.state().items():
        np.testing.assert_array_equal(saved, getattr(series, name), err_msg=name)


@settings(max_examples=200, deadline=None)
@given(streams(), st.integers(0, 40))
def test_exposure_state_round_trip_continues_identically(case: tuple, cut: int) -> None:
    """A bank restored from ``state()`` after a restart continues exactly as the one that
    never stopped."""
    params, cycles = case
    cut = min(cut, len(cycles))
    whole, before = bank_for(params), bank_for(params)
    whole_out = whole.run(*as_series(cycles))
    if cut:
        before.run(*as_series(cycles[:cut]))
    after = bank_for(params)
    after.load({name: array.tolist() for name, array in before.state().items()})  # via SQL
    if cut < len(cycles):
        rest = after.run(*as_series(cycles[cut:]))
        for name in ExposureBank.OUTPUTS:
            np.testing.assert_array_equal(whole_out[name][cut:], rest[name], err_msg=name)


def run_one(values: list[float], times: list[float], **kwargs: object) -> dict[str, np.ndarray]:
    """One channel's outputs after each cycle."""
    bank = ExposureBank(1, **kwargs)
    return {name: out[:, 0] for name, out in
            bank.run(np.array(values, dtype=float)[:, None], np.array(times, dtype=float)).items()}


def test_exposure_osha_example_81_25_ppm() -> None:
    """OSHA 1910.1000(d)(1)(i): 2 h at 150 + 2 h at 75 + 4 h at 50 ppm → 81.25 ppm over 8 h,
    in both modes, with the 8 h fully covered."""
    times = np.arange(0.0, 8 * HOUR + 1, 10.0)
    values = np.where(times < 2 * HOUR, 150.0, np.where(times < 4 * HOUR, 75.0, 50.0))
    for mode in ("shift", "moving8h"):
        out = run_one(list(values), list(times), max_gap_s=10.0, twa_limit=100.0, twa_mode=mode)
        assert 81.25 == pytest.approx(out["twa"][-1], rel=1e-12)
        assert 8 * HOUR == out["twa_cov"][-1]
        assert not out["twa_over"][-1]
        # after 4 h: shift mode has 2·150 + 2·75 = 450 ppm·h of the 8 h so far
        at_4h = int(4 * HOUR / 10)
        assert 450 / 8 == pytest.approx(out["twa"][at_4h], rel=1e-12)


def test_exposure_shift_twa_never_decreases_and_moving_forgets() -> None:
    """Past 8 h of clean air after the exposure, the moving TWA is 0 again; the shift TWA
    keeps its sum (RAE TN-119: it never decreases within a shift) until a reset."""
    times = list(np.arange(0.0, 10 * HOUR, 30.0))
    values = [40.0 if t < HOUR else 0.0 for t in times]
    shift = run_one(values, times, max_gap_s=30.0, twa_mode="shift")
    moving = run_one(values, times, max_gap_s=30.0)
    assert (np.diff(shift["twa"]) >= 0).all()
    assert 40.0 * 60 / 480 == pytest.approx(shift["twa"][-1])
    assert 0.0 == moving["twa"][-1]
    bank = ExposureBank(1, max_gap_s=30.0, twa_mode="shift")
    bank.run(np.array(values)[:, None], np.array(times))
    bank.step(np.array([0.0]), 10 * HOUR, reset=np.array([True]))
    bank.step(np.array([0.0]), 10 * HOUR + MIN)
    assert 0.0 == bank.twa[0]
    assert MIN == bank.twa_cov[0]


def test_exposure_a_10_minute_pulse_weighs_10_15_of_stel() -> None:
    """STEL = pulse × 10/15 once the pulse is inside the 15 closed minutes, and the
    divisor is 15 from the start (GBZ 2.1: averaged over 15 min even if shorter)."""
    times = list(np.arange(0.0, 40 * MIN, 1.0))
    values = [60.0 if 5 * MIN <= t < 15 * MIN else 0.0 for t in times]
    out = run_one(values, times, max_gap_s=1.0, stel_limit=30.0)
    at = {m: int(m * MIN) for m in (6, 15, 20, 25, 30, 31)}
    assert 60.0 / 15 == pytest.approx(out["stel"][at[6]])  # one pulse minute closed
    assert 60.0 * 10 / 15 == pytest.approx(out["stel"][at[15]])
    assert 60.0 * 10 / 15 == pytest.approx(out["stel"][at[20]])
    assert 60.0 * 5 / 15 == pytest.approx(out["stel"][at[25]])
    assert 0.0 == out["stel"][at[30]]
    assert out["stel_over"][at[15]]
    assert out["stel_over"][at[20]]
    assert not out["stel_over"][at[25]]
    assert 15 * MIN == out["stel_cov"][at[20]]
    assert 6 * MIN == out["stel_cov"][at[6]]  # partial: only 6 minutes of data so far


def test_exposure_running_8h_sums_stay_the_sums_of_the_ring() -> None:
    """The 8-h sums run (added and taken off as minutes close) and are summed afresh
    every 480 minutes: over 30 h of readings from 0 to 1000 ppm, with missing ones, a
    3-h gap and a clock going back, they never drift from the ring's own sums."""
    rng = np.random.default_rng(11)
    times = np.arange(0.0, 30 * HOUR, 10.0)
    times[times > 20 * HOUR] += 3 * HOUR
    times[times > 25 * HOUR] -= 1000.0
    x = rng.choice([0.0, 3.0, 1000.0, 0.125], size=(times.size, 3)) * rng.random((times.size, 3))
    x[rng.random(x.shape) < 0.05] = NAN
    bank = ExposureBank(3, max_gap_s=10.0, twa_limit=10.0)
    worst = 0.0
    for row, t in zip(x, times, strict=True):
        bank.step(row, t)
        exact = np.stack([bank.avg_ring.sum(axis=1), bank.cov_ring.sum(axis=1)], axis=1)
        worst = max(worst, float(np.abs(bank.sums[:, 2:] - exact).max()))
    assert worst < 1e-9
    assert bank.closed.min() > 3 * 480  # the ring went round and was summed afresh


def test_exposure_a_channel_added_to_a_restored_bank_starts_like_a_fresh_one() -> None:
    """The engine restores a bank row by row: a channel new in the config gets a fresh
    row under the saved clock, in the middle of a minute. It must count exactly like a
    channel of a bank started at that cycle."""
    rng = np.random.default_rng(5)
    times = np.arange(0.0, 3 * HOUR, 5.0) + 17.0
    x = rng.choice([0.0, 20.0, 60.0], size=(times.size, 2))
    cut = 1001  # mid-minute: 17 + 5005 s
    old = ExposureBank(2, max_gap_s=5.0, stel_limit=30.0, twa_limit=20.0)
    old.run(x[:cut], times[:cut])
    merged = old.state()
    for name, array in ExposureBank(2, max_gap_s=5.0).state().items():
        if name != "clock":
            merged[name][1] = array[1]
    old.load(merged)
    fresh = ExposureBank(1, max_gap_s=5.0, stel_limit=30.0, twa_limit=20.0)
    got, want = old.run(x[cut:], times[cut:]), fresh.run(x[cut:, 1:], times[cut:])
    for name in ExposureBank.OUTPUTS:
        np.testing.assert_array_equal(got[name][:, 1], want[name][:, 0], err_msg=name)


def test_exposure_values_change_only_when_a_minute_closes() -> None:
    """The open minute is in no window: a spike at the start of a minute does not weigh
    as a whole minute until that minute is over."""
    out = run_one([0.0, 300.0, 0.0, 0.0], [0.0, 60.0, 61.0, 120.0], max_gap_s=1.0)
    assert [0.0, 0.0, 0.0] == list(out["stel"][:3])
    # minute 1: 1 s of 300 ppm and 2 s of 0 ppm covered, its average 100 ppm
    assert 100.0 / 15 == pytest.approx(out["stel"][3])
    assert 2.0 + 3.0 == out["stel_cov"][3]


def test_exposure_negative_readings_count_as_zero() -> None:
    out = run_one([-3.0, -3.0, -3.0], [0.0, 30.0, 60.0], max_gap_s=30.0)
    assert 0.0 == out["stel"][-1]
    assert 60.0 == out["stel_cov"][-1]


def test_exposure_a_dead_sensor_does_not_extend_its_last_value() -> None:
    """A reading counts for at most 2 × the poll interval: after 100 ppm at t=0 and then
    nothing, minute 0 holds 20 s of 100 ppm (avg 100 over its covered seconds) and no
    more minutes are covered."""
    times = list(np.arange(0.0, 5 * MIN + 1, 10.0))
    values = [100.0] + [NAN] * (len(times) - 1)
    out = run_one(values, times, max_gap_s=10.0)
    assert 100.0 / 15 == pytest.approx(out["stel"][-1])
    assert 20.0 == out["stel_cov"][-1]


def test_exposure_restart_after_9_hours_leaves_a_gap_not_a_stretched_value() -> None:
    """The agent was down 9 h: the missing minutes have no exposure and no coverage; the
    shift TWA keeps what was measured, the windows no longer hold any of it."""
    times = [0.0, 60.0, 120.0, 180.0, 180.0 + 9 * HOUR, 240.0 + 9 * HOUR]
    values = [50.0, 50.0, 50.0, 50.0, 0.0, 0.0]
    for mode in ("moving8h", "shift"):
        out = run_one(values, times, max_gap_s=60.0, twa_mode=mode)
        assert 0.0 == out["stel"][-1]
        assert 60.0 == out["stel_cov"][-1]  # the one minute after the restart
        if mode == "shift":
            # minutes 0–4 at 50 ppm (the last reading counts 120 s = 2 × its poll interval)
            assert 50.0 * 5 / 480 == pytest.approx(out["twa"][-1])
            assert 6 * MIN == out["twa_cov"][-1]
        else:
            assert 0.0 == out["twa"][-1]
            assert 60.0 == out["twa_cov"][-1]


def test_exposure_clock_going_back_closes_the_bucket_and_keeps_the_windows() -> None:
    """A clock set back 1000 s: the open minute is closed as it stands, the closed
    minutes stay in the windows, and counting goes on from the new clock."""
    times = [0.0, 60.0, 120.0, 150.0, 150.0 - 1000.0, 150.0 - 1000.0 + 60.0,
             150.0 - 1000.0 + 120.0]
    values = [30.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0]
    out = run_one(values, times, max_gap_s=60.0)
    # minutes 0, 1 closed at 30 ppm; the open minute 2 closed with its 30 s; then on the
    # new clock minute -15 [-900, -840) closes at -790 with 10 s, minute -14 at -730
    assert 30.0 * 3 / 15 == pytest.approx(out["stel"][4])
    assert 150.0 == out["stel_cov"][4]
    assert 30.0 * 4 / 15 == pytest.approx(out["stel"][5])
    assert 30.0 * 5 / 15 == pytest.approx(out["stel"][6])
    assert np.isfinite(out["stel"]).all()
    assert (out["stel_cov"] <= 15 * MIN).all()


def test_exposure_peak_rule_for_a_twa_only_gas() -> None:
    """PC-TWA 10, no PC-STEL: above 50 (5×) flags at once; an excursion above 30 (3×)
    lasting over 15 min, or starting < 1 h after the previous one, breaks the rule."""
    t = list(np.arange(0.0, 20 * MIN, 10.0))
    out = run_one([60.0 if s < 30 else 20.0 for s in t], t, max_gap_s=10.0, twa_limit=10.0)
    assert out["peak_over"][0]
    assert not out["peak_over"][-1]
    assert not out["peak_breach"].any()
    long = run_one([35.0] * len(t), t, max_gap_s=10.0, twa_limit=10.0)
    assert not long["peak_breach"][90]
    assert long["peak_breach"][91]
    assert 1 == long["excursions"][-1]
    soon = run_one([35.0, 0.0, 35.0, 0.0], [0.0, 60.0, 60.0 + HOUR - 1, 60.0 + HOUR],
                   max_gap_s=10.0, twa_limit=10.0)
    assert [False, False, True, True] == soon["peak_breach"].tolist()
    spaced = run_one([35.0, 0.0, 35.0, 0.0], [0.0, 60.0, 60.0 + HOUR, 60.0 + HOUR + 1],
                     max_gap_s=10.0, twa_limit=10.0)
    assert not spaced["peak_breach"].any()
    assert 2 == spaced["excursions"][-1]


def test_exposure_peak_rule_fifth_excursion_and_shift_reset() -> None:
    bank = ExposureBank(1, max_gap_s=10.0, twa_limit=10.0)
    for k in range(5):
        bank.step(np.array([35.0]), k * 2 * HOUR)
        bank.step(np.array([0.0]), k * 2 * HOUR + 60)
        assert (k == 4) == bank.peak_breach[0]
    bank.step(np.array([0.0]), 10 * 2 * HOUR, reset=np.array([True]))
    assert not bank.peak_breach[0]
    assert 0 == bank.excursions[0]


def test_exposure_peak_rule_off_where_a_stel_exists() -> None:
    out = run_one([100.0, 100.0], [0.0, 1000.0], max_gap_s=10.0, twa_limit=10.0,
                  stel_limit=20.0)
    assert not out["peak_over"].any()
    assert not out["peak_breach"].any()


def test_exposure_nan_limits_turn_rules_off() -> None:
    out = run_one([1000.0] * 20, list(np.arange(0.0, 20 * MIN, MIN)), max_gap_s=60.0)
    assert out["stel"][-1] > 0
    assert not (out["stel_over"] | out["twa_over"] | out["peak_over"]).any()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"channels": 0, "max_gap_s": 1.0}, "channels: must be a whole number >= 1"),
    ({"channels": 2, "max_gap_s": [1.0, 2.0, 3.0]}, r"max_gap_s: expected a scalar or 2"),
    ({"channels": 1, "max_gap_s": 0.0}, "max_gap_s: must be > 0"),
    ({"channels": 1, "max_gap_s": NAN}, "max_gap_s: must be > 0"),
    ({"channels": 1, "max_gap_s": 1e6}, "max_gap_s: must be > 0 and <= 3600"),
    ({"channels": 1, "max_gap_s": 1.0, "stel_limit": -1.0}, "stel_limit: must be > 0"),
    ({"channels": 1, "max_gap_s": 1.0, "twa_limit": INF}, "twa_limit: must be > 0 and finite"),
    ({"channels": 1, "max_gap_s": 1.0, "twa_mode": "daily"}, "twa_mode: expected 1 of"),
    ({"channels": 2, "max_gap_s": 1.0, "twa_mode": ["shift"]}, "twa_mode: expected 2 of"),
])
def test_exposure_bank_refuses_bad_parameters(kwargs: dict, message: str) -> None:
    channels = kwargs.pop("channels")
    with pytest.raises(ValueError, match=message):
        ExposureBank(channels, **kwargs)


def test_exposure_bank_refuses_bad_inputs_and_states() -> None:
    bank = ExposureBank(2, max_gap_s=1.0)
    with pytest.raises(ValueError, match=r"x: expected a float64 array of shape \(2,\)"):
        bank.step(np.array([1, 2]), 0.0)
    with pytest.raises(ValueError, match="reset: expected a bool array"):
        bank.step(np.zeros(2), 0.0, reset=np.zeros(2))
    with pytest.raises(ValueError, match="t: must be a finite time"):
        bank.step(np.zeros(2), NAN)
    with pytest.raises(ValueError, match=r"t: expected a float64 array of shape \(3,\)"):
        bank.run(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="t: every time must be finite"):
        bank.run(np.zeros((1, 2)), np.array([INF]))
    saved = bank.state()
    del saved["shift"]
    with pytest.raises(ValueError, match=r"state: missing \['shift'\]"):
        bank.load(saved)
    with pytest.raises(ValueError, match=r"state\['held'\]: expected float64\[2\]"):
        bank.load({**ExposureBank(3, max_gap_s=1.0).state()})


def test_exposure_kernel_takes_a_non_finite_time_as_no_time_passing() -> None:
    """The bank refuses it; the kernel itself, called directly, neither crashes nor
    counts any time for a NaN t."""
    bank = ExposureBank(1, max_gap_s=60.0)
    bank.step(np.array([10.0]), 0.0)
    args = bank._params()
    outputs = [getattr(bank, name) for name in bank.OUTPUTS]
    exposure.exposure_step(np.array([10.0]), NAN, np.zeros(1, np.bool_), *args, *outputs)
    assert 0.0 == bank.clock[0]
    assert 0.0 == bank.stel_cov[0]


def test_exposure_doctest() -> None:
    assert 0 == doctest.testmod(exposure).failed
