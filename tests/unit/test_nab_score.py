"""The NAB scorer in bench/: NAB's own sweep, transcribed line by line, as the oracle on
random corpora; null, perfect and NAB's Windowed Gaussian on the real corpus, which
must come out at NAB's published check values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.nab_score import (
    NAB_DIR,
    PROFILES,
    Profile,
    as_nab_stored,
    data_file,
    load_corpus,
    load_profiles,
    probation_rows,
    scaled_sigmoid,
    score_all,
    score_corpus,
    sweep,
    windowed_gaussian,
)

pytestmark = pytest.mark.skipif(not (NAB_DIR / "labels").is_dir(),
                                reason=f"NAB's data is not at {NAB_DIR} (set NAB_DIR)")


@pytest.fixture(scope="module")
def corpus() -> list:
    return load_corpus()


# --- NAB's nab/sweeper.py (d62afec), transcribed: calcSweepScore, calcScoreByThreshold ---

def _nab_sigmoid(p: float) -> float:
    return -1.0 if p > 3.0 else 2 * (1 / (1 + math.exp(5 * p))) - 1.0


def _nab_sweep_rows(timestamps: list, scores: list, window_limits: list, name: str,
                    cost: Profile) -> list[tuple[float, float, str | None]]:
    window_limits = list(window_limits)
    rows = []
    max_tp = _nab_sigmoid(-1.0)
    probation = min(math.floor(0.15 * len(timestamps)), 0.15 * 5000)
    cur = cur_name = cur_right = cur_width = prev_right = prev_width = None
    for i, (t, score) in enumerate(zip(timestamps, scores, strict=True)):
        if window_limits and t == window_limits[0][0]:
            cur = window_limits.pop(0)
            cur_name = f"{name}|{cur[0]}"
            cur_right = timestamps.index(cur[1])
            cur_width = float(cur_right - timestamps.index(cur[0]) + 1)
        if cur is not None:
            weighted = _nab_sigmoid(-(cur_right - i + 1) / cur_width) * cost.tp / max_tp
        else:
            unweighted = -1.0 if prev_right is None else _nab_sigmoid(
                abs(prev_right - i) / float(prev_width - 1))
            weighted = unweighted * cost.fp
        rows.append((score, weighted, cur_name if i >= probation else "probationary"))
        if cur is not None and t == cur[1]:
            prev_right, prev_width = i, cur_width
            cur = cur_name = cur_right = cur_width = None
    return rows


def _nab_scores_by_threshold(rows: list, cost: Profile) -> list[tuple[float, float]]:
    rows = sorted([r for r in rows if r[2] != "probationary"], key=lambda r: r[0],
                  reverse=True)
    parts = {"fp": 0}
    for r in rows:
        if r[2] is not None:
            parts[r[2]] = -cost.fn
    out, threshold = [], 1.1
    for score, weighted, window in rows:
        if score != threshold:
            out.append((threshold, sum(parts.values())))
            threshold = score
        if window is None:
            parts["fp"] += weighted
        else:
            parts[window] = max(parts[window], weighted)
    out.append((threshold, sum(parts.values())))
    return out


@st.composite
def corpora(draw: st.DrawFn) -> tuple[list, list[np.ndarray]]:
    files, scores, first = [], [], 0
    for k in range(draw(st.integers(1, 3))):
        n = draw(st.integers(4, 80))
        cuts = sorted(draw(st.lists(st.integers(0, n - 1), max_size=6, unique=True)))
        windows = [(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False) if b > a]
        stamps = np.datetime64("2024-01-01T00:00:00") + 300 * np.arange(n)
        files.append(data_file(f"f{k}.csv", stamps, np.zeros(n), windows, first))
        first += len(windows)
        # few distinct values, so that ties and repeated thresholds happen
        scores.append(np.array(draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
                                             min_size=n, max_size=n))))
    return files, scores


@settings(max_examples=200, deadline=None)
@given(corpora(), st.sampled_from([Profile("s", 1.0, 0.11, 1.0), Profile("f", 1.0, 0.22, 2.0)]))
def test_sweep_equals_nab_sweeper(corpus_and_scores: tuple, cost: Profile) -> None:
    """Every candidate threshold and its raw score match NAB's Sweeper over all files."""
    files, scores = corpus_and_scores
    rows = []
    for f, s in zip(files, scores, strict=True):
        stamps = f.timestamps.tolist()
        limits = [(stamps[a], stamps[b]) for a, b in f.windows]
        rows += _nab_sweep_rows(stamps, s.tolist(), limits, f.name, cost)
    expected = _nab_scores_by_threshold(rows, cost)
    thresholds, raw = sweep(files, scores, cost)
    assert [t for t, _ in expected] == thresholds.tolist()
    assert [r for _, r in expected] == pytest.approx(raw.tolist(), abs=1e-9)
    best = max(range(len(expected)), key=lambda k: expected[k][1])  # first of the ties
    assert expected[best][0] == score_corpus(files, scores, cost).threshold


