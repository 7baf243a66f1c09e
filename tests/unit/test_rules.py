"""Combined rules: every term (or k of n) true within a window; kernel against its twin."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core.rules import RuleBank, RuleTwin


@st.composite
def rule_sets(draw: st.DrawFn) -> tuple:
    rules = draw(st.integers(1, 4))
    sizes = [draw(st.integers(1, 3)) for _ in range(rules)]
    within = [draw(st.sampled_from([0.0, 5.0, 60.0])) for _ in range(rules)]
    need = [draw(st.integers(1, size)) for size in sizes]
    steps = draw(st.lists(st.tuples(st.lists(st.booleans(), min_size=sum(sizes),
                                             max_size=sum(sizes)),
                                    st.sampled_from([0.5, 1.0, 10.0, 100.0])),
                          min_size=1, max_size=30))
    return sizes, within, need, steps


@settings(max_examples=300, deadline=None)
@given(rule_sets())
def test_rules_kernel_equals_twin(case: tuple) -> None:
    sizes, within, need, steps = case
    term_rule = np.repeat(np.arange(len(sizes)), sizes)
    bank = RuleBank(term_rule, np.array(within), np.array(need))
    twins = [RuleTwin(n, w, k) for n, w, k in zip(sizes, within, need, strict=True)]
    t = 0.0
    for terms, dt in steps:
        t += dt
        n = bank.step(np.array(terms), t)
        start, flipped = 0, []
        for twin, size in zip(twins, sizes, strict=True):
            flipped.append(twin.step(terms[start:start + size], t))
            start += size
        assert [twin.active for twin in twins] == bank.active.tolist()
        assert flipped == bank.changed.tolist()
        assert sum(flipped) == n


def test_rules_thermal_runaway_story() -> None:
    """Off-gas rising at t=0, the temperature rising from t=120: within 300 s the rule
    holds from t=120 until both signals have been quiet for 300 s."""
    bank = RuleBank(np.array([0, 0]), np.array([300.0]))
    states = {}
    for t, gas, heat in ((0, True, False), (60, True, False), (120, True, True),
                         (400, False, True), (421, False, False), (721, False, False)):
        bank.step(np.array([gas, heat]), float(t))
        states[t] = bool(bank.active[0])
    assert {0: False, 60: False, 120: True, 400: True, 421: False, 721: False} == states


def test_two_out_of_three_detectors_confirm_an_alarm() -> None:
    bank = RuleBank(np.array([0, 0, 0]), np.array([0.0]), np.array([2]))
    assert [0, 0, 1, 1, 1] == [bank.step(np.array(terms), float(t)) * 0 + int(bank.active[0])
                               for t, terms in enumerate(([0, 0, 0], [1, 0, 0], [1, 0, 1],
                                                          [0, 1, 1], [1, 1, 1]))]


def test_rules_bank_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match="every term must name one of the 1 rules"):
        RuleBank(np.array([0, 1]), np.array([5.0]))
    with pytest.raises(ValueError, match="every rule needs at least one term"):
        RuleBank(np.array([0]), np.array([5.0, 5.0]))
    with pytest.raises(ValueError, match="between 1 and the rule's terms"):
        RuleBank(np.array([0, 0]), np.array([5.0]), np.array([3]))
