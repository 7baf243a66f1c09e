"""The daemon: wires the pipeline together and supervises it.

    buses (one task each) -> queue -> judge (alarm engine) -> buffer (one transaction)
                                                                  -> uplink thread

The poll path never waits for the uplink: it commits to the buffer and pokes
the uplink thread, which drains on its own. Every long-lived task is
supervised: if one dies it is restarted, and its death is a fault event
(PEER_LESSONS 3).
"""

from __future__ import annotations

import asyncio
import math
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from edge_agent import __version__, memory, runlock
from edge_agent.acquisition import FAULTS, BusPoller, ModbusTransport, PollResult, bus_poller
from edge_agent.alarms import AlarmEngine, Outcome
from edge_agent.buffer import Buffer
from edge_agent.config import LoadedConfig
from edge_agent.records import CoreState, Event, Quality, Sample
from edge_agent.site_rules import site_spec
from edge_agent.uplink import Uplink
from edge_agent.uplink.payloads import Origin

log = structlog.get_logger(__name__)

_STOP = object()  # put in the record queue at shutdown, after the last poll result
STATE_SAVE_S = 60.0
_JUDGED = (Quality.GOOD, Quality.OUT_OF_RANGE)
# Telemetry was dropped undelivered to keep the quota; ends once the file is back
# under FULL_CLEARS of it.
BUFFER_FULL = "agent:buffer:full"
FULL_CLEARS = 0.9
BUFFER_CORRUPT = "agent:buffer:corrupt"  # the file was moved aside at start
# Faults of one sensor, raised while its samples have one of these qualities
# (their keys come from site_rules.QUALITY_FAULTS).
CHANNEL_FAULTS = {"sensor_fault": (Quality.DEVICE_FAULT, Quality.BAD),
                  "out_of_range": (Quality.OUT_OF_RANGE,)}


