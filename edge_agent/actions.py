"""Local actions: relays driven by alarms, on the gateway itself, network or not.

An action holds its output on from the moment a matching alarm is raised (or, for
an escalation output, escalated that far) until every matching alarm has cleared
and, unless its rule says "cleared", been acknowledged by a person: a sounder must
not fall silent because a reading dipped under the setpoint for one poll. An action
on a space (``space:<name>``) holds its output from an evacuation until the entry
resumes after a new passed test, or ends. An alarm
that is shelved or whose channel is out of service holds no output
(edge_agent/lifecycle.py). A *healthy* output works the other way round: energised
while nothing it watches is active and nothing is shelved or out of service, and
dropped at a clean stop (a relay module with a communication watchdog drops it
when the agent dies, too). The outputs are written through the bus pollers, one
transaction at a time on each bus, ahead of the next poll.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from edge_agent.config import Action
from edge_agent.records import ActiveAlarm, Event
from edge_agent.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

ENDS = ("returned_to_normal", "withdrawn")
STARTS = ("raised", "realarmed", "evacuate")  # realarmed: unacknowledged again
ENTRY_ENDS = ("resumed", "ended", "expired")  # what ends an evacuation
RETRY_MAX_S = 30.0


def fault_key(action: str) -> str:
    return f"action:{action}:failed"


@dataclass
class _Hold:
    alarm_id: str
    cls: str
    cleared: bool = False
    acknowledged: bool = False


@dataclass
class _Output:
    spec: Action
    holds: dict[str, _Hold] = field(default_factory=dict)  # alarm key -> its state
    written: bool | None = None  # what the device was last told; None: not yet
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def matches(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.spec.when)

    def releases(self, hold: _Hold) -> bool:
        if self.spec.healthy:
            return hold.cleared
        if self.spec.release == "acknowledged" and hold.cls != "entry":
            return hold.acknowledged
        return hold.cleared and (hold.acknowledged or self.spec.release == "cleared"
                                 or hold.cls == "entry")

    def takes(self, event: Event) -> bool:
        """Whether the event starts a hold: a raise or an evacuation, or an escalation
        far enough.
        """
        if self.spec.escalation == 0:
            return event.transition in STARTS
        return (event.transition == "escalated"
                and event.details["escalation"] >= self.spec.escalation)

    def on(self, suppressed: set[str], stopping: bool) -> bool:
        if self.spec.healthy:  # energised while the gateway fully protects the site
            return not (stopping or self.holds or suppressed)
        return any(key not in suppressed for key in self.holds)


# write(device, output, on) raises on failure; report(action, failed, error) turns a
# failure or a recovery into a fault event.
Write = Callable[[str, str, bool], Awaitable[None]]
Report = Callable[[str, bool, str], None]


class Actions:
    """The site's actions; ``follow`` the alarm events, ``assert_all`` at start."""

    def __init__(self, specs: Iterable[Action], write: Write, report: Report,
                 active: Mapping[str, ActiveAlarm] | None = None,
                 escalations: Mapping[str, int] | None = None,
                 evacuating: Mapping[str, str] | None = None) -> None:
        self._outputs = [_Output(spec) for spec in specs]
        self._write = write
        self._report = report
        self._tasks: set[asyncio.Task[None]] = set()
        self._suppressed: set[str] = set()  # alarm keys shelved or out of service
        self._stopping = False
        escalations = escalations or {}
        for key, alarm in (active or {}).items():  # restored alarms hold as if just raised
            for output in self._outputs:
                if output.matches(key) and escalations.get(key, 0) >= output.spec.escalation:
                    output.holds[key] = _Hold(alarm.alarm_id, alarm.cls)
        for key, session_id in (evacuating or {}).items():  # space key -> its session
            for output in self._outputs:
                if output.matches(key) and output.spec.escalation == 0:
                    output.holds[key] = _Hold(session_id, "entry")

    def follow(self, events: Iterable[Event]) -> None:
        """Update the holds from alarm transitions; drive the outputs that change."""
        changed = set()
        for event in events:
            for i, output in enumerate(self._outputs):
                if not output.matches(event.key):
                    continue
                was = self._on(output)
                if output.takes(event) and (event.transition in STARTS
                                            or event.key not in output.holds):
                    output.holds[event.key] = _Hold(event.alarm_id, event.cls)
                elif (hold := output.holds.get(event.key)) is not None:
                    hold.cleared |= event.transition in (ENTRY_ENDS if hold.cls == "entry"
                                                         else ENDS)
                    hold.acknowledged |= event.transition == "acknowledged"
                    if output.releases(hold):
                        del output.holds[event.key]
                if self._on(output) != was:
                    changed.add(i)
        for i in changed:
            self._drive(self._outputs[i])

    def suppress(self, keys: set[str]) -> None:
        """From now on these alarm keys (shelved, out of service) hold no output."""
        was = [self._on(o) for o in self._outputs]
        self._suppressed = set(keys)
        for output, on in zip(self._outputs, was, strict=True):
            if self._on(output) != on:
                self._drive(output)

    def assert_all(self) -> None:
        """Tell every output its state, whatever it was told before (a start, a new config)."""
        for output in self._outputs:
            output.written = None
            self._drive(output)

    def state(self) -> dict[str, bool]:
        return {o.spec.name: self._on(o) for o in self._outputs}

    def awaiting_ack(self) -> dict[str, tuple[str, str]]:
        """Alarms over but unacknowledged that hold an output: key -> (alarm id, class)."""
        return {key: (hold.alarm_id, hold.cls) for o in self._outputs
                for key, hold in o.holds.items() if hold.cleared and not hold.acknowledged}

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Drop the healthy outputs (a stopping agent protects nobody), waiting at most
        ``timeout_s`` for the writes.
        """
        self._stopping = True
        tasks = [self._drive(o) for o in self._outputs if o.spec.healthy]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def _on(self, output: _Output) -> bool:
        return output.on(self._suppressed, self._stopping)

    def _drive(self, output: _Output) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._settle(output),
                                                      name=f"action:{output.spec.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _settle(self, output: _Output) -> None:
        """Write until the device holds the wanted state; retry with backoff on failure."""
        spec, delay, failed = output.spec, 0.5, False
        async with output.lock:  # one writer per output: the last wish wins, in order
            while output.written != (wanted := self._on(output)):
                try:
                    await self._write(spec.device, spec.output, wanted)
                except Exception as exc:  # every failure is a fault event, then a retry
                    if not failed:
                        log.error("action_failed", action=spec.name, device=spec.device,
                                  output=spec.output, on=wanted, error=str(exc))
                        self._report(spec.name, True, str(exc))
                        failed = True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                output.written = wanted
                log.info("action_switched", action=spec.name, on=wanted)
                if failed:
                    self._report(spec.name, False, "")
                    failed = False

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
