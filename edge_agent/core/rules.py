"""Combined rules across channels: a rule holds while at least ``need`` of its terms
(all of them, unless it votes k-of-n) have been true within the last ``within``
seconds.

A term is one condition on one channel, judged by the caller each cycle (a value
above or below a level, a rate of rise or fall past a limit). The rule needs all
its terms, not necessarily at the same instant: off-gas that started rising two
minutes before the temperature still counts when ``within`` is 300 s
(SAFETY_REFERENCE.md §6.4: "two independent pre-warning signals within a short
window"). ``within`` = 0 asks for all terms at once. A rule that votes needs only k
of its n terms: two detectors out of three confirm a gas alarm (GB 16808-2025
§5.5.1.8, "confirm from two or more signals").

Arrays, one entry per term (length T) or per rule (length R):
    term_true   bool[T]     this cycle: the term's condition holds
    t           float64     the cycle's time, seconds
    term_rule   int64[T]    the rule each term belongs to
    within      float64[R]  seconds a term counts after it was last true
    need        int64[R]    terms that must count for the rule to hold (k of n)
    last_true   float64[T]  state: when the term was last true (NaN: never)
    count       int64[R]    scratch: terms that count this cycle
    active      bool[R]     state: the rule holds
    changed     bool[R]     output: True where ``active`` flipped in this call
"""

from __future__ import annotations

import math

import numpy as np

from edge_agent.core._jit import JIT, njit


@njit(**JIT)
def rules_step(term_true, t, term_rule, within, need, last_true, count, active, changed):
    """Advance every rule by one cycle; return how many flipped.

    >>> import numpy as np
    >>> bank = RuleBank(np.array([0, 0]), np.array([60.0]))
    >>> bank.step(np.array([True, False]), 0.0), bank.step(np.array([False, True]), 30.0)
    (0, 1)
    >>> bank.step(np.array([False, False]), 91.0), bool(bank.active[0])
    (1, False)
    """
    count[:] = 0
    for i in range(term_rule.shape[0]):
        if term_true[i]:
            last_true[i] = t
        if not math.isnan(last_true[i]) and t - last_true[i] <= within[term_rule[i]]:
            count[term_rule[i]] += 1
    n = 0
    for r in range(within.shape[0]):
        holds = count[r] >= need[r]
        changed[r] = holds != active[r]
        if changed[r]:
            active[r] = holds
            n += 1
    return n


class RuleTwin:
    """Plain-Python statement of one rule: ``need`` of its terms (default all) true
    within ``within`` seconds.
    """

    def __init__(self, n_terms: int, within: float, need: int | None = None) -> None:
        self.within = within
        self.need = n_terms if need is None else need
        self.last_true: list[float | None] = [None] * n_terms
        self.active = False

    def step(self, terms: list[bool], t: float) -> bool:
        """Take this cycle's terms; return whether the rule flipped."""
        for i, now in enumerate(terms):
            if now:
                self.last_true[i] = t
        holds = sum(last is not None and t - last <= self.within
                    for last in self.last_true) >= self.need
        flipped = holds != self.active
        self.active = holds
        return flipped


class RuleBank:
    """The combined rules of a site as arrays, stepped by the compiled kernel."""

    STATE = ("last_true", "active")

    def __init__(self, term_rule: np.ndarray, within: np.ndarray,
                 need: np.ndarray | None = None) -> None:
        """``need``: terms that must hold per rule (default: all of its terms)."""
        self.term_rule = np.ascontiguousarray(term_rule, dtype=np.int64)
        self.within = np.ascontiguousarray(within, dtype=np.float64)
        if self.term_rule.ndim != 1 or self.within.ndim != 1:
            raise ValueError("term_rule and within: one-dimensional arrays")
        rules = len(self.within)
        if len(self.term_rule) and not (self.term_rule.min() >= 0 and
                                        self.term_rule.max() < rules):
            raise ValueError(f"term_rule: every term must name one of the {rules} rules")
        if (self.within < 0).any() or not np.isfinite(self.within).all():
            raise ValueError("within: must be finite and >= 0")
        if rules and set(range(rules)) - set(self.term_rule.tolist()):
            raise ValueError("every rule needs at least one term")
        terms = np.bincount(self.term_rule, minlength=rules).astype(np.int64)
        self.need = terms.copy() if need is None else np.ascontiguousarray(need, dtype=np.int64)
        if self.need.shape != (rules,) or (self.need < 1).any() or (self.need > terms).any():
            raise ValueError("need: one per rule, between 1 and the rule's terms")
        self.last_true = np.full(len(self.term_rule), np.nan)
        self.count = np.zeros(rules, np.int64)
        self.active = np.zeros(rules, np.bool_)
        self.changed = np.zeros(rules, np.bool_)

    def step(self, term_true: np.ndarray, t: float) -> int:
        return rules_step(np.ascontiguousarray(term_true, dtype=np.bool_), float(t),
                          self.term_rule, self.within, self.need, self.last_true, self.count,
                          self.active, self.changed)

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).copy() for name in self.STATE}

    def load(self, state: dict[str, np.ndarray]) -> None:
        for name in self.STATE:
            getattr(self, name)[:] = state[name]
