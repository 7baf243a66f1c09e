"""Throughput of the alarm and anomaly core: every per-channel kernel, compiled, against
a memory-bandwidth baseline, against the plain-Python twins, and its JIT warm start.

The full per-channel set is what the alarm engine runs on every reading, in its order:
sensor faults (stuck, spike, gap; drift on pairs of channels) clean the readings; the
rate of rise is estimated over 120 s; limits are judged on the clean readings (two
levels) and on the slopes (one rise limit); STEL and 8-h TWA are integrated; the
anomaly detector scores. Each kernel runs a recorded series through its compiled
``*_run`` loop (exactly its ``*_step`` per cycle), on one core, for 1 and for 256
channels of ~1 M samples: a random walk read every second with 1 % missing readings
and spikes, with its outputs allocated once beforehand. The figure is samples (channel
readings) per second through all of them; the same chain through the banks' ``run``,
which allocates its outputs on each call, is reported beside it.

Baseline, in the same run: ``numpy.sum`` over a float64 array of the same size, the
rate at which this machine can merely read the samples (8 MB: from the L3 cache). The twins run a
smaller series (their per-sample cost does not depend on its length, except the
exposure twin's, which re-reads its history: its ratio is reported for 600 readings).
Warm start: a fresh process imports the core and steps every kernel once, with an
empty on-disk numba cache (cold: compiles) and then with the cache it left (warm).
Last, the Python around the kernels: ``AlarmEngine.judge`` for one quiet poll of the
lithium-warehouse site, as the daemon calls it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from edge_agent.alarms import AlarmEngine
from edge_agent.config import load_config
from edge_agent.core import (
    AnomalyBank,
    AnomalyTwin,
    ExposureBank,
    ExposureTwin,
    LimitTwin,
    RateOfRiseBank,
    RateOfRiseTwin,
    SensorFaultBank,
    SensorFaultTwin,
    ThresholdBank,
    anomaly_run,
    exposure_run,
    rate_run,
    sensor_faults_run,
    threshold_run,
)
from edge_agent.site_rules import site_spec
from simulators import SimulatedDevice

SAMPLES = 1 << 20  # per run, whatever the channel count
WINDOW_S = 120.0
TARGET = 20e6

WARM_START = """
import time
t0 = time.perf_counter()
import numpy as np
from edge_agent import core
x, t = np.full(4, 1.0), 1.0
core.ThresholdBank(np.arange(4), np.ones(4), np.ones(4, bool), np.zeros(4)).step(x, t)
core.RateOfRiseBank(4).step(x, t)
core.ExposureBank(4, max_gap_s=1.0, stel_limit=1.0, twa_limit=1.0).step(x, t)
core.SensorFaultBank(4, pairs=[(0, 1, 1.0, 60.0)]).step(x, t)
core.AnomalyBank(4).step(x, t)
core.RuleBank(np.array([0, 0]), np.array([60.0])).step(np.ones(2, bool), t)
print(time.perf_counter() - t0)
"""


def best_of(repeats: int, body: Callable[[], object]) -> float:
    """The shortest of ``repeats`` timings of ``body()``, in seconds (least disturbed)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        body()
        times.append(time.perf_counter() - t0)
    return min(times)


