"""Start-up time and resident memory of the agent, as a real process on a real site.

The standing targets: the agent goes from start to its first published sample
in under 3 s with a warm numba cache, and its resident memory stays under
150 MB with the demo site running. A private mosquitto, a simulated Modbus TCP
gateway with the confined-space devices and a platform subscriber stand in for
the site; the agent runs as ``python -m edge_agent run`` with a config written
here. One cold run fills a private numba cache (NUMBA_CACHE_DIR), then N warm
runs are timed from Popen to the first telemetry message at the subscriber.
One agent then runs for ~20 s (with an H2S release injected) while its VmRSS is
sampled every second. Baseline, in the same run: the wall time and RSS of
``python -c "import numba, pymodbus, paho.mqtt.client"``, the import floor no
agent can go below.

``make arm64-check`` runs it under qemu-user with fewer runs and longer timeouts
(``--runs 3 --hold 15 --timeout 300``). There, VmRSS is qemu's own resident set:
the emulated process plus qemu's translated-code cache, so it overstates a Pi's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.sim_site import confined_space

SITE = """gateway_id = "{gateway}"
site_id = "bench-confined-space"
[[buses]]
name = "manhole"
type = "modbus-tcp"
host = "127.0.0.1"
port = {modbus_port}
{devices}
[mqtt]
host = "127.0.0.1"
port = {broker_port}
tls = "off"
[buffer]
path = "{buffer}"
"""
DEVICE = string.Template("""[[devices]]
name = "$name"
bus = "manhole"
unit_id = $unit
profile = "generic_4gas"
poll_interval_s = 1.0
[devices.channels.o2]
limits = [{ level = 1, below = 19.5, deadband = 0.2 }, { level = 1, above = 23.5, deadband = 0.2 }]
[devices.channels.co]
limits = [{ level = 1, above = 17.2, deadband = 1.0 }, { level = 2, above = 34.4, deadband = 1.0 }]
[devices.channels.h2s]
limits = [{ level = 1, above = 7.1, deadband = 0.5 }, { level = 2, above = 14.2, deadband = 0.5 }]
[devices.channels.lel]
limits = [{ level = 1, above = 10.0, deadband = 1.0 }, { level = 2, above = 25.0, deadband = 1.0 }]
""")


def status_mb(status: str) -> dict[str, float]:
    """VmRSS, RssAnon and RssFile (mapped files: libllvmlite.so...) from /proc/<pid>/status."""
    fields = dict(line.split(":", 1) for line in status.splitlines()
                  if line.startswith(("VmRSS", "RssAnon", "RssFile")))
    return {k: int(v.split()[0]) / 1024 for k, v in fields.items()}


def import_floor(env: dict[str, str], runs: int) -> tuple[float, float, float]:
    """Median wall time and RSS (all, anonymous) of a process that only imports the floor."""
    code = "import numba, pymodbus, paho.mqtt.client; print(open('/proc/self/status').read())"
    times, rss = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             capture_output=True, text=True).stdout
        times.append(time.perf_counter() - t0)
        rss.append(status_mb(out))
    return (statistics.median(times), statistics.median(r["VmRSS"] for r in rss),
            statistics.median(r["RssAnon"] for r in rss))


def start_agent(work: Path, name: str, ports: dict[str, int], env: dict[str, str]):
    """Write a fresh site config and buffer for one run; start the agent on it."""
    run_dir = work / name
    run_dir.mkdir()
    devices = "".join(DEVICE.substitute(name=n, unit=u) for n, u in (("top", 1), ("bottom", 2)))
    config = run_dir / "site.toml"
    config.write_text(SITE.format(gateway=f"gw-bench-{name}", devices=devices,
                                  buffer=run_dir / "buffer.db", **ports))
    with (run_dir / "agent.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config",
                                 str(config)], env=env, stdout=log, stderr=log)


def stop(agent) -> float:
    """SIGTERM and wait (the agent drains its buffer first); return how long it took."""
    t0 = time.perf_counter()
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            agent.wait(20)
        agent.kill()  # a no-op once it has exited
        agent.wait()
    return time.perf_counter() - t0


def measure(work: Path, stack: contextlib.ExitStack, args: argparse.Namespace) -> tuple:
    """Run the site, the timed starts and the held run; return the raw measurements."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(work / "numba")}
    broker, devices, sim, sub = confined_space(work, stack)
    ports = {"modbus_port": sim.port, "broker_port": broker.port}

    def run(name: str):
        agent = start_agent(work, name, ports, env)
        stack.callback(stop, agent)
        return agent

    def timed_run(name: str) -> tuple[float, float]:
        """Seconds to the first telemetry of this run (each run has its own gateway), to stop."""
        t0, view = time.perf_counter(), sub.gateways[f"gw-bench-{name}"]
        agent = run(name)
        sub.wait_for(lambda: bool(view.sample_seqs) or agent.poll() is not None, args.timeout)
        if not view.sample_seqs:
            log = (work / name / "agent.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name}: no telemetry (exit code {agent.poll()}):\n{log}")
        return time.perf_counter() - t0, stop(agent)

    cold, _ = timed_run("cold")
    timings = [timed_run(f"warm{i}") for i in range(args.runs)]
    floor = import_floor(env, args.runs)
    agent, samples = run("hold"), []
    for second in range(args.hold):
        time.sleep(1)
        if agent.poll() is not None:
            raise RuntimeError(f"agent exited with {agent.returncode} while held")
        if second == 5:
            devices[1].inject("h2s_release")
        samples.append(status_mb(Path(f"/proc/{agent.pid}/status").read_text()))
    return cold, timings, floor, samples, sub.gateways["gw-bench-hold"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="warm starts timed")
    parser.add_argument("--hold", type=int, default=20, help="seconds the held run is sampled")
    parser.add_argument("--timeout", type=float, default=30, help="seconds to a first sample")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edge-agent-bench-"))
    try:
        with contextlib.ExitStack() as stack:  # unwinds in reverse: agents, site, broker
            cold, timings, floor, samples, view = measure(work, stack, args)
        # e.g. "uplink_failed" when the uplink thread lost a race for the buffer at start-up
        errors = sum(p.read_text(errors="replace").count('"level": "error"')
                     for p in work.glob("*/agent.log"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    floor_s, floor_rss, floor_anon = floor
    firsts = [t for t, _ in timings]
    rss, anon = [x["VmRSS"] for x in samples], [x["RssAnon"] for x in samples]
    median = statistics.median(firsts)
    figures = {
        "first_sample_s_min": min(firsts), "first_sample_s_median": median,
        "first_sample_s_max": max(firsts), "first_sample_s_cold_cache": cold,
        "stop_s_median": statistics.median(t for _, t in timings),
        "rss_peak_mb": max(rss), "rss_final_mb": rss[-1], "rss_anon_peak_mb": max(anon),
        "rss_file_peak_mb": max(x["RssFile"] for x in samples),
        "import_floor_s": floor_s, "import_floor_rss_mb": floor_rss,
        "import_floor_rss_anon_mb": floor_anon,
        "ratio_startup_to_import_floor": median / floor_s,
        "ratio_rss_to_import_floor": max(rss) / floor_rss,
        "ratio_rss_anon_to_import_floor": max(anon) / floor_anon,
        "agent_error_logs": errors, "target_first_sample_s": 3.0, "target_rss_mb": 150,
    }
    f = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
    print(f"start to first published sample, s ({args.runs} warm runs; "
          "cold = empty numba cache)")
    print(" ".join(f"{h:>8}" for h in ("min", "median", "max", "cold", "floor", "target")))
    print(" ".join(f"{t:8.2f}" for t in (min(firsts), median, max(firsts), cold, floor_s, 3.0)))
    print(f"runs: {' '.join(f'{t:.2f}' for t in firsts)}; SIGTERM to exit: {f['stop_s_median']} s")
    print(f"\nresident memory, MB, over {args.hold} s with the site running "
          "(H2S release at 6 s)")
    print("                peak    final    floor   target")
    print(f"VmRSS   {max(rss):12.1f} {rss[-1]:8.1f} {floor_rss:8.1f} {150:8.1f}")
    print(f"RssAnon {max(anon):12.1f} {anon[-1]:8.1f} {floor_anon:8.1f}")
    print(f"RssFile {f['rss_file_peak_mb']:12.1f} {samples[-1]['RssFile']:8.1f}")
    print(f"VmRSS each second: {' '.join(f'{r:.0f}' for r in rss)}")
    print(f"held run: the platform got {len(view.sample_seqs)} samples, {len(view.events)} "
          f"alarm events, {view.duplicates} duplicates; error lines in agent logs: {errors}")
    print(json.dumps(f))


if __name__ == "__main__":
    main()
