"""One poller per bus: one transaction at a time, each device on its own interval,
a failing device isolated from the others.

A device that does not answer keeps its normal interval until it has failed
``comm_loss_after`` polls in a row; then it is comm-lost (a fault) and is retried
with exponential backoff up to ``backoff_max_s``, so a dead unit costs the bus
less and less time (PEER_LESSONS 5, 7). It comes back on its first answer.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from edge_agent import clock
from edge_agent.config import Device
from edge_agent.profiles import Profile
from edge_agent.records import Quality, Sample

log = structlog.get_logger(__name__)

# comm_lost: no answer for comm_loss_after polls; device_error: the device answered,
# but with a Modbus exception or an answer that cannot be used.
FAULTS = ("comm_lost", "device_error")


class NoAnswer(Exception):
    """Nothing usable came back in time: timeout, connection refused or lost.

    ``code`` is the Modbus exception code when a gateway said so (10, 11).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Refused(Exception):
    """The device answered, but with a Modbus exception (``code``) or a malformed answer."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BusStats:
    """What a bus has done since start; round trips of the last 1000 answers."""

    transactions: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    exceptions: int = 0
    round_trips: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    def report(self) -> dict[str, float | int]:
        trips = sorted(self.round_trips)
        failed = self.timeouts + self.exceptions
        return {"transactions": self.transactions, "timeouts": self.timeouts,
                "crc_errors": self.crc_errors, "exceptions": self.exceptions,
                "success_rate": round(1 - failed / self.transactions, 4)
                if self.transactions else None,
                "rtt_mean_ms": round(sum(trips) / len(trips) * 1000, 2) if trips else None,
                "rtt_p99_ms": round(trips[math.ceil(0.99 * len(trips)) - 1] * 1000, 2)
                if trips else None}


class Transport(Protocol):
    """How a bus reaches its devices; one transaction at a time."""

    stats: BusStats

    async def read(self, device: Device, profile: Profile) -> dict[str, float]:
        """Raw numbers of every value of the device; NoAnswer or Refused on failure."""

    async def write(self, device: Device, function: str, address: int, value: int) -> None:
        """Write one coil or holding register; NoAnswer or Refused on failure."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll of one device gave: a sample per channel, and the fault if any."""

    device: str
    samples: list[Sample]
    fault: str | None = None  # one of FAULTS
    error: str | None = None  # what went wrong, for the fault event and the log
    mono_s: float = field(default_factory=clock.monotonic)  # when, on a clock NTP cannot step


@dataclass
class _Device:
    device: Device
    profile: Profile
    next_due: float
    failures: int = 0
    backoff: int = 0  # doublings of the interval while comm-lost
    last: dict[str, float | None] = field(default_factory=dict)  # last value per channel
    heartbeat: float | None = None