def readings(cycles: int, channels: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A gas-like random walk per channel, one reading a second; 1 % missing, 0.1 %
    spikes.
    """
    rng = np.random.default_rng(seed)
    x = 5.0 + np.abs(np.cumsum(rng.normal(0.0, 0.05, (cycles, channels)), axis=0))
    x[rng.random(x.shape) < 0.001] += 50.0
    x[rng.random(x.shape) < 0.01] = np.nan
    return x, np.arange(cycles, dtype=np.float64)


def banks(channels: int) -> dict[str, object]:
    """The per-channel kernel set for ``channels`` channels, as the engine builds it."""
    c = np.arange(channels)
    pairs = [(a, a + 1, 2.0, 60.0) for a in range(0, channels - 1, 2)]
    return {
        "sensor_faults": SensorFaultBank(channels, epsilon=1e-6, stuck_s=600.0, max_rate=10.0,
                                         gap_s=30.0, pairs=pairs),
        "rate": RateOfRiseBank(channels, window_s=WINDOW_S, capacity=256),
        # L1 and L2 on each reading, then a rise limit on each slope (inputs C + c)
        "threshold": ThresholdBank(np.concatenate([c, c, channels + c]),
                                   np.repeat([10.0, 20.0, 1.0], channels),
                                   np.ones(3 * channels, bool),
                                   np.repeat([0.5, 0.5, 0.25], channels),
                                   on_delay=np.repeat([0.0, 0.0, 30.0], channels)),
        "exposure": ExposureBank(channels, max_gap_s=1.0, stel_limit=15.0, twa_limit=10.0),
        "anomaly": AnomalyBank(channels),
    }


def kernel_calls(channels: int, x: np.ndarray, t: np.ndarray) -> dict[str, Callable[[], None]]:
    """Each compiled series runner on fresh banks, on the inputs the engine's chain gives
    it (computed here first: sensor faults clean the readings; the rate of rise, the
    limits on the clean readings and the slopes, exposure and the anomaly detector take
    them), its outputs allocated here once: a kernel's cost, not the allocator's or the
    chain's copies (the daemon's banks reuse their arrays too).
    """
    first = banks(channels)
    clean = first["sensor_faults"].run(x, t)["clean"]
    slope = first["rate"].run(clean, t)["slope"]
    both = np.concatenate([clean, slope], axis=1)
    kernels = banks(channels)
    faults, rate, limits = kernels["sensor_faults"], kernels["rate"], kernels["threshold"]
    exposure, anomaly = kernels["exposure"], kernels["anomaly"]
    fault_out = [np.zeros(x.shape, dtype) for dtype in faults._OUTPUT_DTYPES]
    rate_out = [np.zeros(x.shape), np.zeros(x.shape, np.bool_)]
    active = np.zeros((x.shape[0], len(limits.setpoint)), np.bool_)
    exposure_out = [np.zeros(x.shape, dtype) for dtype in exposure._OUTPUT_DTYPES]
    reset, scores = np.zeros(x.shape, np.bool_), np.zeros(x.shape)
    return {
        "sensor_faults": lambda: sensor_faults_run(x, t, *faults._params(), *fault_out),
        "rate": lambda: rate_run(clean, t, *rate._params(), *rate_out),
        "threshold": lambda: threshold_run(
            both, t, limits.channel, limits.setpoint, limits.above, limits.deadband,
            limits.on_delay, limits.off_delay, limits.latch, limits.condition, limits.since,
            limits.active, limits.acked, limits.changed, active),
        "exposure": lambda: exposure_run(clean, t, reset, *exposure._params(), *exposure_out),
        "anomaly": lambda: anomaly_run(clean, t, anomaly._params, anomaly.clock, anomaly.env,
                                       anomaly.level, anomaly.episode, anomaly.hold,
                                       anomaly.flagged, scores),
    }


def run_set(kernels: dict[str, object], x: np.ndarray, t: np.ndarray) -> None:
    """The same chain through the banks' ``run`` (each allocates its outputs)."""
    clean = kernels["sensor_faults"].run(x, t)["clean"]
    slope = kernels["rate"].run(clean, t)["slope"]
    kernels["threshold"].run(np.concatenate([clean, slope], axis=1), t)
    kernels["exposure"].run(clean, t)
    kernels["anomaly"].run(clean, t)


