"""The daemon: wires the pipeline together and supervises it.

    buses (one task each) -> queue -> judge (alarm engine) -> buffer (one transaction)
                                              -> actions (relays)         -> uplink thread
    uplink thread -> commands -> the event loop (ack, read now, new config, ...)

The poll path never waits for the uplink: it commits to the buffer and pokes
the uplink thread, which drains on its own. Every long-lived task is
supervised: if one dies it is restarted, and its death is a fault event
(PEER_LESSONS 3). A new config from the platform replaces the buses, the alarm
engine and the actions in place; the buffer and the uplink stay.
"""

from __future__ import annotations

import asyncio
import datetime
import fnmatch
import math
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from edge_agent import (
    __version__,
    buffer,
    clock,
    commands,
    control,
    entry,
    health,
    lifecycle,
    memory,
    runlock,
    sessions,
    trend,
    watchdog,
)
from edge_agent.acquisition import (
    FAULTS,
    BusPoller,
    ModbusTransport,
    PollResult,
    bus_poller,
)
from edge_agent.actions import ENDS, Actions, fault_key
from edge_agent.alarm_figures import AlarmFigures
from edge_agent.alarms import AlarmEngine, Outcome
from edge_agent.buffer import Buffer
from edge_agent.clock import AgentClock, synchronised
from edge_agent.commands import CommandError
from edge_agent.config import FileError, LoadedConfig, Space, load_config, replace_config
from edge_agent.core import _jit
from edge_agent.records import CoreState, Event, Quality, Sample
from edge_agent.site_rules import site_spec
from edge_agent.tasks import cancel_and_wait
from edge_agent.uplink import Command, Uplink
from edge_agent.uplink.payloads import Origin

log = structlog.get_logger(__name__)

STATE_SAVE_S = 60.0
PROBATION_MIN_S, PROBATION_MAX_S = 5.0, 60.0  # a new config's time to show it polls
_JUDGED = (Quality.GOOD, Quality.OUT_OF_RANGE)
# Telemetry was dropped undelivered to keep the quota; ends once the file is back
# under FULL_CLEARS of it.
BUFFER_FULL = "agent:buffer:full"
FULL_CLEARS = 0.9
BUFFER_CORRUPT = "agent:buffer:corrupt"  # the file was moved aside at start
BUFFER_WRITE = "agent:buffer:write_failed"  # commits fail: disk full, I/O error, locked
JIT_UNAVAILABLE = "agent:jit:unavailable"  # the kernels run as plain Python (core/_jit.py)
PENDING_MAX = 100_000  # samples held in memory while nothing can be written (~10 MB)
CLOCK_STEP_S = 2.0  # a wall clock step larger than this is logged (and maybe corrected)
# Faults of one sensor, raised while its samples have one of these qualities
# (their keys come from site_rules.QUALITY_FAULTS).
CHANNEL_FAULTS = {"sensor_fault": (Quality.DEVICE_FAULT, Quality.BAD),
                  "out_of_range": (Quality.OUT_OF_RANGE,)}


@dataclass(eq=False)
class _Checkpoint:
    """Put in the record queue: store everything before it, with the core's state.

    ``done`` is set once that is committed; ``final`` ends the record task.
    """

    done: asyncio.Event
    final: bool = False
    snapshot: bool = True  # False: a watchdog tick, which only proves the commit path


