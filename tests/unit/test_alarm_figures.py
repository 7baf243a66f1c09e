"""Alarm-management figures: rate, flood, stale, chattering, times to ack and clear."""

from __future__ import annotations

from edge_agent.alarm_figures import AlarmFigures
from edge_agent.records import ActiveAlarm, Event

T0 = 1_800_000_000_000
S = 1000


def raised(ts: int, key: str, alarm_id: str, cls: str = "alarm") -> Event:
    return Event(ts, cls, "raised", alarm_id, key)  # type: ignore[arg-type]


def test_a_flood_is_more_than_10_alarms_in_10_minutes() -> None:
    figures = AlarmFigures()
    figures.follow([raised(T0 + i * 50 * S, f"gas{i}.co:above:1", f"a{i}") for i in range(11)])
    report = figures.report(T0 + 550 * S, {})
    assert (report["alarms_10min"], report["flood"]) == (11, True)
    report = figures.report(T0 + 601 * S, {})  # the first has left the window
    assert (report["alarms_10min"], report["flood"]) == (10, False)


def test_faults_and_anomalies_are_not_counted() -> None:
    figures = AlarmFigures()
    figures.follow([raised(T0, "gas1:comm_lost", "f1", "fault"),
                    raised(T0, "gas1.co:anomaly", "n1", "anomaly")])
    assert figures.report(T0, {})["alarms_10min"] == 0


def test_a_channel_raised_3_times_in_60_s_is_chattering() -> None:
    figures = AlarmFigures()
    events = []
    for i in range(3):
        events += [raised(T0 + i * 20 * S, "gas1.co:above:1", f"c{i}"),
                   Event(T0 + i * 20 * S + 5 * S, "alarm", "returned_to_normal", f"c{i}",
                         "gas1.co:above:1")]
    figures.follow(events)
    assert figures.report(T0 + 45 * S, {})["chattering"] == {"gas1.co": 3}
    assert figures.report(T0 + 61 * S, {})["chattering"] == {}  # the first is 61 s old
    assert figures.report(T0 + 61 * S, {})["mean_clear_s"] == 5.0


def test_stale_alarms_and_the_mean_time_to_acknowledge() -> None:
    figures = AlarmFigures()
    figures.follow([raised(T0, "gas1.h2s:above:1", "s1"),
                    Event(T0 + 90 * S, "alarm", "acknowledged", "s1", "gas1.h2s:above:1"),
                    raised(T0 + 100 * S, "gas2.h2s:above:1", "s2"),
                    Event(T0 + 130 * S, "alarm", "acknowledged", "s2", "gas2.h2s:above:1")])
    active = {"gas1.h2s:above:1": ActiveAlarm("gas1.h2s:above:1", "s1", "alarm", T0),
              "gas1:comm_lost": ActiveAlarm("gas1:comm_lost", "f1", "fault", T0)}
    report = figures.report(T0 + 25 * 3600 * S, active)
    assert (report["stale"], report["mean_ack_s"], report["mean_clear_s"]) == (1, 60.0, None)


def test_the_mean_time_to_close_comes_from_closed_episodes() -> None:
    figures = AlarmFigures()
    assert figures.report(T0, {})["mean_close_s"] is None
    figures.follow([Event(T0, "alarm", "closed", "x1", "gas1.co:above:1", {"open_s": 600}),
                    Event(T0, "alarm", "closed", "x2", "gas1.co:above:1", {"open_s": 300})])
    assert figures.report(T0, {})["mean_close_s"] == 450.0