def throughput(channels: int, repeats: int = 3) -> dict[str, float]:
    """Samples per second of each kernel and of the whole set, best of ``repeats``; and
    of the set through ``run``, allocations included.
    """
    x, t = readings(SAMPLES // channels, channels)
    run_set(banks(channels), x[:50], t[:50])  # compile or load the cache
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, call in kernel_calls(channels, x, t).items():
            best[name] = min(best.get(name, math.inf), best_of(1, call))
    rates = {name: x.size / s for name, s in best.items()}
    rates["full_set"] = x.size / sum(best.values())
    rates["full_set_run"] = x.size / min(best_of(1, lambda: run_set(banks(channels), x, t))
                                         for _ in range(repeats))
    return rates


def twin_throughput(channels: int = 4, cycles: int = 150) -> dict[str, float]:
    """Samples per second of each plain-Python twin, on the same kind of series."""
    x, t = readings(cycles, channels, seed=2)
    rows, times = x.tolist(), t.tolist()

    def per_channel(make: Callable[[], object], step: Callable[[object, float, float], object]
                    ) -> Callable[[], None]:
        def body() -> None:
            twins = [make() for _ in range(channels)]
            for row, tk in zip(rows, times, strict=True):
                for c, twin in enumerate(twins):
                    step(twin, row[c], tk)
        return body

    def faults() -> None:
        twin = SensorFaultTwin([1e-6] * channels, [600.0] * channels, [10.0] * channels,
                               [30.0] * channels, [(0, 1, 2.0, 60.0), (2, 3, 2.0, 60.0)])
        for row, tk in zip(rows, times, strict=True):
            twin.step(row, tk)

    def limits() -> None:
        twins = [LimitTwin(sp, "above", db) for sp, db in ((10.0, 0.5), (20.0, 0.5))]
        rise = LimitTwin(1.0, "above", 0.25, on_delay=30.0)
        for row, tk in zip(rows, times, strict=True):
            for c in range(channels):
                for twin in twins:
                    twin.step(row[c], tk)
                rise.step(0.0, tk)

    bodies = {
        "sensor_faults": faults,
        "rate": per_channel(lambda: RateOfRiseTwin(WINDOW_S, capacity=256),
                            lambda tw, v, tk: tw.step(v, tk)),
        "threshold": limits,
        "exposure": per_channel(lambda: ExposureTwin(1.0, stel_limit=15.0, twa_limit=10.0),
                                lambda tw, v, tk: tw.step(v, tk)),
        "anomaly": per_channel(AnomalyTwin, lambda tw, v, tk: tw.step(v, tk)),
    }
    return {name: x.size / best_of(2, body) for name, body in bodies.items()}


def warm_start() -> dict[str, float]:
    """Seconds from import to every kernel stepped once, in a fresh process: with an
    empty numba cache, then with the cache that run left.
    """
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for name in ("cold", "warm", "warm_again"):
            t0 = time.perf_counter()
            inner = subprocess.run([sys.executable, "-c", WARM_START], env=env, check=True,
                                   capture_output=True, text=True).stdout
            out[f"{name}_s"] = float(inner)
            out[f"{name}_process_s"] = time.perf_counter() - t0
    return out


def engine_poll_us() -> tuple[float, int]:
    """Microseconds of ``AlarmEngine.judge`` for one quiet poll of every channel of the
    lithium-warehouse site, and how many channels that is.
    """
    loaded = load_config("config/lithium_warehouse.toml")
    engine = AlarmEngine(site_spec(loaded))
    poll: dict[str, float] = {}
    for device in loaded.site.devices:
        values = SimulatedDevice(loaded.profiles.get(device.profile), seed=1).values()
        poll |= {f"{device.name}.{k}": v for k, v in values.items()
                 if f"{device.name}.{k}" in engine.channels}
    polls = 2000
    engine.judge(poll, 0)
    seconds = best_of(3, lambda: [engine.judge(poll, 1000 * (k + 1)) for k in range(polls)])
    return seconds / polls * 1e6, len(poll)


def main() -> None:
    x = np.random.default_rng(3).random(SAMPLES)
    bandwidth = SAMPLES / best_of(50, x.sum)
    one, wide = throughput(1), throughput(256)
    twins = twin_throughput()
    start = warm_start()
    judge_us, polled = engine_poll_us()

    speedup = {name: wide[name] / rate for name, rate in twins.items()}
    twin_set = 1.0 / sum(1.0 / rate for rate in twins.values())
    print(f"core: {SAMPLES:,} samples per run (1 reading/s, 1 % missing), one core; "
          f"numpy.sum baseline {bandwidth / 1e6:,.0f} M samples/s")
    print(f"{'kernel':16} {'1 ch M/s':>10} {'256 ch M/s':>11} {'twin k/s':>10} "
          f"{'speed-up':>10}")
    for name in (*twins, "full_set"):
        twin = twins.get(name, twin_set)
        print(f"{name:16} {one[name] / 1e6:10.2f} {wide[name] / 1e6:11.2f} "
              f"{twin / 1e3:10.1f} {wide[name] / twin:10.0f}")
    print(f"full set, 256 channels: {wide['full_set'] / 1e6:.1f} M samples/s = "
          f"{wide['full_set'] / bandwidth:.3f} of numpy.sum; target {TARGET / 1e6:.0f} M "
          f"samples/s: {'met' if wide['full_set'] >= TARGET else 'NOT met'}")
    print(f"through the banks' run(), outputs allocated per call: "
          f"{wide['full_set_run'] / 1e6:.1f} M samples/s (1 channel: "
          f"{one['full_set_run'] / 1e6:.1f})")
    print(f"warm start (import + every kernel once): cold cache {start['cold_s']:.2f} s, "
          f"warm {start['warm_s']:.2f} s (process {start['warm_process_s']:.2f} s)")
    print(f"AlarmEngine.judge, lithium warehouse ({polled} channels, quiet): "
          f"{judge_us:.0f} µs per poll")
    figures = {
        "samples_per_s": wide["full_set"], "samples_per_s_1ch": one["full_set"],
        "samples_per_s_run": wide["full_set_run"],
        "ratio_to_bandwidth": wide["full_set"] / bandwidth,
        "ratio_to_bandwidth_1ch": one["full_set"] / bandwidth,
        "bandwidth_samples_per_s": bandwidth,
        "speedup_vs_python": wide["full_set"] / twin_set,
        "warm_start_s": start["warm_s"], "cold_start_s": start["cold_s"],
        "warm_start_process_s": start["warm_process_s"],
        "judge_us_per_poll": judge_us,
        **{f"{name}_samples_per_s": wide[name] for name in twins},
        **{f"{name}_speedup": speedup[name] for name in twins},
    }
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                      for k, v in figures.items()}))


if __name__ == "__main__":
    main()
