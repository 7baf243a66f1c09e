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
import contextlib
import math
import os
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from edge_agent import __version__
from edge_agent.acquisition import FAULTS, DevicePlan, ModbusBus, PollResult, plan_device
from edge_agent.alarms import AlarmEngine, LimitSpec, Outcome
from edge_agent.buffer import Buffer
from edge_agent.config import LoadedConfig, SerialBus
from edge_agent.records import Event, Sample
from edge_agent.uplink import Uplink

log = structlog.get_logger(__name__)



class Agent:
    """One gateway's agent, built from a validated config; ``run`` until stopped."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        site = loaded.site
        self.plans: dict[str, list[DevicePlan]] = {bus.name: [] for bus in site.buses}
        for device in site.devices:
            self.plans[device.bus].append(plan_device(device, loaded.profiles.get(device.profile)))
        channels = [ch for plans in self.plans.values() for p in plans for ch, _ in p.channels]
        self.buffer = Buffer(site.buffer.path, site.buffer.max_bytes)
        self.engine = AlarmEngine(
            channels, list(self._limits()),
            fault_keys=[f"{d.name}:{f}" for d in site.devices for f in FAULTS]
            + [_task_key("record")] + [_task_key(f"bus:{b.name}") for b in site.buses],
            restored=self.buffer.active_alarms())
        self.started = time.time()
        self.counters = {"samples": 0, "events": 0, "cycles": 0, "evicted": 0}
        self.buses: list[ModbusBus] = []
        self.final_depth: dict[str, int] | None = None  # rows left in the buffer at stop
        self._queue: asyncio.Queue[PollResult] = asyncio.Queue()
        self._pending = Outcome()  # judged, not yet committed
        self._pending_samples: list[Sample] = []
        self.uplink = Uplink(site.mqtt, site=site.site_id, gateway=site.gateway_id,
                             buffer_path=str(site.buffer.path), health=self.health,
                             birth={"version": __version__, "config_hash": loaded.hash,
                                    "started": int(self.started * 1000)})

    def _limits(self):
        for device in self.loaded.site.devices:
            profile = self.loaded.profiles.get(device.profile)
            for name, channel in device.channels.items():
                unit = profile.register(name).unit
                for limit in channel.limits:
                    yield LimitSpec(f"{device.name}.{name}", limit.level, limit.direction,
                                    limit.setpoint, limit.deadband, unit)

    def health(self) -> dict[str, Any]:
        """The agent's own figures, published on ``health`` (called from the uplink thread)."""
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "samples_polled": self.counters["samples"],
            "events": self.counters["events"],
            "samples_evicted": self.counters["evicted"],
            "alarms_active": sum(1 for a in self.engine.active.values() if a.cls == "alarm"),
            "faults_active": sum(1 for a in self.engine.active.values() if a.cls == "fault"),
            "rss_bytes": _rss_bytes(),
            "buses": {b.bus.name: {"transactions": b.transactions, "failures": b.failures}
                      for b in self.buses},
        }

    # --- running ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, drain_timeout_s: float = 5.0) -> None:
        site = self.loaded.site
        log.info("agent_starting", version=__version__, gateway=site.gateway_id,
                 site=site.site_id, config=str(self.loaded.path), config_hash=self.loaded.hash)
        for bus_name, plans in self.plans.items():
            for plan in plans:
                log.info("device_plan", bus=bus_name, device=plan.device.name,
                         profile=plan.profile.name, unit_id=plan.device.unit_id,
                         requests=len(plan.blocks),
                         registers=sum(b.count for b in plan.blocks))
        self._record_event(self.engine.withdraw_orphans(_now_ms()))
        self.uplink.start()
        tasks = [asyncio.create_task(self._supervise("record", self._record), name="record")]
        for bus in site.buses:
            if isinstance(bus, SerialBus) or not self.plans[bus.name]:
                continue  # no Modbus devices on it (validated: none can be)
            poller = ModbusBus(bus, self.plans[bus.name], self._queue.put_nowait)
            self.buses.append(poller)
            tasks.append(asyncio.create_task(self._supervise(f"bus:{bus.name}", poller.run),
                                             name=f"bus:{bus.name}"))
        await stop.wait()
        log.info("agent_stopping")
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks[1:], return_exceptions=True)
        tasks[0].cancel()
        await asyncio.gather(tasks[0], return_exceptions=True)
        self._judge(self._take_queued())  # what was polled before the stop is kept
        self._flush()
        await asyncio.to_thread(self.uplink.stop, drain_timeout_s)
        self.final_depth = self.buffer.depth()
        self.buffer.close()
        log.info("agent_stopped", samples_polled=self.counters["samples"],
                 events=self.counters["events"], buffer_depth=self.final_depth,
                 delivered=self.uplink.delivered)

    async def _supervise(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body``; if it dies, raise a fault, wait, restart it and end the fault."""
        delay = 1.0
        while True:
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("task_failed", task=name)
                details = {"task": name, "error": repr(exc)}
                self._record_event(self.engine.fault(_task_key(name), True, _now_ms(), details))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                log.info("task_restarting", task=name)
                self._record_event(self.engine.fault(_task_key(name), False, _now_ms(), details))

    async def _record(self) -> None:
        delay = 0.1
        while True:
            first = await self._queue.get()
            self._judge([first, *self._take_queued()])
            try:
                self._flush()
                delay = 0.1
            except sqlite3.Error as exc:
                # Keep what was judged and try again with the next batch; the poll
                # loop goes on, and alarms still reach the log meanwhile.
                log.error("buffer_write_failed", error=str(exc),
                          waiting_samples=len(self._pending_samples))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _take_queued(self) -> list[PollResult]:
        batch = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    def _judge(self, batch: list[PollResult]) -> None:
        """Run the alarm engine on poll results; what it gives waits for ``_flush``."""
        for result in batch:
            ts_ms = result.samples[0].ts_ms
            outcome = self.engine.judge(
                {s.channel: math.nan if s.value is None else s.value for s in result.samples},
                ts_ms)
            for fault in FAULTS:
                outcome.extend(self.engine.fault(
                    f"{result.device}:{fault}", result.fault == fault, ts_ms,
                    {"device": result.device, "kind": fault, "error": result.error}))
            for event in outcome.events:
                _log_event(event)
            self._pending.extend(outcome)
            self._pending_samples += result.samples

    def _flush(self) -> None:
        """Store everything judged since the last flush in one transaction."""
        pending, samples = self._pending, self._pending_samples
        if not samples and not pending.events:
            return
        self.buffer.commit_cycle(samples, pending.events, pending.raised, pending.ended)
        self._pending, self._pending_samples = Outcome(), []
        self.counters["samples"] += len(samples)
        self.counters["events"] += len(pending.events)
        self.counters["cycles"] += 1
        self.counters["evicted"] += self.buffer.enforce_quota()
        self.uplink.notify()

    def _record_event(self, outcome: Outcome) -> None:
        for event in outcome.events:
            _log_event(event)
        self._pending.extend(outcome)
        with contextlib.suppress(sqlite3.Error):  # kept pending; the record task retries
            self._flush()


def _task_key(name: str) -> str:
    return f"agent:{name}:failed"


def _log_event(event: Event) -> None:
    level = log.warning if event.transition == "raised" else log.info
    level(f"{event.cls}_{event.transition}", id=event.alarm_id, key=event.key,
          **{k: v for k, v in event.details.items() if k in ("value", "setpoint", "unit",
                                                                "error")})


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _rss_bytes() -> int:
    with contextlib.suppress(OSError), open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def run(loaded: LoadedConfig) -> None:
    """Run the agent in this process until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Agent(loaded).run(stop)

    asyncio.run(main())
