"""The ISA-18.2 lifecycle of alarms on an injectable clock: acknowledge, latch and
reset, handle and close, shelve, out of service, escalation (ALARM_MANAGEMENT.md §1.1,
§6.2, §6.6, §6.15)."""

from __future__ import annotations

import pytest

from edge_agent.config import AlarmManagement
from edge_agent.lifecycle import MINUTE_MS, AlarmBook, Refused
from edge_agent.records import Event

T0 = 1_800_000_000_000
KEY = "gas1.co:above:1"
LEVELS = {KEY: 1, "gas1.co:above:2": 2}


def book(**rules) -> AlarmBook:
    return AlarmBook(AlarmManagement(**rules))


def feed(b: AlarmBook, *events: Event) -> list[Event]:
    return b.follow(events, lambda key: {key.split(":")[0]}, LEVELS.__getitem__)


def raised(alarm_id: str = "a1", key: str = KEY, at: int = T0) -> Event:
    return Event(at, "alarm", "raised", alarm_id, key, {})


def returned(alarm_id: str = "a1", key: str = KEY, at: int = T0 + MINUTE_MS) -> Event:
    return Event(at, "alarm", "returned_to_normal", alarm_id, key, {})


def test_episode_states_and_the_closed_loop() -> None:
    b = book()
    feed(b, raised())
    episode = b.find(KEY, None)
    assert (episode.alarm_id, episode.state, episode.channels) == ("a1", "unacknowledged",
                                                                   ["gas1.co"])
    assert [] == feed(b, returned())
    assert "returned_unacknowledged" == episode.state
    with pytest.raises(Refused, match="acknowledge it first"):
        b.handle(episode, "Wang", "leak", "valve closed", T0 + 2 * MINUTE_MS)
    events = b.ack(episode, "Wang", "seen on the panel", T0 + 2 * MINUTE_MS)
    assert [("acknowledged", "a1", "Wang", "seen on the panel")] == [
        (e.transition, e.alarm_id, e.details["by"], e.details["note"]) for e in events]
    assert "awaiting_handling" == episode.state
    with pytest.raises(Refused, match="acknowledged by Wang already"):
        b.ack(episode, "Li", None, T0 + 3 * MINUTE_MS)
    events = b.handle(episode, "Li", "loose fitting", "tightened, leak-tested",
                      T0 + 4 * MINUTE_MS)
    assert ["handled", "closed"] == [e.transition for e in events]
    closed = events[1].details
    assert (closed["acked_by"], closed["handled_by"], closed["cause"], closed["open_s"]) == (
        "Wang", "Li", "loose fitting", 240)
    assert {} == b.episodes


def test_an_alarm_handled_while_active_closes_when_it_returns() -> None:
    b = book()
    feed(b, raised())
    episode = b.find(None, "a1")
    b.ack(episode, "Wang", None, T0 + 1000)
    assert "acknowledged" == episode.state
    assert ["handled"] == [e.transition for e in b.handle(episode, "Wang", "c", "a", T0 + 2000)]
    assert [("closed", "a1")] == [(e.transition, e.alarm_id) for e in feed(b, returned())]


def test_latched_then_reset_only_when_acknowledged_and_clear() -> None:
    b = book()
    feed(b, raised())
    episode = b.find(KEY, None)
    assert "still holds" in b.reset_refusal(episode)
    assert [("latched", "a1")] == [(e.transition, e.alarm_id)
                                   for e in b.latched({KEY}, T0 + 1000)]
    assert [] == b.latched({KEY}, T0 + 2000)  # one event per change
    assert "latched" == episode.state
    assert "acknowledge it, then reset" in b.reset_refusal(episode)
    b.ack(episode, "Wang", None, T0 + 3000)
    assert b.reset_refusal(episode) is None
    assert [] == b.latched(set(), T0 + 4000)  # the condition came back: not latched
    assert "acknowledged" == episode.state


def test_level_2_cannot_be_shelved_unless_configured_and_shelving_is_capped() -> None:
    b = book()
    with pytest.raises(Refused, match="level-2 alarms cannot be shelved"):
        b.shelve("gas1.co:above:2", 2, "Wang", "sensor drifting", 30, T0, None)
    with pytest.raises(Refused, match="limited to 60 min"):
        b.shelve(KEY, 1, "Wang", "sensor drifting", 61, T0, None)
    events = book(shelve_level2=True).shelve("gas1.co:above:2", 2, "Wang", "drift", 30, T0,
                                             None)
    assert ("shelved", "gas1.co:above:2", T0 + 30 * MINUTE_MS) == (
        events[0].transition, events[0].key, events[0].details["until_ms"])


