"""The sensor-fault kernel (stuck, spike, gap, drift) against its twin on random streams
with NaN, inf, constant stretches, gaps and clocks that go back; scripted faults."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core import sensor_faults
from edge_agent.core.sensor_faults import SensorFaultBank, SensorFaultTwin

NAN, INF = math.nan, math.inf
SPECIAL = {"nan": NAN, "inf": INF, "-inf": -INF}
reading = st.one_of(
    st.floats(-50, 250, allow_nan=False),
    st.just(NAN), st.just(INF), st.just(-INF),
    st.sampled_from([5.0, 5.0, 5.04, 5.5, 20.0]),  # flat, within epsilon, a drifted twin
)
step_s = st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 100.0])


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict, list[tuple[list[float], float]]]:
    channels = draw(st.integers(1, 4))

    def per_channel(strategy: st.SearchStrategy) -> list:
        return draw(st.lists(strategy, min_size=channels, max_size=channels))

    pair = st.tuples(st.integers(0, channels - 1), st.integers(0, channels - 1),
                     st.sampled_from([0.0, 0.5, 10.0]), st.sampled_from([0.0, 5.0, 30.0]))
    params = {
        "epsilon": per_channel(st.sampled_from([0.0, 0.05, 0.5, 2.0])),
        "stuck_s": per_channel(st.sampled_from([NAN, 5.0, 30.0, 120.0])),
        "max_rate": per_channel(st.sampled_from([NAN, 0.5, 5.0, 50.0])),
        "gap_s": per_channel(st.sampled_from([NAN, 2.0, 10.0, 60.0])),
        "pairs": [p for p in draw(st.lists(pair, max_size=4)) if p[0] != p[1]],
    }
    n = draw(st.integers(1, 50))
    rows = [per_channel(reading) for _ in range(n)]
    steps = [draw(step_s) for _ in range(n)]
    for pos in sorted({0, n // 2, n - 1}):
        kind = draw(st.sampled_from(["nan", "inf", "-inf", "gap", "back", "hold", "none"]))
        if kind in SPECIAL:
            rows[pos] = [SPECIAL[kind]] * channels
        elif kind == "gap":
            steps[pos] = draw(st.sampled_from([90.0, 1000.0]))
        elif kind == "back":
            steps[pos] = -draw(st.sampled_from([0.5, 50.0, 5000.0]))
        elif kind == "hold":
            for k in range(pos, min(n, pos + 8)):
                rows[k] = list(rows[pos])
    t, times = draw(st.sampled_from([0.0, 1.7e9, -20.0])), []
    for dt in steps:
        t += dt
        times.append(t)
    return params, list(zip(rows, times, strict=True))


def bank_for(params: dict) -> SensorFaultBank:
    return SensorFaultBank(len(params["epsilon"]), **params)


@settings(max_examples=300, deadline=None)
@given(streams())
def test_sensor_faults_kernel_equals_twin(case: tuple) -> None:
    """Step by step, the compiled kernel and the twin agree exactly on every flag and on
    the clean reading."""
    params, cycles = case
    bank = bank_for(params)
    twin = SensorFaultTwin(params["epsilon"], params["stuck_s"], params["max_rate"],
                           params["gap_s"], params["pairs"])
    for row, t in cycles:
        n = bank.step(np.array(row), t)
        want = twin.step(row, t)
        for name in ("stuck", "spike", "gap", "drift"):
            assert want[name] == getattr(bank, name).tolist(), (name, t)
        np.testing.assert_array_equal(np.array(want["clean"]), bank.clean, err_msg=str(t))
        faulty = [any(want[name][c] for name in ("stuck", "spike", "gap", "drift"))
                  for c in range(len(row))]
        assert sum(faulty) == n


@settings(max_examples=200, deadline=None)
@given(streams())
def test_sensor_faults_series_runner_equals_the_step_loop(case: tuple) -> None:
    params, cycles = case
    stepped, series = bank_for(params), bank_for(params)
    expected = {name: [] for name in SensorFaultBank.OUTPUTS}
    for row, t in cycles:
        stepped.step(np.array(row), t)
        for name in SensorFaultBank.OUTPUTS:
            expected[name].append(getattr(stepped, name).copy())
    rows, times = zip(*cycles, strict=True)
    got = series.run(np.array(rows), np.array(times))
    for name in SensorFaultBank.OUTPUTS:
        np.testing.assert_array_equal(np.array(expected[name]), got[name], err_msg=name)
    for name, saved in stepped.state().items():
        np.testing.assert_array_equal(saved, getattr(series, name), err_msg=name)


@settings(max_examples=200, deadline=None)
@given(streams(), st.integers(0, 50))
def test_sensor_faults_state_round_trip_continues_identically(case: tuple, cut: int) -> None:
    params, cycles = case
    cut = min(cut, len(cycles))
    rows, times = (np.array(a) for a in zip(*cycles, strict=True))
    whole, before, after = bank_for(params), bank_for(params), bank_for(params)
    expected = whole.run(rows, times)
    before.run(rows[:cut], times[:cut])
    after.load({name: array.tolist() for name, array in before.state().items()})
    rest = after.run(rows[cut:], times[cut:])
    for name in SensorFaultBank.OUTPUTS:
        np.testing.assert_array_equal(expected[name][cut:], rest[name], err_msg=name)


def run(values: list, times: list | None = None, **kwargs: object) -> dict[str, np.ndarray]:
    """Outputs ``[T, C]`` for rows of readings, one row per second unless ``times``."""
    x = np.array(values, dtype=float)
    x = x[:, None] if x.ndim == 1 else x
    t = np.arange(float(len(x))) if times is None else np.array(times, dtype=float)
    return SensorFaultBank(x.shape[1], **kwargs).run(x, t)


def flags(out: dict[str, np.ndarray], name: str, c: int = 0) -> list[int]:
    return out[name][:, c].astype(int).tolist()


def test_sensor_faults_stuck_sensor_and_its_clearing() -> None:
    """Flat within ±0.05 for 5 s raises stuck; it clears once the reading has moved for
    5 s; live noise never raises it."""
    values = [2.0, 2.03, 1.98, 2.0, 2.04, 2.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0]
    out = run(values, epsilon=0.05, stuck_s=5.0)
    assert [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0] == flags(out, "stuck")
    noisy = 2.0 + np.random.default_rng(3).normal(0, 0.5, 600)
    assert not run(list(noisy), epsilon=0.05, stuck_s=5.0)["stuck"].any()


def test_sensor_faults_stuck_needs_readings_not_silence() -> None:
    """Stuck is judged at readings only: the silence is a gap; the unchanged reading
    after it completes the stretch."""
    out = run([1.0, NAN, NAN, NAN, NAN, NAN, NAN, 1.0], epsilon=0.0, stuck_s=5.0, gap_s=2.0)
    assert [0, 0, 0, 0, 0, 0, 0, 1] == flags(out, "stuck")
    assert [0, 0, 0, 1, 1, 1, 1, 1] == flags(out, "gap")


def test_sensor_faults_an_isolated_spike_is_flagged_once_and_kept_from_alarms() -> None:
    """0 → 100 ppm in 1 s on a sensor that can move 5 ppm/s: that reading is a spike,
    its ``clean`` is NaN; the return to 0 is no spike."""
    out = run([0.0, 0.0, 100.0, 0.0, 0.0], max_rate=5.0)
    assert [0, 0, 1, 0, 0] == flags(out, "spike")
    assert [0.0, 0.0, 0.0, 0.0] == [v for v in out["clean"][:, 0] if not math.isnan(v)]
    assert math.isnan(out["clean"][2, 0])


def test_sensor_faults_a_real_step_costs_one_reading() -> None:
    """A level that stays is confirmed by the next reading; a run of impossible changes
    is flagged reading by reading."""
    out = run([0.0, 0.0, 100.0, 100.0, 101.0], max_rate=5.0)
    assert [0, 0, 1, 0, 0] == flags(out, "spike")
    assert 100.0 == out["clean"][3, 0]
    out = run([0.0, 50.0, 0.0, 50.0, 0.0], max_rate=5.0)
    assert [0, 1, 0, 1, 0] == flags(out, "spike")
    out = run([0.0, 20.0, 40.0, 60.0], max_rate=5.0)
    assert [0, 1, 1, 1] == flags(out, "spike")


def test_sensor_faults_spike_rate_scales_with_the_time_between_readings() -> None:
    out = run([0.0, 40.0, 80.0], times=[0.0, 10.0, 11.0], max_rate=5.0)
    assert [0, 0, 1] == flags(out, "spike")


def test_sensor_faults_gap_before_the_first_reading_and_its_clearing() -> None:
    """A channel that never answers is a gap after gap_s from the first cycle; readings
    every second clear it gap_s later."""
    values = [NAN] * 4 + [1.0] * 6
    out = run(values, gap_s=2.0)
    assert [0, 0, 0, 1, 1, 1, 0, 0, 0, 0] == flags(out, "gap")


def test_sensor_faults_gap_counts_spikes_as_readings_but_not_inf() -> None:
    out = run([1.0, 500.0, INF, INF, INF], gap_s=2.0, max_rate=1.0)
    assert [0, 1, 0, 0, 0] == flags(out, "spike")
    assert [0, 0, 0, 0, 1] == flags(out, "gap")


def test_sensor_faults_drift_between_redundant_sensors() -> None:
    """Two CO heads on one point: apart by more than 3 ppm for 5 s flags both; channel 2
    is in a second pair with channel 0 and agrees."""
    a = [10.0] * 12
    b = [10.5, 11.0, 14.0, 14.0, 14.0, 14.0, 14.0, 14.0, 11.0, 11.0, 11.0, 11.0]
    c = [10.2] * 12
    out = run(np.array([a, b, c]).T, pairs=[(0, 1, 3.0, 5.0), (2, 0, 3.0, 5.0)])
    assert [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1] == flags(out, "drift", 0)
    assert flags(out, "drift", 0) == flags(out, "drift", 1)
    assert not out["drift"][:, 2].any()
    # cleared once they have agreed for 5 s
    longer = run(np.array([a + [10.0] * 3, b + [11.0] * 3, c + [10.2] * 3]).T,
                 pairs=[(0, 1, 3.0, 5.0)])
    assert [1, 1, 1, 1, 1, 0, 0] == flags(longer, "drift", 0)[8:]


def test_sensor_faults_drift_is_not_judged_on_a_stale_reading() -> None:
    """When one head falls silent past its gap_s, the pair is not compared and its
    on-delay starts again."""
    a = [10.0] * 10
    b = [20.0, 20.0, NAN, NAN, NAN, 20.0, 20.0, 20.0, 20.0, 20.0]
    out = run(np.array([a, b]).T, gap_s=1.0, pairs=[(0, 1, 3.0, 3.0)])
    assert [0, 0, 0, 0, 0, 0, 0, 0, 1, 1] == flags(out, "drift", 0)


def test_sensor_faults_clock_going_back_makes_no_fault() -> None:
    """A clock set back 1 h: no spike from the negative time step, no gap, and a stuck
    stretch keeps its length."""
    times = [0.0, 1.0, 2.0, 3.0 - 3600, 4.0 - 3600, 5.0 - 3600]
    out = run([1.0, 1.0, 1.0, 9.0, 9.0, 9.0], times=times, max_rate=0.1, gap_s=5.0,
              stuck_s=100.0)
    assert not (out["spike"] | out["gap"] | out["stuck"]).any()
    out = run([1.0] * 6, times=times, stuck_s=4.0)
    assert [0, 0, 0, 0, 0, 1] == flags(out, "stuck")  # the jump takes no time: 0, 1, 2, 2, 3, 4 s


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"epsilon": -1.0}, "epsilon: must be finite and >= 0"),
    ({"stuck_s": 0.0}, "stuck_s: must be > 0 and finite, or NaN for off"),
    ({"max_rate": INF}, "max_rate: must be > 0 and finite"),
    ({"gap_s": [1.0, 2.0, 3.0]}, "gap_s: expected a scalar or 2 entries"),
    ({"pairs": [(0, 0, 1.0, 1.0)]}, r"pairs\[0\]: a and b must be two different"),
    ({"pairs": [(0, 2, 1.0, 1.0)]}, r"a and b must be two different channel indices in 0..1"),
    ({"pairs": [(0, 1, 1.0)]}, r"pairs\[0\]: expected \(a, b, tolerance, duration_s\)"),
    ({"pairs": [(0, 1, NAN, 1.0)]}, r"pairs\[0\]: tolerance must be finite and >= 0"),
    ({"pairs": [(0, 1, 1.0, -5.0)]}, r"pairs\[0\]: duration_s must be finite and >= 0"),
])
def test_sensor_faults_bank_refuses_bad_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SensorFaultBank(2, **kwargs)


def test_sensor_faults_bank_refuses_bad_inputs_and_states() -> None:
    bank = SensorFaultBank(2, pairs=[(0, 1, 1.0, 1.0)])
    with pytest.raises(ValueError, match=r"x: expected a float64 array of shape \(2,\), got "):
        bank.step([1.0, 2.0], 0.0)
    with pytest.raises(ValueError, match="t: must be a finite time"):
        bank.step(np.zeros(2), NAN)
    with pytest.raises(ValueError, match=r"state\['pair_on'\]: expected float64\[1\]"):
        bank.load(SensorFaultBank(2).state())


def test_sensor_faults_doctest() -> None:
    assert 0 == doctest.testmod(sensor_faults).failed
