"""The lifecycle of each alarm after it is raised (ISA-18.2 / IEC 62682 states, as
OPC UA Part 9 models them; ALARM_MANAGEMENT.md §1.1 and §6), on an injectable clock:
every method takes ``now_ms``.

    raised -> unacknowledged --ack--> acknowledged --clears--> awaiting_handling
              acknowledged --still active realarm_min after the ack--> unacknowledged
              unacknowledged --clears--> returned_unacknowledged --ack--> awaiting_handling
              a latching limit whose condition clears --> latched, until a reset
    an episode is closed (the closed loop, 闭环) once it is over, acknowledged and
    handled: a person recorded the cause and the action taken.

Alongside the episodes, an alarm point can be *shelved* (by a named person, with a
reason, for a limited time; never a level-2 alarm unless the config allows it), and
a channel can be put *out of service* (maintenance, with an expiry). Both keep the
alarm evaluated, stored and published; they only keep it off the local outputs, and
the gateway reports that it is not fully protecting. An alarm left unacknowledged is
*escalated* every ``escalate_after_min``.

Only class ``alarm`` has a lifecycle here: faults and anomalies are acknowledged as
before, and end with their condition. Every change is an event for the buffer, with
the episode's id (shelving and out-of-service carry an id of their own), so the
platform can rebuild each alarm's history. The book is a plain dict when saved, so
it survives a restart with its timers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edge_agent.config import AlarmManagement
from edge_agent.records import ActiveAlarm, Event

MINUTE_MS = 60_000
ChannelsOf = Callable[[str], set[str]]  # alarm key -> the channels it is about
LevelOf = Callable[[str], int]  # alarm key -> its level


class Refused(Exception):
    """A lifecycle command that cannot be carried out now; the message says why."""


@dataclass
class Episode:
    """One raised alarm, from raised until closed."""

    alarm_id: str
    key: str
    level: int
    raised_ms: int
    channels: list[str]
    active: bool = True
    latched: bool = False  # over, but held by its latch until a reset
    acked: dict[str, Any] | None = None  # by, ts, note
    handled: dict[str, Any] | None = None  # by, ts, cause, action
    escalation: int = 0
    escalated_ms: int = 0  # when the escalation clock last started

    @property
    def state(self) -> str:
        if self.latched:
            return "latched"
        if self.active:
            return "acknowledged" if self.acked else "unacknowledged"
        return "returned_unacknowledged" if not self.acked else "awaiting_handling"


@dataclass
class Suppression:
    """A shelved alarm point, or a channel out of service."""

    suppression_id: str
    subject: str  # an alarm key when shelved, a channel when out of service
    by: str
    reason: str
    since_ms: int
    until_ms: int


@dataclass
class AlarmBook:
    """The site's open alarm episodes, shelved points and channels out of service."""

    rules: AlarmManagement = field(default_factory=AlarmManagement)
    episodes: dict[str, Episode] = field(default_factory=dict)  # by alarm id
    shelved: dict[str, Suppression] = field(default_factory=dict)  # by alarm key
    out_of_service: dict[str, Suppression] = field(default_factory=dict)  # by channel
    dirty: bool = False  # changed since the last save

    # --- saving -------------------------------------------------------------------

    def saved(self) -> dict[str, Any]:
        self.dirty = False
        return {"episodes": [asdict(e) for e in self.episodes.values()],
                "shelved": [asdict(s) for s in self.shelved.values()],
                "out_of_service": [asdict(s) for s in self.out_of_service.values()]}

    @classmethod
    def restored(cls, saved: dict[str, Any], rules: AlarmManagement) -> AlarmBook:
        return cls(rules, {e["alarm_id"]: Episode(**e) for e in saved.get("episodes", [])},
                   {s["subject"]: Suppression(**s) for s in saved.get("shelved", [])},
                   {s["subject"]: Suppression(**s) for s in saved.get("out_of_service", [])})

    # --- following the engine ----------------------------------------------------

    def follow(self, events: Iterable[Event], channels_of: ChannelsOf,
               level_of: LevelOf) -> list[Event]:
        """Track the episodes of the engine's alarm events; the ``closed`` events that
        follow from them (an alarm acknowledged and handled that now returns).
        """
        out = []
        for event in events:
            if event.cls != "alarm":
                continue
            if event.transition == "raised":
                self.episodes[event.alarm_id] = Episode(
                    event.alarm_id, event.key, level_of(event.key), event.ts_ms,
                    sorted(channels_of(event.key)), escalated_ms=event.ts_ms)
                self.dirty = True
            elif (episode := self.episodes.get(event.alarm_id)) is not None and (
                    event.transition in ("returned_to_normal", "withdrawn")):
                episode.active = episode.latched = False
                self.dirty = True
                out += self._close_if_done(episode, event.ts_ms)
        return out

    def marked(self, events: list[Event], channels_of: ChannelsOf) -> list[Event]:
        """The events, with ``suppressed`` (shelved, out_of_service) on the raise of an
        alarm that drives no outputs, so the platform shows it as such.
        """
        return [replace(e, details={**e.details, "suppressed": why})
                if e.cls == "alarm" and e.transition == "raised"
                and (why := self.suppression(e.key, channels_of(e.key))) else e
                for e in events]

    def adopt(self, active: Mapping[str, ActiveAlarm], channels_of: ChannelsOf,
              level_of: LevelOf) -> None:
        """Open an episode for each active alarm the book does not know (an alarm
        restored from a buffer written before the book existed).
        """
        for key, alarm in active.items():
            if alarm.cls == "alarm" and alarm.alarm_id not in self.episodes:
                self.episodes[alarm.alarm_id] = Episode(
                    alarm.alarm_id, key, level_of(key), alarm.raised_ms,
                    sorted(channels_of(key)), escalated_ms=alarm.raised_ms)
                self.dirty = True

    def latched(self, keys: set[str], now_ms: int) -> list[Event]:
        """``keys``: the latched alarms whose condition is gone (the engine holds them
        until a reset); a ``latched`` event for each that just got there.
        """
        out = []
        for episode in self.episodes.values():
            now = episode.active and episode.key in keys
            if now != episode.latched:
                episode.latched = now
                self.dirty = True
                if now:
                    out.append(self._event(episode, now_ms, "latched", note="the condition is "
                                           "gone; the alarm holds until it is reset"))
        return out

    # --- a person's actions ----------------------------------------------------

    def find(self, key: str | None, alarm_id: str | None) -> Episode | None:
        """The open episode of an alarm key (the newest), or with this id."""
        if alarm_id is not None:
            return self.episodes.get(alarm_id)
        found = [e for e in self.episodes.values() if e.key == key]
        return max(found, key=lambda e: e.raised_ms) if found else None

    def ack(self, episode: Episode, by: str, note: str | None, now_ms: int) -> list[Event]:
        if episode.acked:
            raise Refused(f"{episode.key} was acknowledged by {episode.acked['by']} already")
        episode.acked = {"by": by, "ts": now_ms, "note": note}
        self.dirty = True
        return [self._event(episode, now_ms, "acknowledged", by=by, note=note,
                            state=episode.state), *self._close_if_done(episode, now_ms)]

    def handle(self, episode: Episode, by: str, cause: str, action: str,
               now_ms: int) -> list[Event]:
        if not episode.acked:
            raise Refused(f"{episode.key} is not acknowledged yet: acknowledge it first, then "
                          "record how it was handled")
        episode.handled = {"by": by, "ts": now_ms, "cause": cause, "action": action}
        self.dirty = True
        return [self._event(episode, now_ms, "handled", by=by, cause=cause, action=action),
                *self._close_if_done(episode, now_ms)]

    def reset_refusal(self, episode: Episode) -> str | None:
        """Why the latch of ``episode`` cannot be reset now (None: it can)."""
        if not episode.latched:
            return (f"{episode.key} is not latched: " + (
                "its condition still holds (a reset is refused while gas is present)"
                if episode.active else "it is over already"))
        if not episode.acked:
            return f"{episode.key} is not acknowledged yet: acknowledge it, then reset it"
        return None

    def shelve(self, key: str, level: int, by: str, reason: str, minutes: float,
               now_ms: int, episode: Episode | None) -> list[Event]:
        if level >= 2 and not self.rules.shelve_level2:
            raise Refused(f"{key} is a level-2 alarm; level-2 alarms cannot be shelved (set "
                          "alarm_management.shelve_level2 = true to allow it)")
        if minutes > self.rules.shelve_max_min:
            raise Refused(f"shelving is limited to {self.rules.shelve_max_min:g} min "
                          "(alarm_management.shelve_max_min)")
        shelf = Suppression(uuid.uuid4().hex, key, by, reason, now_ms,
                            now_ms + round(minutes * MINUTE_MS))
        self.shelved[key] = shelf
        self.dirty = True
        return [Event(now_ms, "alarm", "shelved", shelf.suppression_id, key, {
            **_about(shelf), "level": level,
            "episode": episode.alarm_id if episode else None})]

    def unshelve(self, key: str, by: str, now_ms: int) -> list[Event]:
        shelf = self._lift(self.shelved, key, now_ms)
        return [Event(now_ms, "alarm", "unshelved", shelf.suppression_id, key,
                      {"by": by, "shelved_by": shelf.by, "since_ms": shelf.since_ms})]

    def take_out_of_service(self, channel: str, by: str, reason: str, minutes: float,
                            now_ms: int, site_channels: int) -> list[Event]:
        if minutes > self.rules.out_of_service_max_min:
            raise Refused(f"out of service is limited to "
                          f"{self.rules.out_of_service_max_min:g} min "
                          "(alarm_management.out_of_service_max_min)")
        others = len(set(self.out_of_service) - {channel})
        cap = int(self.rules.out_of_service_max_share * site_channels)
        if others + 1 > cap:
            raise Refused(f"{others} of the site's {site_channels} channels are out of service "
                          f"already; at most {cap} may be "
                          "(alarm_management.out_of_service_max_share)")
        held = Suppression(uuid.uuid4().hex, channel, by, reason, now_ms,
                           now_ms + round(minutes * MINUTE_MS))
        self.out_of_service[channel] = held
        self.dirty = True
        return [Event(now_ms, "alarm", "out_of_service", held.suppression_id, channel,
                      _about(held))]

    def return_to_service(self, channel: str, by: str, now_ms: int) -> list[Event]:
        held = self._lift(self.out_of_service, channel, now_ms)
        return [Event(now_ms, "alarm", "returned_to_service", held.suppression_id, channel,
                      {"by": by, "taken_by": held.by, "since_ms": held.since_ms})]

    # --- the clock ---------------------------------------------------------------

    def due(self, now_ms: int) -> list[Event]:
        """What time brings: shelving and out-of-service that expire, escalations."""
        out = []
        for key in [k for k, s in self.shelved.items() if now_ms >= s.until_ms]:
            out += self.unshelve(key, "expiry", now_ms)
        for channel in [c for c, s in self.out_of_service.items() if now_ms >= s.until_ms]:
            out += self.return_to_service(channel, "expiry", now_ms)
        out += self._realarms(now_ms)
        after = self.rules.escalate_after_min
        if after is None:
            return out
        for episode in self.episodes.values():
            if (episode.active and not episode.acked and not self.suppressed(episode)
                    and episode.escalation < self.rules.escalations_max
                    and now_ms - episode.escalated_ms >= after * MINUTE_MS):
                episode.escalation += 1
                episode.escalated_ms = now_ms
                self.dirty = True
                out.append(self._event(episode, now_ms, "escalated",
                                       escalation=episode.escalation,
                                       unacknowledged_s=(now_ms - episode.raised_ms) // 1000))
        return out

    def _realarms(self, now_ms: int) -> list[Event]:
        """An acknowledged alarm still active ``realarm_min`` after its acknowledgement
        is unacknowledged again (OPC UA B.1.5 ReAlarmTime; GMI: a mute re-sounds).
        """
        if self.rules.realarm_min is None:
            return []
        out = []
        for episode in self.episodes.values():
            if (episode.active and episode.acked and not episode.latched
                    and now_ms - episode.acked["ts"] >= self.rules.realarm_min * MINUTE_MS):
                episode.acked = None
                episode.escalated_ms = now_ms
                self.dirty = True
                out.append(self._event(episode, now_ms, "realarmed", state=episode.state))
        return out

    # --- what it means for the outputs and the status ---------------------------

    def suppressed(self, episode: Episode) -> str | None:
        return self.suppression(episode.key, episode.channels)

    def suppression(self, key: str, channels: Iterable[str]) -> str | None:
        """``shelved`` or ``out_of_service`` when the alarm must drive no outputs."""
        if key in self.shelved:
            return "shelved"
        if any(c in self.out_of_service for c in channels):
            return "out_of_service"
        return None

    def report(self) -> dict[str, Any]:
        """For ``health`` and ``status``: what is not fully protecting the site."""
        return {"shelved": {k: _about(s) for k, s in self.shelved.items()},
                "out_of_service": {c: _about(s) for c, s in self.out_of_service.items()},
                "awaiting": {state: sum(1 for e in self.episodes.values() if e.state == state)
                             for state in ("unacknowledged", "returned_unacknowledged",
                                           "latched", "awaiting_handling")}}

    # --- inside -------------------------------------------------------------------

    def _lift(self, table: dict[str, Suppression], subject: str, now_ms: int) -> Suppression:
        """End a suppression; the escalation clock of what it hid starts again."""
        hidden = [e for e in self.episodes.values() if self.suppressed(e)]
        lifted = table.pop(subject)
        for episode in hidden:
            if not self.suppressed(episode):
                episode.escalated_ms = now_ms
        self.dirty = True
        return lifted

    def _close_if_done(self, episode: Episode, now_ms: int) -> list[Event]:
        if episode.active or not episode.acked or not episode.handled:
            return []
        del self.episodes[episode.alarm_id]
        self.dirty = True
        return [self._event(episode, now_ms, "closed", acked_by=episode.acked["by"],
                            handled_by=episode.handled["by"], cause=episode.handled["cause"],
                            action=episode.handled["action"],
                            open_s=(now_ms - episode.raised_ms) // 1000)]

    @staticmethod
    def _event(episode: Episode, now_ms: int, transition: str, **details: Any) -> Event:
        return Event(now_ms, "alarm", transition, episode.alarm_id, episode.key,
                     {"level": episode.level, **details})


def _about(s: Suppression) -> dict[str, Any]:
    return {"by": s.by, "reason": s.reason, "since_ms": s.since_ms, "until_ms": s.until_ms}
