"""The NAB scorer, re-implemented from NAB's own code, and NAB's Windowed Gaussian detector
that checks it.

NAB (Numenta Anomaly Benchmark v1.1, github.com/numenta/NAB) scores a detector that
writes one anomaly score in [0, 1] per row of each of its 58 series. This module
follows NAB's code, read at the commits named here:

- ``nab/sweeper.py`` (d62afec): ``calcSweepScore`` gives every row a weight, a scaled
  sigmoid of its position relative to the anomaly windows; ``calcScoreByThreshold``
  sorts the rows by anomaly score and sweeps down, keeping per window only the best
  (earliest) detection and summing every false positive;
- ``nab/optimizer.py`` (the sweep version): the rows of every file are swept together
  and the threshold with the highest corpus total wins, ties to the higher threshold
  (``sorted(..., reverse=True)`` is stable);
- ``nab/scorer.py`` (Sweeper-based ``scoreCorpus``): the score of a threshold is the
  same sweep, per file;
- ``nab/runner.py`` ``normalize``: 100 × (raw − null) / (perfect − null), perfect being
  tpWeight × the number of labelled windows;
- ``results/<detector>/*.csv``: the bundled result files hold scores with 12
  significant digits, what Python 2 wrote (``as_nab_stored``); the Windowed Gaussian
  check values hold only for scores stored that way.

The sweep is done with numpy: sort the scorable rows once by score, then the corpus
total at every distinct score is a cumulative sum, the false positives' weights plus
each window's improvements of its best detection. ``score_corpus`` therefore costs
one sort of all rows, not one pass per candidate threshold.

The Windowed Gaussian detector (``windowed_gaussian``) is NAB's
``nab/detectors/gaussian/windowedGaussian_detector.py`` (de8e91a): the anomaly score
of a value is 1 − Q(|x − μ| / σ), μ and σ over a window of the previous values (up
to 6400, sliding by 100 once full). Scored here it must give NAB's published
39.65 / 20.87 / 47.41, which is what tests/unit/test_nab_score.py checks.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The team's shared folder holds the benchmark data (not committed here): beside the
# repository, or at its usual place on the team's machines for a checkout elsewhere.
_NAB_PLACES = [Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nab",
               Path("/work/shared/datasets/nab")]
NAB_DIR = Path(os.environ.get("NAB_DIR") or next(
    (place for place in _NAB_PLACES if (place / "labels").is_dir()), _NAB_PLACES[0]))
"""Where NAB's data/, labels/ and config/ are (override with the NAB_DIR variable)."""

PROBATION_PERCENT = 0.15
PROBATION_MAX_ROWS = PROBATION_PERCENT * 5000  # NAB's Sweeper._getProbationaryLength: 750
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
NO_DETECTION = 1.1  # NAB's first sweep threshold: above every score, nothing detected


def scaled_sigmoid(position: np.ndarray | float) -> np.ndarray:
    """NAB's S(p) = 2 / (1 + e^(5p)) − 1, and −1 past p > 3 (far behind a window)."""
    p = np.asarray(position, dtype=np.float64)
    with np.errstate(over="ignore"):
        s = 2.0 / (1.0 + np.exp(5.0 * p)) - 1.0
    return np.where(p > 3.0, -1.0, s)


MAX_TP = float(scaled_sigmoid(-1.0))  # S at a window's first row: 0.98661


@dataclass(frozen=True)
class Profile:
    """One row of NAB's config/profiles.json: the cost of each kind of outcome."""

    name: str
    tp: float
    fp: float
    fn: float


@dataclass
class DataFile:
    """One NAB series with its windows as row ranges.

    ``unweighted`` is S at each row before the profile's weights: inside a window
    S(−(r − i + 1) / w); outside, S(|r_prev − i| / (w_prev − 1)) after a window and −1
    before the first. ``window`` is the row's window number in the corpus, −1 outside.
    ``scorable`` is False for the probation rows.
    """

    name: str
    timestamps: np.ndarray
    values: np.ndarray
    windows: list[tuple[int, int]]
    unweighted: np.ndarray = field(repr=False)
    window: np.ndarray = field(repr=False)
    scorable: np.ndarray = field(repr=False)

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def probation(self) -> int:
        return probation_rows(len(self.values))


def probation_rows(n: int) -> int:
    """Rows at the start of an n-row file that NAB ignores: min(floor(0.15 n), 750)."""
    return int(min(math.floor(PROBATION_PERCENT * n), PROBATION_MAX_ROWS))


def load_profiles(root: Path = NAB_DIR) -> dict[str, Profile]:
    """The three cost profiles of config/profiles.json, by NAB's names."""
    raw = json.loads((root / "config" / "profiles.json").read_text())
    return {name: Profile(name, m["tpWeight"], m["fpWeight"], m["fnWeight"])
            for name, m in ((k, v["CostMatrix"]) for k, v in raw.items())}


