"""Confined-space entry sessions: the rules of GB 30871-2022 chapter 6 as a state
machine, on an injectable clock (every method takes ``now_ms``).

    start (a passed test at most test_valid_min old)
      -> active --(no monitoring for more than interruption_min)--> retest_required
      -> active --(an alarm on the space's channels)--------------> evacuate
      retest_required / evacuate --(a new passed test)------------> active
      any open state --(end)--> ended;  --(permit_h after start)--> expired

While active, a ``record`` is due every ``record_interval_h`` (§6.5: at least every
2 h). Each change is an ``entry`` event for the buffer (docs/site-workflows.md); the
session itself is a plain dict, so it can be stored and restored across restarts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from edge_agent.config import SiteConfig, Space
from edge_agent.entry import SpaceChannel, space_channels
from edge_agent.profiles import ProfileLibrary
from edge_agent.records import Event, Quality, Sample

State = Literal["active", "retest_required", "evacuate", "ended", "expired"]
OPEN: tuple[State, ...] = ("active", "retest_required", "evacuate")
MINUTE_MS, HOUR_MS = 60_000, 3_600_000


class EntryRefused(Exception):
    """Entry cannot start (or a session cannot change) now; the message says why."""


@dataclass(frozen=True)
class Rules:
    """The time rules, within GB 30871-2022's bounds (config checks them)."""

    test_valid_min: float = 30.0  # §6.3 a: test at most 30 min before entry
    interruption_min: float = 60.0  # §6.3 f: re-test after an interruption over 60 min
    record_interval_h: float = 2.0  # §6.5: a record at least every 2 h
    permit_h: float = 24.0  # §6.10: a permit is valid at most 24 h


