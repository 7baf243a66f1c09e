"""The anomaly detector on the Numenta Anomaly Benchmark (NAB v1.1), scored as NAB scores.

Every one of NAB's 58 series goes through ``AnomalyBank.run`` (one call per file, one
channel, the file's timestamps in seconds) with the default parameters: one set for
the whole corpus, nothing tuned per file. ``bench/nab_score.py`` then scores the
corpus as NAB's own code does, with one threshold per profile chosen over the whole
corpus. NAB's Windowed Gaussian detector is scored alongside as the check that the
scorer is NAB's (it must come out at NAB's published 39.65 / 20.87 / 47.41).

Printed: per category, the windows, how many were detected, the false-positive rows
and the raw score at the standard profile's threshold; then the three normalised
scores against NAB's published scoreboard; then the kernel's throughput on 256
channels (one call per poll cycle, and one call for a recorded series). The last
line is one JSON object with the figures.

Run: ``python bench/nab.py`` (NAB's data from NAB_DIR, default /work/shared/datasets/nab).
"""

from __future__ import annotations

import json
import time

import numpy as np

from bench.nab_score import (
    NAB_DIR,
    PROFILES,
    DataFile,
    as_nab_stored,
    load_corpus,
    load_profiles,
    score_all,
    score_corpus,
    windowed_gaussian,
)
from edge_agent.core.anomaly import AnomalyBank, AnomalyParams
from edge_agent.detect import anomaly_scores, read_series

# NAB's README scoreboard (v1.0 results, at commit ea702d7): standard, low FP, low FN
PUBLISHED = [
    ("Numenta HTM (NuPIC 1.0, best seed)", 70.5, 62.6, 75.2),
    ("CAD OSE", 69.9, 67.0, 73.2),
    ("earthgecko Skyline", 58.2, 46.2, 63.9),
    ("KNN CAD", 58.0, 43.4, 64.8),
    ("Relative Entropy", 54.6, 47.6, 58.8),
    ("Random Cut Forest", 51.7, 38.4, 59.7),
    ("Windowed Gaussian (published)", 39.6, 20.9, 47.4),
]
CHANNELS, CYCLES = 256, 2000


def detect(corpus: list[DataFile], params: AnomalyParams) -> list[np.ndarray]:
    """The detector's scores for every file, through ``edge-agent detect``'s own reading
    and replay (one compiled ``run`` call per file) when the parameters are the agent's
    defaults; other parameters (a sweep) go to the kernel directly.
    """
    out = []
    for f in corpus:
        if params == AnomalyParams():
            series = read_series(NAB_DIR / "data" / f.name)
            out.append(anomaly_scores(series)["value"][0])
            continue
        t = f.timestamps.astype("datetime64[s]").astype(np.int64).astype(np.float64)
        out.append(AnomalyBank(1, params).run(f.values[:, None], t)[:, 0])
    return out


def by_category(corpus: list[DataFile], scores: list[np.ndarray], threshold: float
                ) -> dict[str, dict[str, float]]:
    """Windows, detected windows, false-positive rows and raw score per category, at the
    standard profile's corpus threshold.
    """
    standard = load_profiles()["standard"]
    rows: dict[str, dict[str, float]] = {}
    for f, s in zip(corpus, scores, strict=True):
        row = rows.setdefault(f.category, {"files": 0, "windows": 0, "detected": 0, "fp": 0,
                                           "raw": 0.0})
        hit = (s >= threshold) & f.scorable
        row["files"] += 1
        row["windows"] += len(f.windows)
        row["detected"] += sum(bool(hit[lo:hi + 1].any()) for lo, hi in f.windows)
        row["fp"] += int((hit & (f.window < 0)).sum())
        row["raw"] += score_corpus([f], [s], standard, threshold).raw
    return rows


def throughput() -> dict[str, float]:
    """Readings per second through the kernel for 256 channels: per poll cycle, and as a
    recorded series in one call (best of 5).
    """
    rng = np.random.default_rng(5)
    x = np.cumsum(rng.normal(0.0, 1.0, (CYCLES, CHANNELS)), axis=0)
    x[rng.random(x.shape) < 0.01] = np.nan
    t = 10.0 * np.arange(CYCLES)
    AnomalyBank(CHANNELS).run(x[:10], t[:10])  # compiled, or loaded from the cache

    def best(body) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            body()
            times.append(time.perf_counter() - t0)
        return min(times)

    def per_cycle() -> None:
        bank = AnomalyBank(CHANNELS)
        for row, ti in zip(x, t, strict=True):
            bank.step(row, ti)

    per_cycle_s = best(per_cycle)
    series_s = best(lambda: AnomalyBank(CHANNELS).run(x, t))
    n = CYCLES * CHANNELS
    return {"step_readings_per_s_256ch": n / per_cycle_s,
            "step_us_per_cycle_256ch": per_cycle_s / CYCLES * 1e6,
            "run_readings_per_s_256ch": n / series_s}


