"""What the local web view costs the agent: CPU, memory and poll timing with 0 and 5
live pages open.

A private mosquitto, a simulated Modbus TCP gateway with two confined-space
4-gas detectors polled every 0.5 s, and the agent as a real process with its web
view on. Three phases of PHASE_S each: no page open (the baseline), 5 live streams
read by plain HTTP clients (the agent's own cost of serving them), and 5 pages in
headless Chromium on the site view (real browsers, on the same 2 cores as the
agent). For each: the agent's CPU (utime + stime over the phase, % of one core),
its VmRSS at the end, and the poll jitter: for each channel, consecutive sample
times at the platform minus the poll interval, p50 / p99 / max of its absolute value.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import statistics
import string
import tempfile
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from bench.sim_site import confined_space, cpu_s, rss_mb, start_agent
from edge_agent.demo.broker import free_port
from edge_agent.demo.platform import PlatformSubscriber

PHASE_S, CLIENTS, INTERVAL_S = 40, 5, 0.5
SITE = string.Template("""gateway_id = "gw-web-bench"
site_id = "bench-web"
[[buses]]
name = "manhole"
type = "modbus-tcp"
host = "127.0.0.1"
port = $modbus_port
[[devices]]
name = "top"
bus = "manhole"
unit_id = 1
profile = "generic_4gas"
poll_interval_s = $interval
[[devices]]
name = "bottom"
bus = "manhole"
unit_id = 2
profile = "generic_4gas"
poll_interval_s = $interval
[[spaces]]
name = "manhole"
detectors = [{ device = "top", point = "top" }, { device = "bottom", point = "bottom" }]
[mqtt]
host = "127.0.0.1"
port = $broker_port
tls = "off"
[buffer]
path = "$buffer"
[web]
enabled = true
port = $web_port
""")


def sample_times(sub: PlatformSubscriber, since_ms: float, until_ms: float
                 ) -> dict[str, list[int]]:
    times: dict[str, list[int]] = {}
    for message in list(sub.messages):
        if message.kind == "telemetry":
            for s in message.body["samples"]:
                if since_ms <= s["ts"] < until_ms:
                    times.setdefault(s["ch"], []).append(s["ts"])
    return times


def jitter_ms(times: dict[str, list[int]]) -> dict[str, float]:
    deviations = sorted(abs(b - a - INTERVAL_S * 1000) for ts in times.values()
                        for a, b in zip(sorted(ts), sorted(ts)[1:], strict=False))
    return {"p50": statistics.median(deviations),
            "p99": deviations[int(0.99 * (len(deviations) - 1))], "max": deviations[-1],
            "intervals": len(deviations), "channels": len(times)}


class Streams:
    """``n`` plain HTTP clients reading the live stream until stopped."""

    def __init__(self, port: int, n: int) -> None:
        self.port, self.frames, self._stop = port, [0] * n, threading.Event()
        self.threads = [threading.Thread(target=self._read, args=(i,), daemon=True)
                        for i in range(n)]

    def _read(self, i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/api/live")
        response = conn.getresponse()
        assert response.status == 200, response.status
        while not self._stop.is_set():
            if response.readline().startswith(b"data: "):
                self.frames[i] += 1
        conn.close()

    def __enter__(self) -> Streams:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(5)


def phase(name: str, pid: int, sub: PlatformSubscriber) -> dict[str, object]:
    t0, c0, ms0 = time.monotonic(), cpu_s(pid), time.time() * 1000
    time.sleep(PHASE_S)  # the phase's length, measured: not a synchronisation
    elapsed, used = time.monotonic() - t0, cpu_s(pid) - c0
    ms1 = time.time() * 1000
    return {"phase": name, "cpu_percent": 100 * used / elapsed, "rss_mb": rss_mb(pid),
            "_window": (ms0, ms1)}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="edge-agent-web-bench-"))
    results = []
    try:
        with contextlib.ExitStack() as stack:
            broker, _, sim, sub = confined_space(work, stack)
            web_port = free_port()
            config = work / "site.toml"
            config.write_text(SITE.substitute(modbus_port=sim.port, broker_port=broker.port,
                                              buffer=work / "buffer.db", web_port=web_port,
                                              interval=INTERVAL_S))
            agent = start_agent(config, stack)
            view = sub.gateways["gw-web-bench"]
            if not sub.wait_for(lambda: len(view.sample_seqs) > 50, 60):
                raise RuntimeError((work / "agent.log").read_text()[-2000:])
            results.append(phase("0 clients", agent.pid, sub))
            with Streams(web_port, CLIENTS) as streams:
                results.append(phase(f"{CLIENTS} live streams (HTTP)", agent.pid, sub))
            results[-1]["frames"] = sum(streams.frames)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                            args=["--no-sandbox"])
                pages = [browser.new_context(viewport={"width": 390, "height": 844}).new_page()
                         for _ in range(CLIENTS)]
                for page in pages:
                    page.goto(f"http://127.0.0.1:{web_port}/")
                    page.wait_for_selector(".tile")
                results.append(phase(f"{CLIENTS} Chromium pages", agent.pid, sub))
                browser.close()
            time.sleep(2 * INTERVAL_S + 1)  # the last phase's samples reach the platform
            for r in results:
                r.update(jitter_ms(sample_times(sub, *r.pop("_window"))))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results[0]
    print(f"the agent with its web view on, 2 detectors ({base['channels']} channels) polled "
          f"every {INTERVAL_S} s; {PHASE_S} s a phase")
    print(f"{'phase':28} {'CPU %':>7} {'x base':>7} {'RSS MB':>7} {'jitter p50':>11} "
          f"{'p99 ms':>7} {'max ms':>7} {'intervals':>9}")
    for r in results:
        print(f"{r['phase']:28} {r['cpu_percent']:7.2f} "
              f"{r['cpu_percent'] / base['cpu_percent']:7.2f} {r['rss_mb']:7.1f} "
              f"{r['p50']:11.1f} {r['p99']:7.1f} {r['max']:7.1f} {r['intervals']:9d}")
    print(json.dumps({r["phase"]: {k: round(v, 2) if isinstance(v, float) else v
                                   for k, v in r.items() if k != "phase"} for r in results}))


if __name__ == "__main__":
    main()
