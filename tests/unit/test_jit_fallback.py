"""Without numba the kernels run as the plain Python they are written in: the same
results, cycle by cycle, as the compiled kernels (tests/integration/test_jit_fallback.py
runs the whole agent that way)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core import _jit, rules, sensor_faults, threshold
from edge_agent.core.rules import RuleBank
from edge_agent.core.sensor_faults import SensorFaultBank
from edge_agent.core.threshold import ThresholdBank

READINGS = st.lists(st.one_of(st.floats(0, 60), st.just(float("nan"))), min_size=30,
                    max_size=30)


def test_without_numba_njit_leaves_the_function_as_it_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_jit, "_NJIT", None)

    def kernel(x: int) -> int:
        return x + 1

    assert _jit.njit(**_jit.JIT)(kernel) is kernel


def run(make, readings: list[float]) -> np.ndarray:
    """Every state array after every cycle, side by side (NaN compares equal below)."""
    bank, out = make(), []
    for k, value in enumerate(readings):
        bank.step(np.array([value, 60.0 - value]), float(k))
        out.append(np.concatenate([np.ravel(a).astype(float) for a in bank.state().values()]))
    return np.array(out)


@settings(max_examples=100, deadline=None)
@given(READINGS)
def test_plain_python_threshold_and_faults_equal_the_compiled_ones(readings: list) -> None:
    def limits() -> ThresholdBank:
        return ThresholdBank(np.array([0, 1]), np.array([24.0, 19.5]), np.array([True, False]),
                             np.array([1.0, 0.2]), on_delay=np.array([2.0, 0.0]),
                             latch=np.array([False, True]))

    def faults() -> SensorFaultBank:
        return SensorFaultBank(2, epsilon=np.array([0.01, 0.01]), stuck_s=np.array([5.0, 5.0]),
                               max_rate=np.array([10.0, 10.0]), gap_s=np.array([3.0, 3.0]))

    for module, name, make in ((threshold, "threshold_step", limits),
                               (sensor_faults, "sensor_faults_step", faults)):
        compiled = run(make, readings)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(module, name, getattr(module, name).py_func)
            np.testing.assert_array_equal(run(make, readings), compiled, err_msg=name)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=1, max_size=30))
def test_plain_python_rules_equal_the_compiled_ones(steps: list) -> None:
    def go() -> list:
        bank, out = RuleBank(np.array([0, 0, 0]), np.array([5.0]), np.array([2])), []
        for k, terms in enumerate(steps):
            bank.step(np.array(terms), float(k))
            out.append((bool(bank.active[0]), bool(bank.changed[0])))
        return out

    compiled = go()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rules, "rules_step", rules.rules_step.py_func)
        assert go() == compiled
