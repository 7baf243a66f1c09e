"""The numba kernels against their plain-Python twins, on random streams with NaN, inf,
stuck values and gaps."""

from __future__ import annotations

import math
import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent import core
from edge_agent.core import KERNELS, new_state, threshold_step, threshold_twin
from tests.support import REPO

reading = st.one_of(
    st.floats(-50, 250, allow_nan=False),
    st.just(math.nan), st.just(math.inf), st.just(-math.inf),
    st.sampled_from([19.5, 23.5, 24.0, 23.0]),  # exactly at setpoints and deadband edges
)


@st.composite
def limit_banks(draw: st.DrawFn) -> tuple:
    channels = draw(st.integers(1, 6))
    n = draw(st.integers(1, 12))
    channel = np.array(draw(st.lists(st.integers(0, channels - 1), min_size=n, max_size=n)))
    setpoint = np.array(draw(st.lists(st.sampled_from([19.5, 23.5, 24.0, 0.0, 100.0]),
                                      min_size=n, max_size=n)), dtype=np.float64)
    above = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=np.bool_)
    deadband = np.array(draw(st.lists(st.sampled_from([0.0, 0.2, 1.0, 5.0]), min_size=n,
                                      max_size=n)), dtype=np.float64)
    steps = draw(st.lists(st.lists(reading, min_size=channels, max_size=channels),
                          min_size=1, max_size=40))
    return channel, setpoint, above, deadband, np.array(steps, dtype=np.float64)


@settings(max_examples=300, deadline=None)
@given(limit_banks())
def test_threshold_kernel_equals_twin(bank: tuple) -> None:
    """Step by step, the compiled kernel and the twin agree on every limit's state."""
    channel, setpoint, above, deadband, steps = bank
    active, changed = new_state(len(setpoint))
    twin = [False] * len(setpoint)
    for values in steps:
        n = threshold_step(values, channel, setpoint, above, deadband, active, changed)
        before = list(twin)
        twin = [threshold_twin(values[channel[i]], setpoint[i],
                               "above" if above[i] else "below", deadband[i], twin[i])
                for i in range(len(setpoint))]
        assert twin == active.tolist()
        assert [a != b for a, b in zip(before, twin, strict=True)] == changed.tolist()
        assert sum(changed) == n


def test_threshold_nan_never_clears_or_raises() -> None:
    """A missing reading holds every limit in its state: no decision from NaN."""
    channel, setpoint = np.array([0, 0]), np.array([24.0, 24.0])
    above, deadband = np.array([True, True]), np.zeros(2)
    active = np.array([True, False])
    changed = np.zeros(2, dtype=np.bool_)
    assert 0 == threshold_step(np.array([math.nan]), channel, setpoint, above, deadband,
                               active, changed)
    assert [True, False] == active.tolist()


def test_threshold_hysteresis_example() -> None:
    """O2 low at 19.5 %VOL with 0.2 deadband: raised at 19.5, held to 19.7, cleared above."""
    states = []
    active, changed = new_state(1)
    for o2 in (20.9, 19.6, 19.5, 19.6, 19.7, 19.71, 19.5):
        threshold_step(np.array([o2]), np.array([0]), np.array([19.5]), np.array([False]),
                       np.array([0.2]), active, changed)
        states.append(bool(active[0]))
    assert [False, False, True, True, True, False, True] == states


def test_kernels_are_compiled_with_the_shared_options() -> None:
    """No kernel chooses its own fastmath (it would let NaN pass as a number)."""
    assert KERNELS
    for step, _twin in KERNELS.values():
        assert step.targetoptions["fastmath"] is False
        assert type(step._cache).__name__ == "FunctionCache"  # cache=True: on disk
    for path in (REPO / "edge_agent" / "core").glob("*.py"):
        if path.name != "_jit.py":
            assert not re.search(r"fastmath\s*=", path.read_text()), path


def test_core_imports_nothing_of_the_project_outside_core() -> None:
    """The core is pure: no I/O, clock or logging, and no imports from the rest of the agent."""
    for path in (REPO / "edge_agent" / "core").glob("*.py"):
        source = path.read_text()
        imports = re.findall(r"^(?:from|import) ([\w.]+)", source, re.MULTILINE)
        for module in imports:
            assert module.split(".")[0] in {"__future__", "math", "numpy", "numba",
                                            "edge_agent"}, (path, module)
            assert not module.startswith("edge_agent") or module.startswith("edge_agent.core")
        assert not re.search(r"\b(time|open|print|logging|structlog)\s*[.(]", source), path
    assert core.__all__
