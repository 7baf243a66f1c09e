"""The threshold kernel against its plain-Python twin on random streams with NaN, inf,
stuck values and gaps; scripted series for deadband, delays and latching; the rules
every kernel of the core follows."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent import core
from edge_agent.core import KERNELS, LimitTwin, ThresholdBank
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

    def per_limit(strategy: st.SearchStrategy) -> list:
        return draw(st.lists(strategy, min_size=n, max_size=n))

    bank = {
        "channel": np.array(per_limit(st.integers(0, channels - 1))),
        "setpoint": np.array(per_limit(st.sampled_from([19.5, 23.5, 24.0, 0.0, 100.0]))),
        "above": np.array(per_limit(st.booleans())),
        "deadband": np.array(per_limit(st.sampled_from([0.0, 0.2, 1.0, 5.0]))),
        "on_delay": np.array(per_limit(st.sampled_from([0.0, 1.0, 5.0]))),
        "off_delay": np.array(per_limit(st.sampled_from([0.0, 2.0, 10.0]))),
        "latch": np.array(per_limit(st.booleans())),
    }
    steps = draw(st.lists(st.tuples(st.lists(reading, min_size=channels, max_size=channels),
                                    st.sampled_from([0.5, 1.0, 3.0, 60.0]),  # time gaps
                                    st.booleans()),  # a person acknowledges everything
                          min_size=1, max_size=40))
    return bank, steps


@settings(max_examples=300, deadline=None)
@given(limit_banks())
def test_threshold_kernel_equals_twin(case: tuple) -> None:
    """Step by step, the compiled kernel and the twin agree on every limit's alarm."""
    params, steps = case
    bank = ThresholdBank(params["channel"], params["setpoint"], params["above"],
                         params["deadband"], on_delay=params["on_delay"],
                         off_delay=params["off_delay"], latch=params["latch"])
    twins = [LimitTwin(params["setpoint"][i], "above" if params["above"][i] else "below",
                       params["deadband"][i], params["on_delay"][i], params["off_delay"][i],
                       bool(params["latch"][i])) for i in range(len(params["setpoint"]))]
    t = 1000.0
    for values, dt, ack in steps:
        t += dt
        if ack:
            bank.acked[:] = bank.active
            for twin in twins:
                twin.acked = twin.active
        n = bank.step(np.array(values), t)
        flipped = [twin.step(values[params["channel"][i]], t) for i, twin in enumerate(twins)]
        assert [twin.active for twin in twins] == bank.active.tolist()
        assert flipped == bank.changed.tolist()
        assert sum(flipped) == n


def run(values: list[float], *, above: bool = True, setpoint: float = 24.0,
        deadband: float = 0.0, on_delay: float = 0.0, off_delay: float = 0.0,
        latch: bool = False, ack_at: float | None = None, dt: float = 1.0) -> list[bool]:
    """The alarm state after each reading of one limit, one reading per ``dt`` seconds."""
    bank = ThresholdBank(np.array([0]), np.array([setpoint]), np.array([above]),
                         np.array([deadband]), on_delay=np.array([on_delay]),
                         off_delay=np.array([off_delay]), latch=np.array([latch]))
    states = []
    for i, value in enumerate(values):
        if ack_at is not None and i * dt >= ack_at:
            bank.acked[0] = bank.active[0]
        bank.step(np.array([value]), i * dt)
        states.append(bool(bank.active[0]))
    return states


def test_threshold_hysteresis_example() -> None:
    """O2 low at 19.5 %VOL with 0.2 deadband: raised at 19.5, held to 19.7, cleared above."""
    assert [False, False, True, True, True, False, True] == run(
        [20.9, 19.6, 19.5, 19.6, 19.7, 19.71, 19.5], above=False, setpoint=19.5, deadband=0.2)


def test_threshold_on_delay_ignores_a_fleeting_excursion() -> None:
    """With a 3 s on-delay, a 2 s excursion raises nothing; a sustained one does, at 3 s."""
    assert [False, False, False, False, False, False, False, True] == run(
        [0, 30, 30, 0, 30, 30, 30, 30], on_delay=3)


def test_threshold_off_delay_holds_the_alarm() -> None:
    assert [True, False, False, False, False, True] == run([30, 0, 0, 0, 0, 30], off_delay=0)
    assert [True, True, True, True, False, True] == run([30, 0, 0, 0, 0, 30], off_delay=3)


def test_threshold_latch_needs_both_clear_and_acknowledged() -> None:
    """A latched alarm stays until acknowledged; an acknowledgement while gas is still
    present does not end it (gas panels refuse that reset)."""
    assert [True, True, True, True] == run([30, 0, 0, 0], latch=True)
    assert [True, True, True, False, False] == run([30, 30, 30, 0, 0], latch=True, ack_at=1)
    assert [True, True, False, False] == run([30, 0, 0, 0], latch=True, ack_at=2)


def test_threshold_nan_never_clears_or_raises_by_itself() -> None:
    """A missing reading holds the condition: no decision from NaN."""
    assert [False, True, True, True] == run([0, 30, math.nan, math.nan])
    assert [False, False, False] == run([math.nan, math.nan, 0])


def test_threshold_bank_refuses_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="above: expected 2 entries"):
        ThresholdBank(np.array([0, 0]), np.array([1.0, 2.0]), np.array([True]),
                      np.array([0.0, 0.0]))
    with pytest.raises(ValueError, match="on_delay: must be finite and >= 0"):
        ThresholdBank(np.array([0]), np.array([1.0]), np.array([True]), np.array([0.0]),
                      on_delay=np.array([-1.0]))


def test_threshold_state_round_trip_continues_identically() -> None:
    params = (np.array([0]), np.array([24.0]), np.array([True]), np.array([1.0]))
    first, second = ThresholdBank(*params, on_delay=np.array([5.0])), ThresholdBank(
        *params, on_delay=np.array([5.0]))
    first.step(np.array([30.0]), 0.0)
    second.load(first.state())
    for t in (2.0, 5.0, 6.0):
        assert first.step(np.array([30.0]), t) == second.step(np.array([30.0]), t)
    assert second.active[0]


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
                                            "edge_agent", "typing", "dataclasses", "collections",
                                            "enum"}, (path, module)
            assert not module.startswith("edge_agent") or module.startswith("edge_agent.core")
        assert not re.search(r"\btime\.\w+\(|(?<![\w.])(open|print)\(|\b(logging|structlog)\.",
                             source), path
    assert core.__all__


def test_threshold_series_runner_equals_the_step_loop() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(20, 8, size=(300, 3))
    values[rng.random(values.shape) < 0.05] = np.nan
    t = np.cumsum(rng.choice([0.5, 1.0, 5.0], size=300))

    def bank() -> ThresholdBank:
        return ThresholdBank(np.array([0, 1, 2, 0]), np.array([24.0, 19.5, 30.0, 35.0]),
                             np.array([True, False, True, True]), np.array([1.0, 0.2, 0.5, 1.0]),
                             on_delay=np.array([0.0, 3.0, 10.0, 0.0]),
                             off_delay=np.array([5.0, 0.0, 0.0, 2.0]))
    stepped, series = bank(), bank()
    states = []
    for k in range(len(t)):
        stepped.step(values[k], t[k])
        states.append(stepped.active.tolist())
    assert states == series.run(values, t).tolist()