class Agent:
    """One gateway's agent, built from a validated config; ``run`` until stopped."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        site = loaded.site
        self._lock = runlock.hold(site.buffer.path)  # released when the process ends
        retention = site.buffer.retention_days
        self.buffer = Buffer(site.buffer.path, site.buffer.max_bytes,
                             retention_s=retention * 86400 if retention else None)
        # Faults of the agent itself that a restart ends.
        self._task_keys = {_task_key("record"), BUFFER_CORRUPT} | {
            _task_key(f"bus:{b.name}") for b in site.buses}
        spec = site_spec(loaded, [f"{d.name}:{f}" for d in site.devices for f in FAULTS]
                         + sorted(self._task_keys) + [BUFFER_FULL])
        self.engine = AlarmEngine(spec, restored=self.buffer.active_alarms())
        self.engine.restore(self.buffer.core_state())
        self._state_due = 0.0  # monotonic time of the next core-state save
        self.started = time.time()
        # Written by the event loop only; the uplink thread reads them for `health`.
        self.counters = {"samples": 0, "events": 0, "cycles": 0, "evicted": 0, "expired": 0,
                         "alarms_active": 0, "faults_active": 0}
        self.buses: list[BusPoller] = []
        self.final_depth: dict[str, int] | None = None  # rows left in the buffer at stop
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        # Judged on the event loop, committed on the writer thread; the record task
        # never touches them while a commit runs.
        self._pending = Outcome()
        self._pending_samples: list[Sample] = []
        self._stored = _Stored()
        self._pending_state: CoreState | None = None
        self._writer: ThreadPoolExecutor | None = None
        self.uplink = Uplink(site.mqtt, buffer_path=str(site.buffer.path), health=self.health,
                             origin=Origin(site.site_id, site.gateway_id, self.buffer.epoch),
                             birth={"version": __version__, "config_hash": loaded.hash,
                                    "started": int(self.started * 1000)})

    def health(self) -> dict[str, Any]:
        """The agent's own figures, published on ``health`` (called from the uplink thread)."""
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "samples_polled": self.counters["samples"],
            "events": self.counters["events"],
            "samples_evicted": self.counters["evicted"],
            "samples_expired": self.counters["expired"],
            "alarms_active": self.counters["alarms_active"],
            "faults_active": self.counters["faults_active"],
            "rss_bytes": memory.resident_bytes(),
            "buses": {b.name: b.stats.report() for b in self.buses},
        }

    # --- running ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, drain_timeout_s: float = 5.0) -> None:
        site = self.loaded.site
        log.info("agent_starting", version=__version__, gateway=site.gateway_id,
                 site=site.site_id, config=str(self.loaded.path), config_hash=self.loaded.hash)
        for bus in site.buses:
            devices = [(d, self.loaded.profiles.get(d.profile)) for d in site.devices
                       if d.bus == bus.name]
            if devices:
                self.buses.append(bus_poller(bus, devices, self._queue.put_nowait))
        for poller in self.buses:
            for device, profile in poller.devices:
                _log_plan(poller, device, profile)
        before = memory.resident_bytes()
        advised = memory.release_compiler_pages()  # the kernels are loaded by now
        log.info("compiler_pages_released", advised_mb=advised >> 20,
                 rss_mb_before=before >> 20, rss_mb_after=memory.resident_bytes() >> 20)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="buffer-writer")
        self._queue.put_nowait(self._after_restart())
        self.uplink.start()
        record = asyncio.create_task(self._supervise("record", self._record), name="record")
        pollers = [asyncio.create_task(self._supervise(f"bus:{p.name}", p.run),
                                       name=f"bus:{p.name}") for p in self.buses]
        await stop.wait()
        log.info("agent_stopping")
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        self._queue.put_nowait(_STOP)  # the record task stores what was polled, then ends
        await record
        self._writer.shutdown()
        await asyncio.to_thread(self.uplink.stop, drain_timeout_s)
        self.final_depth = self.buffer.depth()
        self.buffer.close()
        self._lock.close()
        log.info("agent_stopped", samples_polled=self.counters["samples"],
                 events=self.counters["events"], buffer_depth=self.final_depth,
                 delivered=self.uplink.delivered)

    def _after_restart(self) -> Outcome:
        """End what the last run left active that a restart resolves by itself."""
        now = _now_ms()
        outcome = self.engine.withdraw_orphans(now)
        for key in [k for k in self.engine.active if k in self._task_keys]:
            outcome.extend(self.engine.fault(key, False, now, {"reason": "agent restarted"}))
        if self.buffer.moved_aside:
            outcome.extend(self.engine.fault(BUFFER_CORRUPT, True, now, {
                "moved_to": str(self.buffer.moved_aside),
                "reason": "the buffer file was corrupt; a new one was started"}))
        return outcome

    async def _supervise(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body``; if it dies, raise a fault, wait, restart it and end the fault."""
        delay = 1.0
        while True:
            started = time.monotonic()
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("task_failed", task=name)
                if time.monotonic() - started > 60:
                    delay = 1.0  # it had been running well: a new failure, not a loop
                details = {"task": name, "error": repr(exc)}
                self._queue.put_nowait(self.engine.fault(_task_key(name), True, _now_ms(),
                                                         details))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                log.info("task_restarting", task=name)
                self._queue.put_nowait(self.engine.fault(_task_key(name), False, _now_ms(),
                                                         details))

    async def _record(self) -> None:
        """Judge what the queue brings and store it, one transaction per batch.

        The commit runs on a writer thread, so a slow fsync on an SD card or a
        wait for the uplink's delete never stalls the pollers. If it fails, what
        was judged stays pending and goes with the next batch.
        """
        loop = asyncio.get_running_loop()
        delay, failures = 0.1, 0
        while True:
            items = [await self._queue.get(), *self._take_queued()]
            for item in items:
                if isinstance(item, PollResult):
                    item = self._judge(item)
                if isinstance(item, Outcome):
                    for event in item.events:
                        _log_event(event)
                    self._pending.extend(item)
            stopping = _STOP in items
            if stopping or time.monotonic() >= self._state_due:
                # Exposure windows and timers go to disk once a minute and at the stop.
                self._pending_state = self.engine.snapshot()
                self._state_due = time.monotonic() + STATE_SAVE_S
            try:
                await loop.run_in_executor(self._writer, self._commit_pending)
                self._counted()
                delay, failures = 0.1, 0
            except sqlite3.Error as exc:
                failures += 1
                log.error("buffer_write_failed", error=str(exc), attempt=failures,
                          waiting_samples=len(self._pending_samples))
                if stopping and failures >= 3:
                    log.error("stopped_with_unstored_samples", samples=len(self._pending_samples),
                              events=len(self._pending.events))
                    return
                if stopping:
                    self._queue.put_nowait(_STOP)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if stopping:
                return

    def _take_queued(self) -> list[object]:
        batch = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    def _judge(self, result: PollResult) -> Outcome:
        """Run the alarm engine on one poll result; its samples wait to be stored.

        Only fresh readings are judged (good and out-of-range); any other sample
        holds the alarm state where it is, and its cause is a fault of its own.
        """
        ts_ms = result.samples[0].ts_ms
        outcome = self.engine.judge(
            {s.channel: s.value if s.quality in _JUDGED else math.nan for s in result.samples},
            ts_ms)
        for fault in FAULTS:
            outcome.extend(self.engine.fault(
                f"{result.device}:{fault}", result.fault == fault, ts_ms,
                {"device": result.device, "kind": fault, "error": result.error}))
        if result.fault is None:  # the device answered: what it says of each sensor
            for sample in result.samples:
                if sample.quality is Quality.STALE:
                    continue
                for fault, qualities in CHANNEL_FAULTS.items():
                    outcome.extend(self.engine.fault(
                        f"{sample.channel}:{fault}", sample.quality in qualities, ts_ms,
                        {"channel": sample.channel, "kind": fault,
                         "quality": sample.quality.label}))
        outcome.extend(self.engine.reliability(ts_ms))
        self._pending_samples += result.samples
        return outcome

    def _commit_pending(self) -> None:
        """On the writer thread: store everything judged so far in one transaction."""
        pending, samples, state = self._pending, self._pending_samples, self._pending_state
        if not samples and not pending.events and not state:
            return
        self.buffer.commit_cycle(samples, pending.events, pending.raised, pending.ended,
                                 core_state=state)
        self._pending, self._pending_samples, self._pending_state = Outcome(), [], None
        trimmed = self.buffer.trim(_now_ms())
        self._stored = _Stored(len(samples), len(pending.events), trimmed.evicted,
                               trimmed.expired, self.buffer.used_bytes())

    def _counted(self) -> None:
        stored, self._stored = self._stored, _Stored()
        self.counters["samples"] += stored.samples
        self.counters["events"] += stored.events
        self.counters["evicted"] += stored.evicted
        self.counters["expired"] += stored.expired
        self.counters["cycles"] += 1
        for cls in ("alarm", "fault"):
            self.counters[f"{cls}s_active"] = sum(1 for a in self.engine.active.values()
                                                   if a.cls == cls)
        if stored.expired:
            log.warning("buffer_expired", samples=stored.expired,
                        retention_days=self.loaded.site.buffer.retention_days)
        quota = self.buffer.max_bytes
        if stored.evicted or (BUFFER_FULL in self.engine.active
                              and stored.used_bytes < FULL_CLEARS * quota):
            self._queue.put_nowait(self.engine.fault(BUFFER_FULL, bool(stored.evicted),
                                                     _now_ms(), {
                "evicted": stored.evicted, "evicted_total": self.counters["evicted"],
                "quota_bytes": quota, "used_bytes": stored.used_bytes}))
        if stored.samples or stored.events:
            self.uplink.notify()


@dataclass(frozen=True, slots=True)
class _Stored:
    """What the last commit stored and dropped."""

    samples: int = 0
    events: int = 0
    evicted: int = 0
    expired: int = 0
    used_bytes: int = 0


def _log_plan(poller: BusPoller, device, profile) -> None:
    transport = poller.transport
    if isinstance(transport, ModbusTransport):
        plan = transport.plan(device, profile)
        log.info("device_plan", bus=poller.name, device=device.name, profile=profile.name,
                 unit_id=device.unit_id, requests=len(plan.blocks),
                 registers=sum(b.count for b in plan.blocks))
    else:
        log.info("device_plan", bus=poller.name, device=device.name, profile=profile.name,
                 transport=profile.transport)


def _task_key(name: str) -> str:
    return f"agent:{name}:failed"


def _log_event(event: Event) -> None:
    level = log.warning if event.transition == "raised" else log.info
    level(f"{event.cls}_{event.transition}", id=event.alarm_id, key=event.key,
          **{k: v for k, v in event.details.items() if k in ("value", "setpoint", "unit",
                                                                "error")})


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def run(loaded: LoadedConfig) -> None:
    """Run the agent in this process until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Agent(loaded).run(stop)

    asyncio.run(main())