@dataclass
class Session:
    space: str
    session_id: str
    started_ms: int
    by: str
    state: State = "active"
    next_record_ms: int = 0
    monitored_ms: int = 0  # the last time the space was seen with a fresh reading
    evacuated_for: list[str] = field(default_factory=list)

    def saved(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def restored(cls, saved: dict[str, Any]) -> Session:
        return cls(**saved)

    def _event(self, now_ms: int, transition: str, **details: Any) -> Event:
        return Event(now_ms, "entry", transition, self.session_id, f"space:{self.space}",
                     {"space": self.space, "state": self.state, "started_ms": self.started_ms,
                      **details})


def start(space: str, by: str, now_ms: int, last_test: dict[str, Any] | None,
          rules: Rules) -> tuple[Session, Event]:
    """A session on the strength of ``last_test`` (the space's last ``tested`` body,
    with its ``ts``); EntryRefused if there is none, it failed, or it is too old.
    """
    if last_test is None:
        raise EntryRefused(f"no pre-entry test of {space}; test first (edge-agent entry test)")
    if not last_test["passed"]:
        raise EntryRefused(f"the last test of {space} failed; ventilate and test again")
    age_min = (now_ms - last_test["ts"]) / MINUTE_MS
    if age_min > rules.test_valid_min:
        raise EntryRefused(f"the last passed test of {space} is {age_min:.0f} min old; entry "
                           f"must start within {rules.test_valid_min:g} min of it: test again")
    session = Session(space, uuid.uuid4().hex, now_ms, by,
                      next_record_ms=now_ms + round(rules.record_interval_h * HOUR_MS),
                      monitored_ms=now_ms)
    return session, session._event(now_ms, "started", by=by, test=last_test["id"])


def watch(session: Session, now_ms: int, monitored: bool, alarms: list[str],
          rules: Rules) -> list[Event]:
    """One look at the space: ``monitored`` when every channel has a fresh reading,
    ``alarms`` the keys of alarms active on its channels. The events of what changed.
    """
    if session.state not in OPEN:
        return []
    events = []
    if now_ms - session.started_ms >= rules.permit_h * HOUR_MS:
        session.state = "expired"
        return [session._event(now_ms, "expired", reason=f"the permit is valid for "
                               f"{rules.permit_h:g} h; a new one needs a new test")]
    gap_ms = now_ms - session.monitored_ms
    if monitored:
        session.monitored_ms = now_ms
    if alarms and session.state != "evacuate":
        session.state, session.evacuated_for = "evacuate", sorted(alarms)
        events.append(session._event(now_ms, "evacuate", alarms=sorted(alarms)))
    elif session.state == "active" and gap_ms > rules.interruption_min * MINUTE_MS:
        # Unwatched too long: readings lost, or the agent was down (the gap then shows
        # at its first look after the restart).
        session.state = "retest_required"
        events.append(session._event(now_ms, "retest_required", unmonitored_min=round(
            gap_ms / MINUTE_MS, 1)))
    if session.state == "active" and monitored and now_ms >= session.next_record_ms:
        session.next_record_ms = now_ms + round(rules.record_interval_h * HOUR_MS)
        events.append(session._event(now_ms, "record"))
    return events


def retested(session: Session, now_ms: int, test: dict[str, Any]) -> list[Event]:
    """A new test of the space: a pass resumes a session that needed one."""
    if session.state in ("retest_required", "evacuate") and test["passed"]:
        session.state, session.evacuated_for, session.monitored_ms = "active", [], now_ms
        return [session._event(now_ms, "resumed", test=test["id"])]
    return []


def end(session: Session, now_ms: int, by: str) -> Event:
    if session.state not in OPEN:
        raise EntryRefused(f"the session of {session.space} is already {session.state}")
    session.state = "ended"
    return session._event(now_ms, "ended", by=by)


class Spaces:
    """The site's confined spaces on the gateway: each one's last test and open
    session, saved with the events they make (``saved()``; ``dirty`` until then).
    ``configure`` gives them their spaces, at start and with every new config.
    """

    def __init__(self, saved: dict[str, Any]) -> None:
        self.tests: dict[str, dict[str, Any]] = saved.get("tests", {})
        self.open = {k: Session.restored(v) for k, v in saved.get("sessions", {}).items()}
        self.dirty = False
        self.spaces: dict[str, Space] = {}
        self.channels: dict[str, list[SpaceChannel]] = {}

    def configure(self, site: SiteConfig, profiles: ProfileLibrary) -> None:
        self.spaces = {s.name: s for s in site.spaces}
        self.channels = {s.name: space_channels(site, profiles, s) for s in site.spaces}

    def saved(self) -> dict[str, Any]:
        self.dirty = False
        return {"tests": self.tests, "sessions": {k: s.saved() for k, s in self.open.items()}}

    def rules(self, name: str) -> Rules:
        s = self.spaces[name]
        return Rules(s.test_valid_min, s.interruption_min, s.record_interval_h, s.permit_h)

    def tested(self, name: str, test_id: str, ts_ms: int, passed: bool) -> list[Event]:
        """Remember a test; a pass resumes the space's session if it needed one."""
        self.tests[name] = {"id": test_id, "ts": ts_ms, "passed": passed}
        self.dirty = True
        session = self.open.get(name)
        return retested(session, ts_ms, self.tests[name]) if session else []

    def start(self, name: str, by: str, now_ms: int) -> Event:
        if name in self.open:
            raise EntryRefused(f"{name} has an open session since "
                               f"{self.open[name].started_ms}; end it first")
        session, event = start(name, by, now_ms, self.tests.get(name), self.rules(name))
        self.open[name], self.dirty = session, True
        return event

    def end(self, name: str, by: str, now_ms: int) -> Event:
        if name not in self.open:
            raise EntryRefused(f"{name} has no open session")
        self.dirty = True
        return end(self.open.pop(name), now_ms, by)

    def watch(self, device: str, now_ms: int, latest: Mapping[str, Sample],
              alarms: Mapping[str, set[str]]) -> list[Event]:
        """Look at the spaces ``device`` watches; ``alarms``: active alarm key -> its
        channels. The events of what changed; ended sessions are let go.
        """
        events = []
        for name, session in list(self.open.items()):
            channels = self.channels.get(name)
            if channels is None or not any(c.channel.startswith(f"{device}.")
                                           for c in channels):
                continue
            names = {c.channel for c in channels}
            monitored = all(_fresh(latest.get(c.channel), now_ms, c.max_age_ms)
                            for c in channels)
            on_space = sorted(k for k, chs in alarms.items() if chs & names)
            events += watch(session, now_ms, monitored, on_space, self.rules(name))
            if session.state not in OPEN:
                del self.open[name]
            self.dirty = True  # at least the time it was last watched
        return events


def _fresh(sample: Sample | None, now_ms: int, max_age_ms: int) -> bool:
    return (sample is not None and sample.quality is Quality.GOOD
            and now_ms - sample.ts_ms <= max_age_ms)
