"""Throughput of the compiled threshold kernel against its plain-Python twin, and the
per-poll cost of the alarm engine around it.

Every sample of every poll goes through ``threshold_step``, so its cost bounds
how many limits a Pi-class gateway can judge. The same random inputs (1000
limits over 200 channels, 500 cycles of a random walk with ~1 % NaN readings)
go through the kernel, one call per cycle, and through ``threshold_twin``,
limit by limit; both must end in the same state. The figure is limit
evaluations per second, and the ratio kernel/twin. Then ``AlarmEngine.judge``
is timed as the daemon calls it: the confined-space site's engine (2 devices,
14 channels, 16 limits) judging one device's 7 readings of a quiet poll, the
common case; the bare kernel call on the same arrays shows how much of that
is numba dispatch and how much the Python around it.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from edge_agent.acquisition import plan_device
from edge_agent.alarms import AlarmEngine, LimitSpec
from edge_agent.config import load_config
from edge_agent.core import new_state, threshold_step, threshold_twin
from simulators import SimulatedDevice, load_scenario

CHANNELS, LIMITS, CYCLES, REPEATS = 200, 1000, 500, 20


def best_of(repeats: int, body) -> float:
    """The shortest of ``repeats`` timings of ``body()``, in seconds (least disturbed)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        body()
        times.append(time.perf_counter() - t0)
    return min(times)


def random_site(seed: int = 7):
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.normal(0.0, 1.0, (CYCLES, CHANNELS)), axis=0)
    values[rng.random(values.shape) < 0.01] = np.nan
    channel = rng.integers(0, CHANNELS, LIMITS).astype(np.int64)
    setpoint = rng.uniform(-15.0, 15.0, LIMITS)
    above = rng.random(LIMITS) < 0.7
    deadband = rng.uniform(0.0, 1.0, LIMITS)
    return values, channel, setpoint, above, deadband


def kernel_run(values, channel, setpoint, above, deadband) -> tuple[np.ndarray, int]:
    active, changed = new_state(LIMITS)
    flips = 0
    for row in values:
        flips += threshold_step(row, channel, setpoint, above, deadband, active, changed)
    return active, flips


def twin_run(values, channel, setpoint, direction, deadband) -> tuple[list[bool], int]:
    active, flips = [False] * LIMITS, 0
    for row in values:
        for i in range(LIMITS):
            now = threshold_twin(row[channel[i]], setpoint[i], direction[i], deadband[i],
                                 active[i])
            flips += now != active[i]
            active[i] = now
    return active, flips


def site_engine() -> tuple[AlarmEngine, list[dict[str, float]]]:
    """The daemon's engine for config/confined_space.toml, and 1000 quiet polls of "top"."""
    loaded = load_config("config/confined_space.toml")
    channels, limits = [], []
    for device in loaded.site.devices:
        profile = loaded.profiles.get(device.profile)
        channels += [name for name, _ in plan_device(device, profile).channels]
        limits += [LimitSpec(f"{device.name}.{name}", lim.level, lim.direction, lim.setpoint,
                             lim.deadband, profile.register(name).unit)
                   for name, channel in device.channels.items() for lim in channel.limits]
    scenario, profile = load_scenario("confined_space", loaded.profiles)
    device = SimulatedDevice(profile, 1, scenario, seed=1)
    polls = [{f"top.{k}": v for k, v in device.values().items()} for _ in range(1000)]
    return AlarmEngine(channels, limits), polls


def main() -> None:
    values, channel, setpoint, above, deadband = random_site()
    args = (values, channel, setpoint, above, deadband)
    py_args = (values.tolist(), channel.tolist(), setpoint.tolist(),
               ["above" if a else "below" for a in above], deadband.tolist())
    k_active, k_flips = kernel_run(*args)  # compiles, or loads the numba cache
    t_active, t_flips = twin_run(*py_args)
    agree = k_active.tolist() == t_active and k_flips == t_flips
    evals = LIMITS * CYCLES
    kernel_s = best_of(REPEATS, lambda: kernel_run(*args))
    twin_s = best_of(5, lambda: twin_run(*py_args))

    engine, polls = site_engine()
    engine.judge(polls[0], 0)
    judge_s = best_of(REPEATS, lambda: [engine.judge(p, 0) for p in polls]) / len(polls)
    e = engine
    vector = np.full(len(e.channels), math.nan)
    for name, value in polls[0].items():
        vector[e.channels[name]] = value
    bare_s = best_of(REPEATS, lambda: [threshold_step(vector, e._channel, e._setpoint, e._above,
                                                      e._deadband, e._active, e._changed)
                                       for _ in polls]) / len(polls)

    figures = {
        "kernel_limit_evals_per_s": evals / kernel_s, "twin_limit_evals_per_s": evals / twin_s,
        "ratio_kernel_to_twin": twin_s / kernel_s,
        "kernel_us_per_cycle_1000_limits": kernel_s / CYCLES * 1e6,
        "judge_us_per_poll": judge_s * 1e6, "kernel_call_us_16_limits": bare_s * 1e6,
        "judge_alarms_raised": len(engine.active), "kernel_twin_agree": agree,
    }
    f = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
    print(f"threshold: {LIMITS} limits over {CHANNELS} channels, {CYCLES} cycles, "
          f"{k_flips} state changes, kernel and twin agree: {agree}")
    print(f"{'':24} {'evals/s':>14} {'µs/cycle':>10} {'ratio':>8}")
    print(f"{'threshold_step (numba)':24} {evals / kernel_s:14,.0f} "
          f"{kernel_s / CYCLES * 1e6:10.1f} {twin_s / kernel_s:8.1f}")
    print(f"{'threshold_twin (Python)':24} {evals / twin_s:14,.0f} "
          f"{twin_s / CYCLES * 1e6:10.1f} {1.0:8.1f}")
    print(f"\nper poll, confined-space site ({len(engine.channels)} channels, "
          f"{len(engine.limits)} limits), one device's 7 readings, quiet")
    print(f"{'AlarmEngine.judge':24} {judge_s * 1e6:10.2f} µs")
    print(f"{'  of which the kernel':24} {bare_s * 1e6:10.2f} µs (bare call, same arrays)")
    if not agree:
        print("ERROR: the kernel and its twin disagree")
    print(json.dumps(f))
    if not agree:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