def test_scaled_sigmoid_check_values() -> None:
    """NAB's documented values: 0.98661 at a window's start, 0.84828 halfway, 0 at its
    end, -0.98661 one window past it, -1 beyond three."""
    assert [0.98661, 0.84828, 0.0, -0.98661, -1.0] == pytest.approx(
        scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 3.5])).tolist(), abs=1e-5)


def test_probation_is_fifteen_percent_at_most_750_rows() -> None:
    assert [0, 169, 604, 750, 750] == [probation_rows(n) for n in (5, 1127, 4032, 5000, 22695)]


def test_detections_in_probation_count_for_nothing() -> None:
    """A detection in the probation rows neither costs nor earns."""
    stamps = np.datetime64("2024-01-01T00:00:00") + 300 * np.arange(100)
    f = data_file("a.csv", stamps, np.zeros(100), [(50, 60)])
    cost = Profile("s", 1.0, 0.11, 1.0)
    early = np.zeros(100)
    early[:15] = 1.0  # probation is 15 rows
    assert -1.0 == score_corpus([f], [early], cost, threshold=1.0).raw
    early[15] = 1.0  # the first scorable row, before the window: a false positive
    assert -1.11 == pytest.approx(score_corpus([f], [early], cost, threshold=1.0).raw)


def test_null_and_perfect_detectors_score_0_and_100(corpus: list) -> None:
    """Never firing is 0 (raw -116, -116, -232); firing at each window's first row is
    100 for every profile."""
    null = score_all(corpus, [np.zeros(len(f.values)) for f in corpus])
    assert [-116.0, -116.0, -232.0] == [null[p].raw for p in PROFILES]
    assert [0.0, 0.0, 0.0] == [null[p].normalized for p in PROFILES]
    perfect = []
    for f in corpus:
        s = np.zeros(len(f.values))
        s[[left for left, _ in f.windows]] = 1.0
        perfect.append(s)
    results = score_all(corpus, perfect)
    assert [100.0, 100.0, 100.0] == pytest.approx([results[p].normalized for p in PROFILES])
    assert [116.0] * 3 == pytest.approx([results[p].raw for p in PROFILES])


def test_windowed_gaussian_reproduces_nab_check_values(corpus: list) -> None:
    """NAB's Windowed Gaussian, scored here with thresholds optimised afresh, gives NAB's
    published 39.65 / 20.87 / 47.41 (raw -24.01 / -67.59 / -67.01, threshold 1.0)."""
    scores = [as_nab_stored(windowed_gaussian(f.values)) for f in corpus]
    results = score_all(corpus, scores)
    assert [39.65, 20.87, 47.41] == pytest.approx(
        [results[p].normalized for p in PROFILES], abs=0.05)
    assert [-24.01, -67.59, -67.01] == pytest.approx([results[p].raw for p in PROFILES],
                                                     abs=0.01)
    assert [1.0, 1.0, 1.0] == [results[p].threshold for p in PROFILES]


def test_profiles_are_nab_cost_matrices() -> None:
    assert {"standard": (1.0, 0.11, 1.0), "reward_low_FP_rate": (1.0, 0.22, 1.0),
            "reward_low_FN_rate": (1.0, 0.11, 2.0)} == {
        name: (p.tp, p.fp, p.fn) for name, p in load_profiles().items()}


def test_scores_outside_zero_to_one_are_refused(corpus: list) -> None:
    scores = [np.zeros(len(f.values)) for f in corpus]
    scores[3][10] = math.nan
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        score_all(corpus, scores)
