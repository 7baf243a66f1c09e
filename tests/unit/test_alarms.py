"""The alarm engine: events with one id per episode, faults, restart with restored state."""

from __future__ import annotations

import itertools

from edge_agent.alarms import AlarmEngine, LimitSpec
from edge_agent.records import ActiveAlarm

CO1 = LimitSpec("gas1.co", 1, "above", 24.0, 1.0, "ppm")
CO2 = LimitSpec("gas1.co", 2, "above", 160.0, 5.0, "ppm")
O2LOW = LimitSpec("gas1.o2", 1, "below", 19.5, 0.2, "%VOL")


def engine(restored: dict | None = None) -> AlarmEngine:
    ids = (f"id{i}" for i in itertools.count(1))
    return AlarmEngine(["gas1.co", "gas1.o2"], [CO1, CO2, O2LOW], ["gas1:comm_lost"],
                       restored, new_id=lambda: next(ids))


def test_alarm_levels_raise_and_clear_with_one_id_each() -> None:
    alarms = engine()
    raised = alarms.judge({"gas1.co": 200.0, "gas1.o2": 20.9}, 1).events
    assert [("raised", "gas1.co:above:1", "id1"), ("raised", "gas1.co:above:2", "id2")] == [
        (e.transition, e.key, e.alarm_id) for e in raised]
    assert {"channel": "gas1.co", "kind": "threshold", "level": 2, "direction": "above",
            "setpoint": 160.0, "deadband": 5.0, "latch": False, "value": 200.0,
            "unit": "ppm"} == raised[1].details
    cleared = alarms.judge({"gas1.co": 10.0}, 2)
    assert [("returned_to_normal", "id1"), ("returned_to_normal", "id2")] == [
        (e.transition, e.alarm_id) for e in cleared.events]
    assert ["gas1.co:above:1", "gas1.co:above:2"] == cleared.ended
    assert 1 == cleared.events[0].details["raised_ts"]


def test_alarm_fault_raised_once_and_ended() -> None:
    alarms = engine()
    assert 1 == len(alarms.fault("gas1:comm_lost", True, 1, {"error": "timeout"}).events)
    assert [] == alarms.fault("gas1:comm_lost", True, 2, {}).events
    ended = alarms.fault("gas1:comm_lost", False, 3, {}).events
    assert [("fault", "returned_to_normal", "id1")] == [(e.cls, e.transition, e.alarm_id)
                                                         for e in ended]


def test_alarm_restored_after_restart_keeps_its_id() -> None:
    """An alarm active before a restart ends with the id it was raised with."""
    restored = {CO1.key: ActiveAlarm(CO1.key, "before-restart", "alarm", 5)}
    alarms = engine(restored)
    assert [] == alarms.judge({"gas1.co": 30.0}, 10).events  # still in alarm: no new event
    ended = alarms.judge({"gas1.co": 1.0}, 11).events
    assert [("returned_to_normal", "before-restart")] == [(e.transition, e.alarm_id)
                                                          for e in ended]


def test_alarm_restored_for_a_removed_limit_is_withdrawn() -> None:
    restored = {"gas9.h2s:above:1": ActiveAlarm("gas9.h2s:above:1", "old", "alarm", 5)}
    alarms = engine(restored)
    out = alarms.withdraw_orphans(20)
    assert [("withdrawn", "old", "gas9.h2s:above:1")] == [
        (e.transition, e.alarm_id, e.key) for e in out.events]
    assert ["gas9.h2s:above:1"] == out.ended
    assert [] == alarms.withdraw_orphans(21).events


def test_alarm_latched_ends_after_acknowledgement_and_clear() -> None:
    latched = LimitSpec("gas1.co", 2, "above", 160.0, 5.0, "ppm", latch=True)
    ids = iter(["a", "b"])
    alarms = AlarmEngine(["gas1.co"], [latched], new_id=lambda: next(ids))
    assert ["raised"] == [e.transition for e in alarms.judge({"gas1.co": 200.0}, 1000).events]
    assert [] == alarms.judge({"gas1.co": 10.0}, 2000).events  # clear, but latched
    acked = alarms.ack("gas1.co:above:2", 3000, by="technician")
    assert [("acknowledged", "a", {"by": "technician"})] == [
        (e.transition, e.alarm_id, e.details) for e in acked.events]
    ended = alarms.judge({"gas1.co": 10.0}, 4000).events
    assert [("returned_to_normal", "a")] == [(e.transition, e.alarm_id) for e in ended]


def test_alarm_on_delay_runs_on_any_device_poll() -> None:
    """The delay of one channel's limit completes on the clock of other devices' polls."""
    delayed = LimitSpec("gas1.co", 1, "above", 24.0, 1.0, "ppm", on_delay_s=5.0)
    alarms = AlarmEngine(["gas1.co", "gas2.co"], [delayed])
    assert [] == alarms.judge({"gas1.co": 30.0}, 0).events
    assert [] == alarms.judge({"gas2.co": 1.0}, 4000).events
    raised = alarms.judge({"gas2.co": 1.0}, 5000).events
    assert [("raised", 30.0)] == [(e.transition, e.details["value"]) for e in raised]