def test_shelving_suppresses_outputs_stops_escalation_and_expires() -> None:
    b = book(escalate_after_min=5)
    feed(b, raised())
    episode = b.find(KEY, None)
    [shelved] = b.shelve(KEY, 1, "Wang", "chattering, sensor to be replaced", 20, T0, episode)
    assert (shelved.details["by"], shelved.details["episode"]) == ("Wang", "a1")
    assert "shelved" == b.suppressed(episode)
    [again] = b.marked([raised("a2")], lambda key: {"gas1.co"})
    assert "shelved" == again.details["suppressed"]
    assert [] == b.due(T0 + 10 * MINUTE_MS)  # no escalation while shelved
    [expired] = b.due(T0 + 20 * MINUTE_MS)
    assert (expired.transition, expired.alarm_id, expired.details["by"]) == (
        "unshelved", shelved.alarm_id, "expiry")
    assert b.suppressed(episode) is None
    assert [] == b.due(T0 + 24 * MINUTE_MS)  # the escalation clock starts again
    assert ["escalated"] == [e.transition for e in b.due(T0 + 25 * MINUTE_MS)]


def test_out_of_service_is_limited_to_a_share_of_the_channels_and_expires() -> None:
    b = book(out_of_service_max_share=0.5)
    b.take_out_of_service("gas1.co", "Zhao", "calibration", 60, T0, site_channels=4)
    b.take_out_of_service("gas1.h2s", "Zhao", "calibration", 60, T0, site_channels=4)
    with pytest.raises(Refused, match="2 of the site's 4 channels are out of service"):
        b.take_out_of_service("gas1.o2", "Zhao", "calibration", 60, T0, site_channels=4)
    with pytest.raises(Refused, match="limited to 240 min"):
        b.take_out_of_service("gas1.co", "Zhao", "calibration", 241, T0, site_channels=4)
    feed(b, raised())
    assert "out_of_service" == b.suppressed(b.find(KEY, None))
    [marked] = b.marked([raised("a2")], lambda key: {"gas1.co"})
    assert "out_of_service" == marked.details["suppressed"]
    events = b.due(T0 + 60 * MINUTE_MS)
    assert [("returned_to_service", "gas1.co"), ("returned_to_service", "gas1.h2s")] == sorted(
        (e.transition, e.key) for e in events)
    assert {} == b.out_of_service


def test_escalation_of_an_unacknowledged_alarm_every_n_minutes_up_to_the_max() -> None:
    b = book(escalate_after_min=10, escalations_max=2)
    feed(b, raised())
    seen = [(minute, e.details["escalation"]) for minute in range(0, 60)
            for e in b.due(T0 + minute * MINUTE_MS)]
    assert [(10, 1), (20, 2)] == seen
    acked = book(escalate_after_min=10)
    feed(acked, raised())
    acked.ack(acked.find(KEY, None), "Wang", None, T0 + 5 * MINUTE_MS)
    assert [] == acked.due(T0 + 30 * MINUTE_MS)
    assert [] == book(escalate_after_min=None).due(T0 + 999 * MINUTE_MS)


def test_an_acknowledged_alarm_still_active_sounds_again_after_realarm_min() -> None:
    b = book(realarm_min=15, escalate_after_min=None)
    feed(b, raised())
    episode = b.find(KEY, None)
    b.ack(episode, "Wang", None, T0 + MINUTE_MS)
    assert [] == b.due(T0 + 15 * MINUTE_MS)
    [again] = b.due(T0 + 16 * MINUTE_MS)
    assert ("realarmed", "unacknowledged") == (again.transition, again.details["state"])
    b.ack(episode, "Wang", "still venting", T0 + 17 * MINUTE_MS)
    feed(b, returned(at=T0 + 20 * MINUTE_MS))
    assert [] == b.due(T0 + 60 * MINUTE_MS)  # over: nothing to re-sound


def test_the_book_survives_a_restart_with_its_timers() -> None:
    b = book(escalate_after_min=10)
    feed(b, raised())
    b.shelve("gas2.co:above:1", 1, "Wang", "drift", 30, T0, None)
    b.take_out_of_service("gas3.co", "Zhao", "calibration", 60, T0, site_channels=4)
    b.due(T0 + 10 * MINUTE_MS)
    assert b.dirty
    again = AlarmBook.restored(b.saved(), AlarmManagement(escalate_after_min=10))
    assert not b.dirty
    assert again.report() == b.report()
    assert again.find(KEY, None) == b.find(KEY, None)
    assert [("escalated", 2)] == [(e.transition, e.details["escalation"])
                                  for e in again.due(T0 + 20 * MINUTE_MS)]
    assert {"shelved": 1, "out_of_service": 1} == {
        k: len(v) for k, v in again.report().items() if k != "awaiting"}