class Agent:
    """One gateway's agent, built from a validated config; ``run`` until stopped."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        site = loaded.site
        self._lock = runlock.hold(site.buffer.path)  # released when the process ends
        retention = site.buffer.retention_days
        self.buffer = Buffer(site.buffer.path, site.buffer.max_bytes,
                             retention_s=retention * 86400 if retention else None)
        self.spaces = sessions.Spaces(self.buffer.state("entry"))
        self.book = lifecycle.AlarmBook.restored(self.buffer.state("lifecycle"),
                                                 site.alarm_management)
        self._pending_states: dict[str, dict[str, Any]] = {}  # saved with the next commit
        self._configure(loaded)
        self._state_due = 0.0  # monotonic time of the next core-state save
        self.started = time.time()
        # Written by the event loop only; the uplink thread reads them for `health`.
        self.counters = {"samples": 0, "events": 0, "cycles": 0, "evicted": 0, "expired": 0,
                         "alarms_active": 0, "faults_active": 0}
        self.buses: list[BusPoller] = []
        self._bus_tasks: list[asyncio.Task[None]] = []
        self._answered: dict[str, bool] = {}  # device -> its last poll had an answer
        self._latest: dict[str, Sample] = {}  # channel -> its newest sample, for `status`
        self.trend = trend.Trend()
        self._pending_trend: list[trend.Bucket] = []
        self._acked: set[str] = set()  # ids of active faults someone acknowledged
        self.alarm_figures = AlarmFigures()
        self._lag, self._cpu = health.LoopLag(), health.CpuMeter()
        # The wall clock against the kernels' clock: its steps, and whether it was
        # synchronised before one (then this run's times are corrected by the step).
        self._clock, self._offset_s, self._synced = AgentClock(), 0.0, synchronised()
        # False from a start on an unsynchronised clock until the first commit after it
        # is synchronised (which stores the correction of a step): the uplink flags what
        # it publishes until then.
        self.times_trusted = self._synced is not False
        self._trust_at_commit = False
        self._shifts: list[tuple[int, int, int]] = []  # (first seq, last seq, ms) to apply
        self._run_first_seq = self.buffer.last_seq() + 1
        self._answer_changed = asyncio.Event()
        self.final_depth: dict[str, int] | None = None  # rows left in the buffer at stop
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._commands: asyncio.Queue[Command | _LocalCommand] = asyncio.Queue(
            commands.QUEUE_MAX)
        self._rate = commands.RateLimit()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handlers: dict[str, commands.Handler] = {
            "ping": self._ping, "ack-alarm": self._ack_alarm, "read-now": self._read_now,
            "get-config": self._get_config, "set-config": self._set_config,
            "buffer-stats": self._buffer_stats, "status": self._status,
            "alarms": self._alarms, "entry-test": self._entry_test,
            "entry-start": self._entry_start, "entry-end": self._entry_end,
            "entry-status": self._entry_status, "reset-alarm": self._reset_alarm,
            "handle-alarm": self._handle_alarm, "shelve-alarm": self._shelve_alarm,
            "unshelve-alarm": self._unshelve_alarm, "out-of-service": self._out_of_service,
            "return-to-service": self._return_to_service}
        # Judged on the event loop, committed on the writer thread; the record task
        # never touches them while a commit runs.
        self._pending = Outcome()
        self._pending_samples: list[Sample] = []
        self._stored = _Stored()
        self._pending_state: CoreState | None = None
        self._writer: ThreadPoolExecutor | None = None
        self.origin = Origin(site.site_id, site.gateway_id, self.buffer.epoch)
        self.uplink = Uplink(site.mqtt, buffer_path=str(site.buffer.path), health=self.health,
                             origin=self.origin, on_command=self._command_arrived,
                             times_trusted=lambda: self.times_trusted,
                             birth={"version": __version__, "config_hash": loaded.hash,
                                    "started": int(self.started * 1000)})

    def _configure(self, loaded: LoadedConfig) -> None:
        """The parts made from the config: alarm engine and actions (buses: _start_buses).

        The engine takes its active alarms and state from the buffer, so a restart
        and a new config go the same way.
        """
        site = loaded.site
        self.loaded = loaded
        self._config_text = loaded.path.read_text(encoding="utf-8")
        # Faults of the agent itself that a restart ends.
        self._task_keys = {_task_key("record"), _task_key("commands"), BUFFER_CORRUPT,
                           BUFFER_WRITE} | {
            _task_key(f"bus:{b.name}") for b in site.buses}
        spec = site_spec(loaded, [f"{d.name}:{f}" for d in site.devices for f in FAULTS]
                         + sorted(self._task_keys) + [BUFFER_FULL, JIT_UNAVAILABLE]
                         + [fault_key(a.name) for a in site.actions])
        self.spaces.configure(site, loaded.profiles)
        self.book.rules = site.alarm_management
        self.engine = AlarmEngine(spec, restored=self.buffer.active_alarms())
        self.engine.restore(self.buffer.core_state())
        self.book.adopt(self.engine.active, self.engine.channels_of, self.engine.level_of)
        self.actions = Actions(site.actions, self._write_output, self._action_fault,
                               active=self.engine.active, escalations={
                                   e.key: e.escalation for e in self.book.episodes.values()},
                               evacuating={f"space:{name}": s.session_id
                                           for name, s in self.spaces.open.items()
                                           if s.state == "evacuate"})
        self.actions.suppress(self._suppressed())
        # Read by the uplink thread (health): replaced whole, never changed in place.
        self._protection = self.book.report()
        keys = [*self.engine.all_keys(), *(f"space:{s.name}" for s in site.spaces)]
        for action in site.actions:
            if not any(fnmatch.fnmatchcase(k, p) for k in keys for p in action.when):
                log.warning("action_matches_no_alarm", action=action.name, when=action.when)

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
            "cpu_percent": self._cpu.percent(),
            **self._lag.report(),
            "numba_cache": health.numba_cache(),
            "jit": {"compiled": _jit.UNAVAILABLE is None, "error": _jit.UNAVAILABLE,
                    "supported": _jit.SUPPORTED},
            "clock": {"synchronised": synchronised(),
                      "wall_step_s": round(self._offset_s, 3)},
            "buses": {b.name: b.stats.report() for b in self.buses},
            "actions": self.actions.state(),
            "protection": self._protection,
            # A copy: the event loop changes the dict while this thread reads it.
            "alarm_figures": self.alarm_figures.report(_now_ms(), self.engine.active.copy()),
        }

    # --- running ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, drain_timeout_s: float = 5.0) -> None:
        site = self.loaded.site
        log.info("agent_starting", version=__version__, gateway=site.gateway_id,
                 site=site.site_id, config=str(self.loaded.path), config_hash=self.loaded.hash)
        if clock.SHIFT_FILE is not None:
            log.warning("clock_shifted_for_rehearsal", file=clock.SHIFT_FILE,
                        shift_s=clock.shift_s(), note="EDGE_AGENT_CLOCK_SHIFT_FILE is set: "
                        "times are not real; unset it in service")
        if self.loaded.notes:
            log.warning("config_format_upgraded", changes=list(self.loaded.notes),
                        next_step=f"edge-agent config migrate {self.loaded.path}")
        self._loop = asyncio.get_running_loop()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="buffer-writer")
        self._queue.put_nowait(self._after_restart())
        self._start_buses()
        before = memory.resident_bytes()
        advised = memory.release_compiler_pages()  # the kernels are loaded by now
        log.info("compiler_pages_released", advised_mb=advised >> 20,
                 rss_mb_before=before >> 20, rss_mb_after=memory.resident_bytes() >> 20)
        self.uplink.start()
        record = asyncio.create_task(self._supervise("record", self._record), name="record")
        helpers = [asyncio.create_task(self._supervise("commands", self._serve_commands),
                                       name="commands"),
                   asyncio.create_task(self._lag.run(), name="loop-lag")]
        if (every_s := watchdog.interval_s()) is not None:
            helpers.append(asyncio.create_task(watchdog.feed(self._tick, every_s),
                                               name="watchdog"))
        sock = control.socket_path(site.buffer.path)
        try:
            local: asyncio.Server | None = await control.serve(sock, self._local_command)
        except OSError as exc:  # the CLI's window on the agent; never a reason to stop it
            log.error("control_socket_failed", path=str(sock), error=str(exc))
            local = None
        view = await self._start_web()
        watchdog.notify("READY=1")
        await stop.wait()
        log.info("agent_stopping")
        watchdog.notify("STOPPING=1")
        if view is not None:
            await view.close()
        if local is not None:
            local.close()
            sock.unlink(missing_ok=True)
        await cancel_and_wait(helpers)
        await self.actions.stop()  # the healthy relays drop while the buses still run
        await self._stop_buses()
        await self.actions.close()
        self._queue.put_nowait(_Checkpoint(asyncio.Event(), final=True))
        await record  # it stores what was polled, then ends
        self._writer.shutdown()
        await asyncio.to_thread(self.uplink.stop, drain_timeout_s)
        self.final_depth = self.buffer.depth()
        self.buffer.close()
        self._lock.close()
        log.info("agent_stopped", samples_polled=self.counters["samples"],
                 events=self.counters["events"], buffer_depth=self.final_depth,
                 delivered=self.uplink.delivered)

    async def _start_web(self) -> Any:
        """The local web view, when the config turns it on (a WebView, or None)."""
        settings = self.loaded.site.web
        if not settings.enabled:
            return None
        from edge_agent.web.server import WebView  # aiohttp is imported only when it is on

        view = WebView(settings, self.loaded.site.language, self._web_snapshot, self._web_trend,
                       self._local_command)
        try:
            await view.start()
        except OSError as exc:  # a convenience, never a reason to stop protecting people
            log.error("web_view_failed", bind=settings.bind, port=settings.port, error=str(exc))
            await view.close()
            return None
        return view

    def _start_buses(self) -> None:
        site = self.loaded.site
        self.buses = []
        for bus in site.buses:
            devices = [(d, self.loaded.profiles.get(d.profile)) for d in site.devices
                       if d.bus == bus.name]
            if devices:
                self.buses.append(bus_poller(bus, devices, self._queue.put_nowait))
        for poller in self.buses:
            for device, profile in poller.devices:
                _log_plan(poller, device, profile)
        self._bus_tasks = [asyncio.create_task(self._supervise(f"bus:{p.name}", p.run),
                                               name=f"bus:{p.name}") for p in self.buses]
        self.actions.assert_all()  # a relay module may have been switched by hand, or reset

    async def _stop_buses(self) -> None:
        await cancel_and_wait(self._bus_tasks)
        self._bus_tasks = []

    async def _tick(self, timeout_s: float) -> bool:
        """True once a tick put in the record queue now has come back committed."""
        tick = _Checkpoint(asyncio.Event(), snapshot=False)
        self._queue.put_nowait(tick)
        try:
            await asyncio.wait_for(tick.done.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _checkpoint(self, timeout_s: float = 30.0) -> None:
        """Wait until everything queued so far is committed, with the core's state."""
        checkpoint = _Checkpoint(asyncio.Event())
        self._queue.put_nowait(checkpoint)
        try:
            await asyncio.wait_for(checkpoint.done.wait(), timeout_s)
        except TimeoutError:
            raise CommandError("failed", f"the buffer could not be written within {timeout_s:g}"
                               " s; see the agent's log (buffer_write_failed)") from None

    def _after_restart(self) -> Outcome:
        """End what the last run left active that a restart resolves by itself; say
        loudly if the kernels could not be compiled on this machine.
        """
        now = _now_ms()
        outcome = self.engine.withdraw_orphans(now)
        if _jit.UNAVAILABLE is not None:
            log.error("jit_unavailable", error=_jit.UNAVAILABLE, supported=_jit.SUPPORTED,
                      running="the alarm kernels as plain Python: the same rules, far slower")
        if (_jit.UNAVAILABLE is not None) != (JIT_UNAVAILABLE in self.engine.active):
            outcome.extend(self.engine.fault(JIT_UNAVAILABLE, _jit.UNAVAILABLE is not None, now, {
                "error": _jit.UNAVAILABLE, "supported": _jit.SUPPORTED,
                "running": "plain-Python kernels" if _jit.UNAVAILABLE else "compiled kernels"}))
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
        checkpoints: list[_Checkpoint] = []
        while True:
            items = [await self._queue.get(), *self._take_queued()]
            for item in items:
                if isinstance(item, PollResult):
                    item = self._judge(item)
                if isinstance(item, Outcome):
                    item.events[:] = self.book.marked(item.events, self.engine.channels_of)
                    item.events += self.book.follow(item.events, self.engine.channels_of,
                                                    self.engine.level_of)
                    for event in item.events:
                        _log_event(event)
                        self._follow_ack(event)
                    self.alarm_figures.follow(item.events)
                    self.actions.follow(item.events)  # before the commit: relays first
                    self._pending.extend(item)
                elif isinstance(item, _Checkpoint):
                    checkpoints.append(item)
            stopping = any(c.final for c in checkpoints)
            if any(c.snapshot for c in checkpoints) or time.monotonic() >= self._state_due:
                # Exposure windows and timers go to disk once a minute and at the stop.
                self._pending_state = self.engine.snapshot()
                self._state_due = time.monotonic() + STATE_SAVE_S
            if self.spaces.dirty:
                self._pending_states["entry"] = self.spaces.saved()
            if self.book.dirty:
                self._pending_states["lifecycle"] = self.book.saved()
                self.actions.suppress(self._suppressed())
                self._protection = self.book.report()
            self._pending_trend += self.trend.take_closed(everything=stopping)
            try:
                await loop.run_in_executor(self._writer, self._commit_pending)
                self._counted()
                if failures:
                    log.info("buffer_write_recovered", after_attempts=failures)
                    self._queue.put_nowait(self.engine.fault(BUFFER_WRITE, False, _now_ms(), {
                        "after_attempts": failures}))
                delay, failures = 0.1, 0
            except sqlite3.Error as exc:
                failures += 1
                log.error("buffer_write_failed", error=str(exc), attempt=failures,
                          waiting_samples=len(self._pending_samples))
                if failures == 1:  # stored with the rest once writing works again
                    self._pending.extend(self.engine.fault(BUFFER_WRITE, True, _now_ms(), {
                        "error": str(exc)}))
                self._bound_pending()
                if stopping and failures >= 3:
                    log.error("stopped_with_unstored_samples", samples=len(self._pending_samples),
                              events=len(self._pending.events))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            for checkpoint in checkpoints:
                checkpoint.done.set()
            checkpoints = []
            if stopping:
                return

    def _follow_wall_clock(self, offset_s: float) -> None:
        """``offset_s``: this poll's wall time minus the kernels' clock. When it jumps,
        the wall clock was stepped between the previous poll and this one. If the
        clock was not synchronised before (a Pi without RTC, before NTP), the times of
        this run's rows still on the gateway are corrected by the step; a step of a
        synchronised clock is only reported.
        """
        step = offset_s - self._offset_s
        if abs(step) <= CLOCK_STEP_S:
            self._offset_s += step / 100  # follow slow drift, not steps
        else:
            self._offset_s = offset_s
            corrected = self._synced is False
            if corrected:
                delta_ms = round(step * 1000)
                self._pending_samples = [replace(s, ts_ms=s.ts_ms + delta_ms)
                                         for s in self._pending_samples]
                self._pending.events[:] = [replace(e, ts_ms=e.ts_ms + delta_ms)
                                           for e in self._pending.events]
                self._shifts.append((self._run_first_seq, self.buffer.last_seq(), delta_ms))
            log.warning("wall_clock_stepped", by_s=round(step, 3), times_corrected=corrected,
                        note="alarm windows run on the monotonic clock and are not affected")
        self._synced = synchronised()  # as it was before the next poll
        if self._synced and not self.times_trusted:
            self._trust_at_commit = True

    def _bound_pending(self) -> None:
        """While nothing can be written (disk full, a locked file), keep the newest
        PENDING_MAX samples in memory and drop the oldest, counted as evicted; events
        are all kept. Alarms are judged and actions driven all the while.
        """
        excess = len(self._pending_samples) - PENDING_MAX
        if excess > 0:
            del self._pending_samples[:excess]
            self.counters["evicted"] += excess
            log.warning("pending_samples_dropped", samples=excess, kept=PENDING_MAX)

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
        self._follow_wall_clock(ts_ms / 1000 - self._clock.at(result.mono_s))
        outcome = self.engine.judge(
            {s.channel: s.value if s.quality in _JUDGED else math.nan for s in result.samples},
            ts_ms, self._clock.at(result.mono_s))
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
        outcome.events += self.book.latched(self.engine.latched(), ts_ms)
        outcome.events += self.book.due(ts_ms)
        self._pending_samples += result.samples
        self._latest.update((s.channel, s) for s in result.samples)
        levels = self._levels([s.channel for s in result.samples])
        self.trend.follow(result.samples, {c: lv for c, (lv, cls) in levels.items()
                                           if cls == "alarm"})
        if self.spaces.open:
            alarms = {k: self.engine.channels_of(k) for k, a in self.engine.active.items()
                      if a.cls == "alarm"}
            outcome.events += self.spaces.watch(result.device, ts_ms, self._latest, alarms)
        answered = result.fault is None and not all(s.quality is Quality.STALE
                                                    for s in result.samples)
        if self._answered.get(result.device) != answered:
            self._answered[result.device] = answered
            self._answer_changed.set()
        return outcome

    def _commit_pending(self) -> None:
        """On the writer thread: store everything judged so far in one transaction."""
        pending, samples, state = self._pending, self._pending_samples, self._pending_state
        trust = self._trust_at_commit  # read first: its step is in _shifts by then
        while self._shifts:
            first, last, delta_ms = self._shifts[0]
            moved = self.buffer.shift_times(first, last, delta_ms)
            log.info("times_corrected", rows=moved, by_ms=delta_ms, first_seq=first,
                     last_seq=last)
            self._shifts.pop(0)
        if trust:
            self.times_trusted = True
        states, buckets = self._pending_states, self._pending_trend
        if not samples and not pending.events and not state and not states and not buckets:
            return
        self.buffer.commit_cycle(samples, pending.events, pending.raised, pending.ended,
                                 core_state=state, states=states, trend=buckets,
                                 trend_after_ms=_now_ms() - trend.KEEP_MS)
        self._pending, self._pending_samples, self._pending_state = Outcome(), [], None
        self._pending_states, self._pending_trend = {}, []
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

    # --- local actions -------------------------------------------------------------

    async def _write_output(self, device: str, output: str, on: bool) -> None:
        poller = next(p for p in self.buses if any(d.name == device for d, _ in p.devices))
        await poller.write_output(device, output, on)

    def _action_fault(self, action: str, failed: bool, error: str) -> None:
        self._queue.put_nowait(self.engine.fault(fault_key(action), failed, _now_ms(),
                                                 {"action": action, "error": error}))

    # --- commands from the platform -------------------------------------------------

    def _command_arrived(self, command: Command) -> None:
        """In the uplink's thread: queue the command for the event loop, or refuse it."""
        refusal = None
        if not self._rate.take():
            refusal = CommandError("rate_limited", f"more than {commands.RATE_PER_S:g} commands "
                                   "a second; try again later")
        elif self._loop is None:
            refusal = CommandError("busy", "the agent is starting; try again")
        else:
            try:
                self._loop.call_soon_threadsafe(self._enqueue_command, command)
                return
            except RuntimeError:  # the loop has closed: the agent is stopping
                refusal = CommandError("busy", "the agent is stopping")
        self._reply(command, commands.failure(command.name, None, refusal))

    def _enqueue_command(self, command: Command) -> None:
        try:
            self._commands.put_nowait(command)
        except asyncio.QueueFull:
            self._reply(command, commands.failure(command.name, None, CommandError(
                "busy", f"{commands.QUEUE_MAX} commands are waiting; try again later")))

    async def _serve_commands(self) -> None:
        """One command at a time, in order of arrival."""
        while True:
            command = await self._commands.get()
            reply = await commands.answer(command.name, command.payload, self._handlers)
            log.info("command", name=command.name, id=reply["id"], ok=reply["ok"],
                     error=reply.get("error", {}).get("code"))
            self._reply(command, reply)

    def _reply(self, command: Command | _LocalCommand, body: dict[str, Any]) -> None:
        command.reply(self.origin.envelope(ts=_now_ms(), **body))

    def _follow_ack(self, event: Event) -> None:
        if event.transition == "acknowledged":
            self._acked.add(event.alarm_id)
        elif event.transition in ("raised", *ENDS):
            self._acked.discard(event.alarm_id)

    async def _local_command(self, name: str, payload: bytes) -> dict[str, Any]:
        """A command from the local socket: what only reads is answered at once, the rest
        waits its turn with the platform's commands (one code path for both).
        """
        if name in ("status", "alarms", "entry-status"):
            return await commands.answer(name, payload, self._handlers)
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        try:
            self._commands.put_nowait(_LocalCommand(name, payload, done))
        except asyncio.QueueFull:
            return commands.failure(name, None, CommandError("busy", "commands are waiting; "
                                                             "try again"))
        return await done

    def _levels(self, channels: Iterable[str]) -> dict[str, tuple[int, str]]:
        """Channel -> (level, class) of the worst active alarm, fault or anomaly on it or
        on its device (level 0 for faults and anomalies).
        """
        levels: dict[str, tuple[int, str]] = {}
        for key, alarm in self.engine.active.items():
            subject = key.split(":", 1)[0]  # a channel, or a device for its faults
            level = self.engine.level_of(key) if alarm.cls == "alarm" else 0
            for channel in channels:
                if (channel == subject or channel.startswith(subject + ".")) and (
                        level >= levels.get(channel, (-1, ""))[0]):
                    levels[channel] = (level, alarm.cls)
        return levels

    async def _status(self, _args: commands.Args) -> dict[str, Any]:
        """Everything `edge-agent status` shows, read from memory and the buffer."""
        levels = self._levels(self._latest)
        figures = await asyncio.to_thread(buffer.stats, self.buffer.path)
        oldest = [t for t in (figures["events"]["oldest_ms"], figures["samples"]["oldest_ms"])
                  if t is not None]
        site = self.loaded.site
        return {
            "gateway": site.gateway_id, "site": site.site_id, "version": __version__,
            "config": {"path": str(self.loaded.path), "hash": self.loaded.hash},
            "now_ms": _now_ms(), "health": self.health(),
            "channels": [{"ch": s.channel, "v": s.value, "u": s.unit, "q": s.quality.label,
                          "ts": s.ts_ms, "alarm": levels.get(s.channel, (None, None))[1],
                          "level": levels.get(s.channel, (None, None))[0]}
                         for s in self._latest.values()],
            "devices": {d: {"answering": ok} for d, ok in self._answered.items()},
            "uplink": self.uplink.state(),
            "buffer": {"events": figures["events"]["rows"],
                       "samples": figures["samples"]["rows"],
                       "oldest_ms": min(oldest) if oldest else None,
                       "evicted": figures["evicted"], "expired": figures["expired"]},
            "alarms": (await self._alarms(_args))["active"],
        }

    async def _alarms(self, _args: commands.Args) -> dict[str, Any]:
        """Open alarm episodes with their lifecycle state, then faults and anomalies."""
        open_ = [{"key": e.key, "id": e.alarm_id, "class": "alarm", "raised_ms": e.raised_ms,
                  "level": e.level, "state": e.state, "escalation": e.escalation,
                  "suppressed": self.book.suppressed(e), "acknowledged": e.acked,
                  "handled": e.handled}
                 for e in sorted(self.book.episodes.values(), key=lambda e: e.raised_ms)]
        others = {k: a for k, a in self.engine.active.items() if a.cls != "alarm"}
        open_ += [{"key": k, "id": a.alarm_id, "class": a.cls, "raised_ms": a.raised_ms,
                   "level": None, "state": "acknowledged" if a.alarm_id in self._acked
                   else "unacknowledged"}
                  for k, a in sorted(others.items(), key=lambda i: i[1].raised_ms)]
        open_ += [{"key": k, "id": i, "class": c, "raised_ms": None, "level": None,
                   "state": "ended, unacknowledged"}
                  for k, (i, c) in self.actions.awaiting_ack().items() if c != "alarm"]
        return {"active": open_, **self.book.report()}

    async def _ping(self, _args: commands.Args) -> dict[str, Any]:
        return {"version": __version__, "config_hash": self.loaded.hash,
                "uptime_s": round(time.time() - self.started, 1)}

    async def _ack_alarm(self, args: commands.AckAlarm) -> dict[str, Any]:
        """Acknowledge an open alarm episode, or an active fault or anomaly (or one that
        is over but still holds an output).
        """
        if (episode := self.book.find(args.key, args.alarm)) is not None:
            events = self._lifecycle(self.book.ack, episode, args.by, args.note, _now_ms())
            return await self._commit_events(events, key=episode.key, alarm=episode.alarm_id,
                                             by=args.by, state=episode.state)
        open_ = {k: (a.alarm_id, a.cls) for k, a in self.engine.active.items()}
        open_.update(self.actions.awaiting_ack())
        key = args.key or next((k for k, (i, _) in open_.items() if i == args.alarm), None)
        if key not in open_:
            raise CommandError("not_found", f"no alarm {args.key or args.alarm!r} to "
                               "acknowledge", open=sorted(open_)[:50])
        alarm_id, cls = open_[key]
        event = Event(_now_ms(), cls, "acknowledged", alarm_id, key,  # type: ignore[arg-type]
                      {"by": args.by, "note": args.note})
        return await self._commit_events([event], key=key, alarm=alarm_id, by=args.by)

    async def _reset_alarm(self, args: commands.AlarmRef) -> dict[str, Any]:
        """Release a latched alarm: refused while its condition holds or before the ack."""
        episode = self._episode(args)
        if (refusal := self.book.reset_refusal(episode)) is not None:
            log.warning("reset_refused", key=episode.key, by=args.by, reason=refusal)
            raise CommandError("refused", refusal)
        events = self.engine.reset(episode.key, _now_ms(), args.by).events
        return await self._commit_events(events, key=episode.key, alarm=episode.alarm_id,
                                         by=args.by)

    async def _handle_alarm(self, args: commands.HandleAlarm) -> dict[str, Any]:
        """Record the cause and the action taken: the alarm closes once it is over."""
        episode = self._episode(args)
        events = self._lifecycle(self.book.handle, episode, args.by, args.cause, args.action,
                                 _now_ms())
        return await self._commit_events(events, key=episode.key, alarm=episode.alarm_id,
                                         by=args.by,
                                         closed=any(e.transition == "closed" for e in events))

    async def _shelve_alarm(self, args: commands.ShelveAlarm) -> dict[str, Any]:
        if args.key not in (keys := self.engine.alarm_keys()):
            raise CommandError("not_found", f"no alarm {args.key!r} to shelve (faults cannot "
                               "be shelved)", keys=keys[:100])
        events = self._lifecycle(self.book.shelve, args.key, self.engine.level_of(args.key),
                                 args.by, args.reason, args.minutes, _now_ms(),
                                 self.book.find(args.key, None))
        return await self._commit_events(events, key=args.key, by=args.by,
                                         until_ms=self.book.shelved[args.key].until_ms)

    async def _unshelve_alarm(self, args: commands.Unshelve) -> dict[str, Any]:
        if args.key not in self.book.shelved:
            raise CommandError("not_found", f"{args.key!r} is not shelved",
                               shelved=sorted(self.book.shelved))
        return await self._commit_events(self.book.unshelve(args.key, args.by, _now_ms()),
                                         key=args.key, by=args.by)

    async def _out_of_service(self, args: commands.OutOfService) -> dict[str, Any]:
        """Take a channel out of service for maintenance; never one that watches a space
        with people inside.
        """
        if args.channel not in self.engine.channels:
            raise CommandError("not_found", f"no channel {args.channel!r}",
                               channels=sorted(self.engine.channels)[:100])
        for name, session in self.spaces.open.items():
            if args.channel in {c.channel for c in self.spaces.channels[name]}:
                raise CommandError("refused", f"{args.channel} watches {name}, where entry "
                                   f"session {session.session_id[:8]} is open: end the entry "
                                   "first")
        events = self._lifecycle(self.book.take_out_of_service, args.channel, args.by,
                                 args.reason, args.minutes, _now_ms(), len(self.engine.channels))
        return await self._commit_events(
            events, channel=args.channel, by=args.by,
            until_ms=self.book.out_of_service[args.channel].until_ms)

    async def _return_to_service(self, args: commands.ReturnToService) -> dict[str, Any]:
        if args.channel not in self.book.out_of_service:
            raise CommandError("not_found", f"{args.channel!r} is not out of service",
                               out_of_service=sorted(self.book.out_of_service))
        events = self.book.return_to_service(args.channel, args.by, _now_ms())
        return await self._commit_events(events, channel=args.channel, by=args.by)

    def _episode(self, args: commands.AlarmRef) -> lifecycle.Episode:
        episode = self.book.find(args.key, args.alarm)
        if episode is None:
            raise CommandError("not_found", f"no open alarm {args.key or args.alarm!r}",
                               open=sorted({e.key for e in self.book.episodes.values()})[:50])
        return episode

    @staticmethod
    def _lifecycle(change: Callable[..., list[Event]], *args: Any) -> list[Event]:
        try:
            return change(*args)
        except lifecycle.Refused as exc:
            log.warning("alarm_command_refused", reason=str(exc))
            raise CommandError("refused", str(exc)) from None

    async def _commit_events(self, events: list[Event], **reply: Any) -> dict[str, Any]:
        """Queue the events; reply once they are stored."""
        self._queue.put_nowait(Outcome(events=events))
        await self._checkpoint()  # stored before the reply says so
        return reply

    def _suppressed(self) -> set[str]:
        """The alarm keys that drive no outputs now: shelved, or on a channel out of service."""
        return {k for k in self.engine.all_keys()
                if self.book.suppression(k, self.engine.channels_of(k))}

    async def _read_now(self, args: commands.ReadNow) -> dict[str, Any]:
        names = [args.device] if args.device else [d.name for d in self.loaded.site.devices]
        pollers = {d.name: p for p in self.buses for d, _ in p.devices}
        if unknown := [n for n in names if n not in pollers]:
            raise CommandError("not_found", f"no device {unknown[0]!r}", devices=sorted(pollers))
        results = await asyncio.gather(*(pollers[n].poll_now(n) for n in names))
        return {r.device: {"fault": r.fault, "error": r.error, "samples": [
            {"ch": s.channel, "ts": s.ts_ms, "v": s.value, "u": s.unit, "q": s.quality.label}
            for s in r.samples]} for r in results}

    async def _entry_test(self, args: commands.EntryTest) -> dict[str, Any]:
        """The pre-entry gas test of a space, on readings taken now; stored and published
        as an ``entry`` event before the reply gives the verdict.
        """
        space = self._space(args.space)
        pollers = {d.name: p for p in self.buses for d, _ in p.devices}
        names = list(dict.fromkeys(d.device for d in space.detectors))
        results = await asyncio.gather(*(pollers[n].poll_now(n) for n in names))
        latest = {s.channel: s for r in results for s in r.samples}
        faults = [k for k, a in self.engine.active.items() if a.cls == "fault"]
        held = entry.overdue(space, self.loaded.site, datetime.date.today()) | {
            c: f"out of service ({s.reason}) by {s.by}"
            for c, s in self.book.out_of_service.items()}
        test = entry.pre_entry_test(space, self.spaces.channels[space.name], latest, faults,
                                    _now_ms(), self.loaded.site.alarm_defaults.molar_volume_l,
                                    held)
        event = Event(test.ts_ms, "entry", "tested", uuid.uuid4().hex, f"space:{space.name}",
                      {**test.body(), "by": args.by})
        resumed = self.spaces.tested(space.name, event.alarm_id, test.ts_ms, test.passed)
        self._queue.put_nowait(Outcome(events=[event, *resumed]))
        await self._checkpoint()  # stored before the reply says so
        log.info("entry_tested", space=space.name, passed=test.passed, by=args.by)
        return {"test": event.alarm_id, **test.body(), "by": args.by}

    def _space(self, name: str) -> Space:
        if name not in self.spaces.spaces:
            raise CommandError("not_found", f"no space {name!r}", spaces=list(self.spaces.spaces))
        return self.spaces.spaces[name]

    async def _entry_start(self, args: commands.EntrySession) -> dict[str, Any]:
        """Start entry into a space: refused without a recent passed test."""
        return await self._entry_change(args, self.spaces.start)

    async def _entry_end(self, args: commands.EntrySession) -> dict[str, Any]:
        return await self._entry_change(args, self.spaces.end)

    async def _entry_change(self, args: commands.EntrySession,
                            change: Callable[[str, str, int], Event]) -> dict[str, Any]:
        self._space(args.space)
        try:
            event = change(args.space, args.by, _now_ms())
        except sessions.EntryRefused as exc:
            raise CommandError("refused", str(exc)) from None
        self._queue.put_nowait(Outcome(events=[event]))
        await self._checkpoint()  # stored before the reply says so
        return {"session": event.alarm_id, "transition": event.transition, **event.details}

    async def _entry_status(self, _args: commands.Args) -> dict[str, Any]:
        return {"spaces": [{"space": name, "last_test": self.spaces.tests.get(name),
                            "session": (s.saved() if (s := self.spaces.open.get(name))
                                        else None)}
                           for name in self.spaces.spaces]}

    async def _web_snapshot(self) -> dict[str, Any]:
        """What the web view shows: the status, the entry sessions and the site's layout
        (each confined space with its detectors, then the other devices).
        """
        site = self.loaded.site
        in_spaces = {d.device for s in site.spaces for d in s.detectors}
        return {**await self._status(commands.Args()),
                "entry": (await self._entry_status(commands.Args()))["spaces"],
                "groups": [{"space": s.name, "devices": [d.device for d in s.detectors]}
                           for s in site.spaces] + [
                    {"device": d.name, "devices": [d.name]} for d in site.devices
                    if d.name not in in_spaces]}

    async def _web_trend(self, channel: str) -> dict[str, Any] | None:
        """A channel's last hour from the buffer's trend, its limits, and the bucket
        still filling.
        """
        if (latest := self._latest.get(channel)) is None:
            return None
        now = _now_ms()
        rows = await asyncio.to_thread(buffer.trend, self.buffer.path, channel,
                                       now - trend.KEEP_MS)
        if (filling := self.trend.filling(channel)) is not None:
            rows.append(filling[2:])
        return {"channel": channel, "unit": latest.unit, "now_ms": now,
                "bucket_ms": trend.BUCKET_MS, "points": rows,
                "limits": [{"level": x.level, "direction": x.direction, "setpoint": x.setpoint}
                           for x in self.engine.limits
                           if x.channel == channel and x.direction in ("above", "below")]}

    async def _get_config(self, _args: commands.Args) -> dict[str, Any]:
        return {"config_hash": self.loaded.hash, "toml": self._config_text}

    async def _buffer_stats(self, _args: commands.Args) -> dict[str, Any]:
        figures = await asyncio.to_thread(buffer.stats, self.buffer.path)
        return {**figures, "delivered": dict(self.uplink.delivered)}

    async def _set_config(self, args: commands.SetConfig) -> dict[str, Any]:
        """Validate, switch, watch the devices, keep the new config or go back; say which."""
        old = self.loaded
        pending = old.path.with_name(f".{old.path.name}.pending")
        try:
            pending.write_text(args.toml, encoding="utf-8")  # only read, to validate it
        except OSError as exc:
            raise CommandError("failed", f"cannot write {pending}: {exc.strerror}; the agent "
                               "needs write access to its config's directory") from None
        try:
            new = self._checked(pending)
            if new.hash == old.hash:  # PEER_LESSONS 2: the same config changes nothing
                return {"applied": False, "config_hash": old.hash,
                        "message": "the running config already is this one"}
            answering = {d for d, ok in self._answered.items() if ok}
            log.info("config_switching", previous_hash=old.hash, config_hash=new.hash)
            await self._switch(new)
            silent = await self._probation(new)
            if lost := sorted(silent & answering):
                log.error("config_rolled_back", config_hash=new.hash, devices_lost=lost)
                await self._switch(old)
                raise CommandError(
                    "rolled_back", f"with the new config these devices stopped answering: "
                    f"{', '.join(lost)}; the previous config runs again", devices_lost=lost,
                    config_hash=old.hash, rejected_hash=new.hash)
            backup = replace_config(old.path, args.toml)  # kept across a restart from now on
            self.loaded = LoadedConfig(old.path, new.site, new.profiles)
            log.info("config_applied", config_hash=new.hash, not_answering=sorted(silent))
            return {"applied": True, "config_hash": new.hash, "previous_hash": old.hash,
                    "not_answering": sorted(silent), "previous_saved_as": str(backup)}
        finally:
            pending.unlink(missing_ok=True)

    def _checked(self, pending: Path) -> LoadedConfig:
        """The pushed config, validated like a file, and within what a push may change."""
        try:
            new = load_config(pending)
        except FileError as exc:
            raise CommandError("bad_request", "invalid config: " + "; ".join(
                p.split(": ", 1)[-1] for p in exc.problems), problems=exc.problems) from None
        # What identifies the gateway and keeps it reachable is changed on site, by a
        # technician: a wrong push could otherwise cut the gateway off for good. So is
        # the local web view: a push must not open it to the plant network or swap its PIN.
        for key in ("gateway_id", "site_id", "mqtt", "buffer", "web"):
            if getattr(new.site, key) != getattr(self.loaded.site, key):
                raise CommandError("refused", f"{key} cannot be changed remotely; change it "
                                   "on the gateway itself")
        return new

    async def _switch(self, loaded: LoadedConfig) -> None:
        """Stop the buses, store everything, rebuild engine and actions, start the buses."""
        await self._stop_buses()
        await self.actions.close()
        await self._checkpoint()
        self._configure(loaded)
        self._answered.clear()
        self._queue.put_nowait(self.engine.withdraw_orphans(_now_ms()))
        self._start_buses()
        self.uplink.birth_changed(config_hash=loaded.hash)

    async def _probation(self, loaded: LoadedConfig) -> set[str]:
        """Wait until every device has answered once, or the probation ends; the silent."""
        devices = loaded.site.devices
        longest = max(d.poll_interval_s for d in devices)
        deadline = time.monotonic() + min(PROBATION_MAX_S, max(PROBATION_MIN_S, 3 * longest))
        names = {d.name for d in devices}
        while (silent := {n for n in names if not self._answered.get(n)}) and (
                left := deadline - time.monotonic()) > 0:
            self._answer_changed.clear()
            try:
                await asyncio.wait_for(self._answer_changed.wait(), left)
            except TimeoutError:
                break
        return silent


@dataclass(frozen=True)
class _LocalCommand:
    """A command from the local socket, answered through a future."""

    name: str
    payload: bytes
    done: asyncio.Future[dict[str, Any]]

    def reply(self, document: dict[str, Any]) -> None:
        if not self.done.done():
            self.done.set_result(document)


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
    return clock.now_ms()


def run(loaded: LoadedConfig, early_stop: threading.Event | None = None) -> None:
    """Run the agent in this process until SIGTERM or SIGINT (or ``early_stop``, a
    SIGTERM that came while the process was starting).
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if early_stop is not None and early_stop.is_set():
            stop.set()
        await Agent(loaded).run(stop)

    asyncio.run(main())