def main() -> None:
    t0 = time.perf_counter()
    corpus = load_corpus()
    params = AnomalyParams()
    t1 = time.perf_counter()
    scores = detect(corpus, params)
    detect_s = time.perf_counter() - t1
    results = score_all(corpus, scores)
    gaussian = score_all(corpus, [as_nab_stored(windowed_gaussian(f.values)) for f in corpus])
    rows = by_category(corpus, scores, results["standard"].threshold)
    speed = throughput()

    n_rows = sum(len(f.values) for f in corpus)
    print(f"NAB v1.1 from {NAB_DIR}: {len(corpus)} files, {n_rows:,} rows, "
          f"{sum(len(f.windows) for f in corpus)} windows; detector defaults, one "
          f"parameter set; detection {detect_s:.2f} s")
    print(f"\nper category, standard profile at threshold "
          f"{results['standard'].threshold:.4f}")
    print(f"{'category':24} {'files':>5} {'windows':>7} {'detected':>8} {'FP rows':>7} "
          f"{'raw':>8}")
    total = {"files": 0, "windows": 0, "detected": 0, "fp": 0, "raw": 0.0}
    for name, row in rows.items():
        print(f"{name:24} {row['files']:5d} {row['windows']:7d} {row['detected']:8d} "
              f"{row['fp']:7d} {row['raw']:8.2f}")
        for key in total:
            total[key] += row[key]
    print(f"{'all':24} {total['files']:5d} {total['windows']:7d} {total['detected']:8d} "
          f"{total['fp']:7d} {total['raw']:8.2f}")

    print("\nnormalised NAB scores (100 = perfect, 0 = never fires)")
    print(f"{'detector':38} {'standard':>9} {'low FP':>8} {'low FN':>8}")
    ours = [results[p].normalized for p in PROFILES]
    print(f"{'edge-agent anomaly (this run)':38} {ours[0]:9.2f} {ours[1]:8.2f} {ours[2]:8.2f}")
    check = [gaussian[p].normalized for p in PROFILES]
    print(f"{'Windowed Gaussian (rescored here)':38} {check[0]:9.2f} {check[1]:8.2f} "
          f"{check[2]:8.2f}")
    for name, *published in PUBLISHED:
        print(f"{name:38} {published[0]:9.1f} {published[1]:8.1f} {published[2]:8.1f}")
    print("\nthresholds: " + ", ".join(f"{p} {results[p].threshold:.4f}" for p in PROFILES))
    print(f"kernel, {CHANNELS} channels: {speed['step_readings_per_s_256ch']:,.0f} readings/s "
          f"one cycle per call ({speed['step_us_per_cycle_256ch']:.1f} µs per cycle), "
          f"{speed['run_readings_per_s_256ch']:,.0f} readings/s as one series")

    scorer_ok = all(abs(a - b) <= 0.05 for a, b in zip(check, (39.65, 20.87, 47.41),
                                                        strict=True))
    if not scorer_ok:
        print("ERROR: the scorer does not reproduce NAB's Windowed Gaussian scores")
    figures = {
        "standard": ours[0], "reward_low_fp": ours[1], "reward_low_fn": ours[2],
        "threshold_standard": results["standard"].threshold,
        "threshold_reward_low_fp": results["reward_low_FP_rate"].threshold,
        "threshold_reward_low_fn": results["reward_low_FN_rate"].threshold,
        "raw_standard": results["standard"].raw,
        "windows_detected": total["detected"], "fp_rows": total["fp"],
        "windowed_gaussian_check": check, "scorer_ok": scorer_ok,
        "detect_s": detect_s, "run_s": time.perf_counter() - t0, **speed,
    }
    print(json.dumps({k: [round(x, 3) for x in v] if isinstance(v, list)
                      else round(v, 4) if isinstance(v, float) else v
                      for k, v in figures.items()}))
    if not scorer_ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