def _read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if rows[0] != ["timestamp", "value"]:
        raise ValueError(f"{path}: header {rows[0]!r}, expected ['timestamp', 'value']")
    stamps = np.array([r[0] for r in rows[1:]], dtype="datetime64[s]")
    return stamps, np.array([float(r[1]) for r in rows[1:]])


def sweep_weights(timestamps: np.ndarray, windows: list[tuple[int, int]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per row: S before weights, and the index (in ``windows``) of the row's window, or −1.

    NAB's ``Sweeper.calcSweepScore`` row by row: a window of width w ending at row r
    gives its row i the position −(r − i + 1) / w; a row after a window is
    |r_prev − i| / (w_prev − 1) past it; a row before any window gets S = −1.
    """
    n = len(timestamps)
    unweighted = np.full(n, -1.0)
    window = np.full(n, -1, dtype=np.int64)
    rows = np.arange(n, dtype=np.float64)
    prev_right, prev_width = -1, 0.0
    for k, (left, right) in enumerate(windows):
        if prev_right >= 0:
            gap = slice(prev_right + 1, left)
            unweighted[gap] = scaled_sigmoid(np.abs(prev_right - rows[gap]) / (prev_width - 1.0))
        width = float(right - left + 1)
        inside = slice(left, right + 1)
        unweighted[inside] = scaled_sigmoid(-(right - rows[inside] + 1.0) / width)
        window[inside] = k
        prev_right, prev_width = right, width
    if prev_right >= 0:
        tail = slice(prev_right + 1, n)
        unweighted[tail] = scaled_sigmoid(np.abs(prev_right - rows[tail]) / (prev_width - 1.0))
    return unweighted, window


def data_file(name: str, timestamps: np.ndarray, values: np.ndarray,
              windows: list[tuple[int, int]], first_window: int = 0) -> DataFile:
    """A series with its windows as (first row, last row); ``first_window`` numbers its
    windows after those of the files before it in a corpus.
    """
    unweighted, window = sweep_weights(timestamps, windows)
    scorable = np.arange(len(values)) >= probation_rows(len(values))
    window = np.where(window >= 0, window + first_window, -1)
    return DataFile(name, timestamps, np.asarray(values, dtype=np.float64), list(windows),
                    unweighted, window, scorable)


def load_corpus(root: Path = NAB_DIR, labels: str = "combined_windows.json") -> list[DataFile]:
    """Every series named in ``labels/<labels>``, sorted by name, with its windows as rows.

    Window limits are matched to rows by exact timestamp, as NAB's ``CorpusLabel`` does;
    a limit that is not a row's timestamp is an error.
    """
    windows_json = json.loads((root / "labels" / labels).read_text())
    files: list[DataFile] = []
    for name in sorted(windows_json):
        stamps, values = _read_series(root / "data" / name)
        index = {t: i for i, t in enumerate(stamps.tolist())}
        limits: list[tuple[int, int]] = []
        for start, end in windows_json[name]:
            try:
                left = index[np.datetime64(start.replace(" ", "T")[:19], "s").tolist()]
                right = index[np.datetime64(end.replace(" ", "T")[:19], "s").tolist()]
            except KeyError as e:
                raise ValueError(f"{name}: window limit {e} is not a row's timestamp") from e
            if limits and left <= limits[-1][1]:
                raise ValueError(f"{name}: window {start} overlaps the one before")
            limits.append((left, right))
        files.append(data_file(name, stamps, values, limits,
                               sum(len(f.windows) for f in files)))
    return files


def as_nab_stored(scores: np.ndarray) -> np.ndarray:
    """Scores as they are in NAB's bundled result files: 12 significant digits.

    NAB's detectors ran under Python 2, whose ``str(float)`` (used by pandas' CSV
    writer there) keeps 12 significant digits, so a Windowed Gaussian score of
    0.9999999999997738 was stored, and scored, as 1.0.
    """
    return np.array([float(f"{s:.12g}") for s in np.asarray(scores, dtype=np.float64).tolist()])


@dataclass(frozen=True)
class Result:
    """The outcome for one profile: the chosen threshold, raw and normalised scores."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float

    @property
    def normalized(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def _rows(corpus: list[DataFile], scores: list[np.ndarray], profile: Profile
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scorable rows of the corpus: anomaly score, weighted sweep score, window number."""
    if len(scores) != len(corpus):
        raise ValueError(f"{len(scores)} score arrays for {len(corpus)} files")
    s, v, w = [], [], []
    for f, sc in zip(corpus, scores, strict=True):
        sc = np.asarray(sc, dtype=np.float64)
        if sc.shape != f.values.shape:
            raise ValueError(f"{f.name}: {sc.shape[0]} scores for {len(f.values)} rows")
        if not np.all((sc >= 0.0) & (sc <= 1.0)):
            raise ValueError(f"{f.name}: anomaly scores must be in [0, 1] (NaN is not)")
        m = f.scorable
        weighted = np.where(f.window >= 0, f.unweighted * profile.tp / MAX_TP,
                            f.unweighted * profile.fp)
        s.append(sc[m])
        v.append(weighted[m])
        w.append(f.window[m])
    return np.concatenate(s), np.concatenate(v), np.concatenate(w)


def sweep(corpus: list[DataFile], scores: list[np.ndarray], profile: Profile
          ) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate threshold and the corpus raw score at it, highest threshold first.

    The first candidate is NAB's 1.1 (nothing detected); then each distinct score,
    counting the rows whose score is >= it. Equivalent to NAB's
    ``Sweeper.calcScoreByThreshold`` over the rows of every file.
    """
    s, v, w = _rows(corpus, scores, profile)
    order = np.argsort(-s, kind="stable")
    s, v, w = s[order], v[order], w[order]
    n_windows = np.unique(w[w >= 0]).size  # windows with at least one scorable row
    base = -profile.fn * n_windows
    gain = np.where(w < 0, v, 0.0)
    # A window's total is its best detection so far (initially -fn): the gain of each of
    # its rows, in sweep order, is how much it raises that running maximum.
    inw = np.flatnonzero(w >= 0)
    if inw.size:
        by_window = inw[np.argsort(w[inw], kind="stable")]  # grouped, sweep order kept
        starts = np.flatnonzero(np.r_[True, np.diff(w[by_window]) != 0])
        for rows in np.split(by_window, starts[1:]):
            best = np.maximum.accumulate(np.maximum(v[rows], -profile.fn))
            gain[rows] = best - np.r_[-profile.fn, best[:-1]]
    total = base + np.cumsum(gain)
    last_of_group = np.r_[s[1:] != s[:-1], True] if s.size else np.zeros(0, dtype=bool)
    thresholds = np.r_[NO_DETECTION, s[last_of_group]]
    raw = np.r_[base, total[last_of_group]]
    return thresholds, raw


def score_corpus(corpus: list[DataFile], scores: list[np.ndarray], profile: Profile,
                 threshold: float | None = None) -> Result:
    """The corpus result for one profile: at ``threshold``, or at the best one (NAB's
    optimiser: the highest raw score over every candidate, ties to the higher threshold).
    """
    thresholds, raw = sweep(corpus, scores, profile)
    if threshold is None:
        k = int(np.argmax(raw))
    else:
        # the lowest candidate >= threshold: the same rows detected (none above 1.1)
        k = max(0, int(np.searchsorted(-thresholds, -threshold, side="right")) - 1)
    n_windows = sum(len(f.windows) for f in corpus)
    return Result(profile.name, float(thresholds[k]), float(raw[k]),
                  null=-profile.fn * n_windows, perfect=profile.tp * n_windows)


def score_files(corpus: list[DataFile], scores: list[np.ndarray], profile: Profile,
                threshold: float) -> list[float]:
    """Each file's raw score at a fixed threshold (NAB's per-file rows of a scores CSV)."""
    out = []
    for f, sc in zip(corpus, scores, strict=True):
        out.append(score_corpus([f], [sc], profile, threshold).raw)
    return out


def score_all(corpus: list[DataFile], scores: list[np.ndarray], root: Path = NAB_DIR
              ) -> dict[str, Result]:
    """The three profiles' results, each with its threshold optimised over the corpus."""
    return {name: score_corpus(corpus, scores, p) for name, p in load_profiles(root).items()}


def windowed_gaussian(values: np.ndarray, window_size: int = 6400,
                      step_size: int = 100) -> np.ndarray:
    """NAB's Windowed Gaussian detector, row by row as its ``handleRecord`` does.

    The score of x is 1 − Q(|x − μ| / σ) = 1 − erfc(|x − μ| / (σ √2)) / 2, with μ and σ
    (population std, 1e-6 if 0) of the window *before* x: every value is appended
    while the window fills, then values are added ``step_size`` at a time, dropping
    as many from the front. The first row scores 0. While the window fills, μ and σ
    are kept by Welford's update instead of numpy over the whole window at every row
    (the same numbers to ~1e-16, and 15 times faster over the corpus).
    """
    x = np.asarray(values, dtype=np.float64)
    out = np.zeros(len(x))
    mean, std, m2 = 0.0, 1.0, 0.0
    root2 = math.sqrt(2.0)
    for i, xi in enumerate(x.tolist()):
        if i:
            xp = 2.0 * mean - xi if xi < mean else xi  # NAB reflects values below the mean
            out[i] = 1.0 - 0.5 * math.erfc((xp - mean) / std / root2)
        if i < window_size:  # filling: the window is x[0 .. i]
            delta = xi - mean
            mean += delta / (i + 1)
            m2 += delta * (xi - mean)
            std = math.sqrt(m2 / (i + 1))
        elif (i + 1 - window_size) % step_size == 0:  # a full step: x[i+1-W .. i]
            window = x[i + 1 - window_size:i + 1]
            mean, std = float(np.mean(window)), float(np.std(window))
        else:
            continue
        if std == 0.0:
            std = 0.000001
    return out
