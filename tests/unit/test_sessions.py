"""Entry sessions on an injectable clock: the 30-minute, 60-minute, 2-hour and
24-hour rules of GB 30871-2022 chapter 6."""

from __future__ import annotations

import pytest

from edge_agent.sessions import (
    HOUR_MS,
    MINUTE_MS,
    EntryRefused,
    Rules,
    Session,
    end,
    retested,
    start,
    watch,
)

T0 = 1_800_000_000_000
RULES = Rules()


def passed_test(at_ms: int, passed: bool = True) -> dict:
    return {"id": f"test-{at_ms}", "ts": at_ms, "passed": passed}


def started(at_ms: int = T0) -> Session:
    session, event = start("manhole-3", "Li Wei", at_ms, passed_test(at_ms - 5 * MINUTE_MS),
                           RULES)
    assert (event.cls, event.transition, event.key, event.details["by"]) == (
        "entry", "started", "space:manhole-3", "Li Wei")
    return session


def run(session: Session, until_ms: int, step_ms: int = MINUTE_MS, monitored: bool = True,
        alarms: list[str] | None = None, start_ms: int | None = None) -> list[tuple[int, str]]:
    """Watch every ``step_ms`` up to ``until_ms``; (minutes since T0, transition) of each event."""
    out = []
    t = start_ms if start_ms is not None else session.monitored_ms + step_ms
    while t <= until_ms:
        out += [((e.ts_ms - T0) // MINUTE_MS, e.transition)
                for e in watch(session, t, monitored, alarms or [], RULES)]
        t += step_ms
    return out


def test_entry_needs_a_passed_test_at_most_30_minutes_old() -> None:
    with pytest.raises(EntryRefused, match="no pre-entry test"):
        start("manhole-3", "Li Wei", T0, None, RULES)
    with pytest.raises(EntryRefused, match="failed; ventilate"):
        start("manhole-3", "Li Wei", T0, passed_test(T0 - MINUTE_MS, passed=False), RULES)
    with pytest.raises(EntryRefused, match="31 min old; entry must start within 30 min"):
        start("manhole-3", "Li Wei", T0, passed_test(T0 - 31 * MINUTE_MS), RULES)
    session, _ = start("manhole-3", "Li Wei", T0, passed_test(T0 - 30 * MINUTE_MS), RULES)
    assert session.state == "active"


def test_a_record_every_two_hours_while_people_work() -> None:
    assert run(started(), T0 + 5 * HOUR_MS) == [(120, "record"), (240, "record")]


def test_an_interruption_over_60_minutes_requires_a_new_test() -> None:
    session = started()
    assert run(session, T0 + 60 * MINUTE_MS, monitored=False) == []  # 60 min: not over
    assert run(session, T0 + 61 * MINUTE_MS, monitored=False,
               start_ms=T0 + 61 * MINUTE_MS) == [(61, "retest_required")]
    assert run(session, T0 + 3 * HOUR_MS) == []  # readings back: still no entry, no records
    assert retested(session, T0 + 3 * HOUR_MS, passed_test(T0 + 3 * HOUR_MS, passed=False)) == []
    [resumed] = retested(session, T0 + 3 * HOUR_MS, passed_test(T0 + 3 * HOUR_MS))
    assert (resumed.transition, session.state) == ("resumed", "active")


def test_the_agent_down_for_two_hours_is_an_interruption() -> None:
    session = Session.restored(started().saved())  # as stored before the agent stopped
    assert run(session, T0 + 2 * HOUR_MS, start_ms=T0 + 2 * HOUR_MS) == [
        (120, "retest_required")]


def test_an_alarm_on_the_space_means_evacuate_until_a_new_passed_test() -> None:
    session = started()
    events = watch(session, T0 + 10 * MINUTE_MS, True, ["top.h2s:above:1"], RULES)
    assert [(e.transition, e.details["alarms"]) for e in events] == [
        ("evacuate", ["top.h2s:above:1"])]
    assert run(session, T0 + 3 * HOUR_MS, alarms=["top.h2s:above:1"]) == []  # said once
    assert run(session, T0 + 4 * HOUR_MS) == []  # the alarm is gone: still evacuated
    [resumed] = retested(session, T0 + 4 * HOUR_MS, passed_test(T0 + 4 * HOUR_MS))
    assert session.state == "active"
    assert resumed.details["test"] == f"test-{T0 + 4 * HOUR_MS}"


def test_the_permit_expires_after_24_hours() -> None:
    session = started()
    events = run(session, T0 + 25 * HOUR_MS, step_ms=30 * MINUTE_MS)
    assert events[-1] == (24 * 60, "expired")
    assert [t for _, t in events[:-1]] == ["record"] * 11
    with pytest.raises(EntryRefused, match="already expired"):
        end(session, T0 + 25 * HOUR_MS, "Li Wei")


def test_ending_a_session() -> None:
    session = started()
    event = end(session, T0 + HOUR_MS, "Li Wei")
    assert (event.transition, event.details["by"], session.state) == ("ended", "Li Wei", "ended")
    assert watch(session, T0 + 3 * HOUR_MS, True, ["x"], RULES) == []