class BusPoller:
    """Polls the devices of one bus through ``transport`` and hands each result on."""

    def __init__(self, name: str, transport: Transport, devices: list[tuple[Device, Profile]],
                 emit: Callable[[PollResult], None], *, comm_loss_after: int = 3,
                 backoff_max_s: float = 30.0, gap_s: float = 0.0) -> None:
        self.name = name
        self.transport = transport
        self.emit = emit
        self.comm_loss_after = comm_loss_after
        self.backoff_max_s = backoff_max_s
        self.gap_s = gap_s
        self.devices = devices
        now = time.monotonic()
        self._devices = [_Device(d, p, now) for d, p in devices]
        self._log = log.bind(bus=name)
        # One transaction at a time on the bus: polls, reads on demand and output
        # writes queue here in order of arrival (asyncio.Lock is first come, first served).
        self._turn = asyncio.Lock()

    @property
    def stats(self) -> BusStats:
        return self.transport.stats

    async def run(self) -> None:
        try:
            while True:
                entry = min(self._devices, key=lambda d: d.next_due)
                delay = entry.next_due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                async with self._turn:
                    result = await self.poll(entry)
                self.emit(result)
                entry.next_due = self._next_due(entry)
                if self.gap_s:
                    await asyncio.sleep(self.gap_s)  # devices that need quiet between requests
        finally:
            await self.transport.close()

    async def poll_now(self, device: str) -> PollResult:
        """Poll ``device`` at once, between two transactions of the schedule."""
        entry = self._entry(device)
        async with self._turn:
            result = await self.poll(entry)
        self.emit(result)
        return result

    async def write_output(self, device: str, output: str, on: bool) -> None:
        """Switch an output of the device's profile; NoAnswer or Refused on failure."""
        entry = self._entry(device)
        spec = next(o for o in entry.profile.outputs if o.name == output)
        async with self._turn:
            await self.transport.write(entry.device, spec.function, spec.address,
                                       spec.on if on else spec.off)

    def _entry(self, device: str) -> _Device:
        return next(e for e in self._devices if e.device.name == device)

    def _next_due(self, entry: _Device) -> float:
        interval = entry.device.poll_interval_s
        if entry.backoff:
            interval = min(interval * 2 ** entry.backoff, max(self.backoff_max_s, interval))
        # Keep the cadence; after a stall, restart it rather than burst.
        return max(entry.next_due + interval, time.monotonic())

    async def poll(self, entry: _Device) -> PollResult:
        device = entry.device
        try:
            raw = await self.transport.read(device, entry.profile)
        except NoAnswer as exc:
            return self._failed(entry, "comm_lost", str(exc))
        except Refused as exc:
            return self._failed(entry, "device_error", str(exc))
        if entry.failures >= self.comm_loss_after:
            self._log.info("device_recovered", device=device.name, after_failures=entry.failures)
        entry.failures = entry.backoff = 0
        ts_ms = clock.now_ms()
        stale = self._heartbeat_stalled(entry, raw)
        samples = []
        for name, (value, quality) in entry.profile.interpret(raw).items():
            point = entry.profile.point(name)
            if stale and quality is Quality.GOOD:
                quality = Quality.STALE
            entry.last[name] = value
            samples.append(Sample(f"{device.name}.{name}", ts_ms, value, point.unit, quality))
        return PollResult(device.name, samples)

    def _heartbeat_stalled(self, entry: _Device, raw: dict[str, float]) -> bool:
        """A device whose heartbeat did not move since the last poll sends old data."""
        name = entry.profile.heartbeat
        if name is None:
            return False
        stalled = entry.heartbeat is not None and raw[name] == entry.heartbeat
        entry.heartbeat = raw[name]
        return stalled

    def _failed(self, entry: _Device, fault: str, error: str) -> PollResult:
        device = entry.device
        entry.failures += 1
        lost = entry.failures >= self.comm_loss_after
        if entry.failures == 1:
            self._log.warning("poll_failed", device=device.name, error=error)
        if lost and fault == "comm_lost":
            if entry.failures == self.comm_loss_after:
                self._log.warning("device_comm_lost", device=device.name,
                                  failures=entry.failures, error=error)
            entry.backoff += 1
        ts_ms = clock.now_ms()
        samples = []
        for point in entry.profile.channels:
            last = entry.last.get(point.name)
            if fault == "device_error":
                samples.append(Sample(f"{device.name}.{point.name}", ts_ms, None, point.unit,
                                      Quality.BAD))
            elif lost:
                samples.append(Sample(f"{device.name}.{point.name}", ts_ms, None, point.unit,
                                      Quality.COMM_LOST))
            else:  # a missed poll, not yet comm-lost: the last value, marked stale
                samples.append(Sample(f"{device.name}.{point.name}", ts_ms, last, point.unit,
                                      Quality.STALE))
        # device_error is a fault at once (the device is there and refuses); comm_lost
        # only after comm_loss_after missed polls.
        reported = fault if fault == "device_error" or lost else None
        return PollResult(device.name, samples, reported, error)
