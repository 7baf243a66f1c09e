"""The alarm engine: events with one id per episode, faults, restart with restored state,
and every kind of rule (limits on values and rates, exposure, sensor faults, anomaly,
combined rules) on scripted series."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator

import numpy as np
import pytest

from edge_agent.alarms import (
    AlarmEngine,
    ChannelSpec,
    ExposureSpec,
    FaultSpec,
    LimitSpec,
    PairSpec,
    RuleSpec,
    SiteSpec,
    TermSpec,
)
from edge_agent.records import ActiveAlarm

CO1 = LimitSpec("gas1.co", 1, "above", 24.0, 1.0, "ppm")
CO2 = LimitSpec("gas1.co", 2, "above", 160.0, 5.0, "ppm")
O2LOW = LimitSpec("gas1.o2", 1, "below", 19.5, 0.2, "%VOL")


def site(*channels: ChannelSpec, **more: object) -> SiteSpec:
    return SiteSpec(tuple(channels), **more)  # type: ignore[arg-type]


def gas1(**more: object) -> SiteSpec:
    return site(ChannelSpec("gas1.co", "gas1", "ppm", (CO1, CO2)),
                ChannelSpec("gas1.o2", "gas1", "%VOL", (O2LOW,)),
                fault_keys=("gas1:comm_lost",), **more)


def engine(spec: SiteSpec | None = None, restored: dict | None = None) -> AlarmEngine:
    ids = (f"id{i}" for i in itertools.count(1))
    return AlarmEngine(spec or gas1(), restored, new_id=lambda: next(ids))


def transitions(outcome) -> list[tuple[str, str]]:
    return [(e.key, e.transition) for e in outcome.events]


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
    alarms = engine(restored=restored)
    assert [] == alarms.judge({"gas1.co": 30.0}, 10).events  # still in alarm: no new event
    ended = alarms.judge({"gas1.co": 1.0}, 11).events
    assert [("returned_to_normal", "before-restart")] == [(e.transition, e.alarm_id)
                                                          for e in ended]


def test_alarm_restored_for_a_removed_limit_is_withdrawn() -> None:
    restored = {"gas9.h2s:above:1": ActiveAlarm("gas9.h2s:above:1", "old", "alarm", 5)}
    alarms = engine(restored=restored)
    out = alarms.withdraw_orphans(20)
    assert [("withdrawn", "old", "gas9.h2s:above:1")] == [
        (e.transition, e.alarm_id, e.key) for e in out.events]
    assert ["gas9.h2s:above:1"] == out.ended
    assert [] == alarms.withdraw_orphans(21).events


def test_alarm_latched_ends_only_after_a_reset_once_clear() -> None:
    latched = LimitSpec("gas1.co", 2, "above", 160.0, 5.0, "ppm", latch=True)
    alarms = engine(site(ChannelSpec("gas1.co", "gas1", "ppm", (latched,))))
    assert ["raised"] == [e.transition for e in alarms.judge({"gas1.co": 200.0}, 1000).events]
    assert set() == alarms.latched()  # gas still present
    assert [] == alarms.judge({"gas1.co": 10.0}, 2000).events  # clear, but latched
    assert {"gas1.co:above:2"} == alarms.latched()
    assert [] == alarms.judge({"gas1.co": 10.0}, 2500).events  # holds without a reset
    reset = alarms.reset("gas1.co:above:2", 3000, by="technician")
    assert [("reset", "id1", {"by": "technician"})] == [
        (e.transition, e.alarm_id, e.details) for e in reset.events]
    ended = alarms.judge({"gas1.co": 10.0}, 4000).events
    assert [("returned_to_normal", "id1")] == [(e.transition, e.alarm_id) for e in ended]
    assert set() == alarms.latched()


def test_alarm_on_delay_runs_on_any_device_poll() -> None:
    """The delay of one channel's limit completes on the clock of other devices' polls."""
    delayed = LimitSpec("gas1.co", 1, "above", 24.0, 1.0, "ppm", on_delay_s=5.0)
    alarms = engine(site(ChannelSpec("gas1.co", "gas1", "ppm", (delayed,)),
                         ChannelSpec("gas2.co", "gas2", "ppm")))
    assert [] == alarms.judge({"gas1.co": 30.0}, 1_000).events
    assert [] == alarms.judge({"gas2.co": 1.0}, 5_000).events
    raised = alarms.judge({"gas2.co": 1.0}, 6_000).events
    assert [("raised", 30.0)] == [(e.transition, e.details["value"]) for e in raised]


def test_alarm_rate_of_rise_two_levels() -> None:
    """A rack probe rising 2 °C/min: the 1 °C/min pre-warning, not the 8 °C/min alarm;
    then 10 °C/min reaches both (SAFETY_REFERENCE §6.4)."""
    limits = (LimitSpec("rack.t1", 1, "rise", 1.0, 0.0, "°C"),
              LimitSpec("rack.t1", 2, "rise", 8.0, 0.0, "°C"))
    alarms = engine(site(ChannelSpec("rack.t1", "rack", "°C", limits, rate_window_s=60.0)))
    seen, temp = [], 25.0
    for second in range(0, 240, 5):
        temp += (2.0 if second < 120 else 10.0) * 5 / 60
        seen += transitions(alarms.judge({"rack.t1": temp}, 1_000_000 + second * 1000))
    assert [("rack.t1:rise:1", "raised"), ("rack.t1:rise:2", "raised")] == seen


def test_alarm_rate_window_keeps_every_reading_of_its_window() -> None:
    """A 600 s window polled every 0.5 s holds 1201 readings: the ring keeps them all, so
    the slope of a ramp that stopped 500 s ago still sees the ramp's end."""
    spec = site(ChannelSpec("rack.t1", "rack", "°C", rate_window_s=600.0,
                            poll_interval_s=0.5))
    alarms = engine(spec)
    assert alarms.rates.ring.shape[1] >= 1201
    for k in range(4000):
        t = k * 0.5  # 2 °C/min until 1500 s, then flat
        alarms.judge({"rack.t1": 20.0 + 2.0 * min(t, 1500.0) / 60.0}, round(t * 1000))
    times = np.arange(1399.5, 2000.0, 0.5)
    expected = 60.0 * np.polyfit(times, 20.0 + 2.0 * np.minimum(times, 1500.0) / 60.0, 1)[0]
    assert alarms.rates.slope[0] == pytest.approx(expected, rel=1e-9)


def test_alarm_stel_exceedance_from_a_pulse() -> None:
    """CO at 60 ppm for 10 minutes: STEL = 60 × 10/15 = 40 ppm > 25.76 (GBZ 2.1 PC-STEL
    30 mg/m3 at 20 °C); the TWA of 8 hours stays under 17.17."""
    alarms = engine(site(ChannelSpec("gas1.co", "gas1", "ppm",
                                     exposure=ExposureSpec(25.76, 17.17, max_gap_s=5.0))))
    events = []
    for second in range(0, 20 * 60, 5):
        co = 60.0 if 60 <= second < 660 else 0.0
        events += transitions(alarms.judge({"gas1.co": co}, 1_000_000_000 + second * 1000))
    assert ("gas1.co:stel", "raised") in events
    assert not [e for e in events if e[0] == "gas1.co:twa"]
    stel = alarms.exposure.stel[0]
    assert 0 < stel <= 40.0 + 1e-9


@pytest.fixture
def shenzhen_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is China Standard Time (UTC+8, no DST) during the test."""
    monkeypatch.setenv("TZ", "CST-8")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("shenzhen_time")
def test_alarm_peak_rule_of_a_twa_only_gas() -> None:
    """A gas with a PC-TWA of 10 ppm and no PC-STEL: 35 ppm (above 3 ×) for more than
    15 minutes breaks the excursion rule: peak, held for the shift; a reading above
    50 ppm (5 ×) raises peak_5x at once and ends with it."""
    alarms = engine(site(ChannelSpec("gas1.nh3", "gas1", "ppm",
                                     exposure=ExposureSpec(None, 10.0, max_gap_s=5.0))))
    seen: dict[str, list[tuple[int, str]]] = {}
    for second in range(0, 60 * 60, 5):
        value = 35.0 if 60 <= second < 1020 else 60.0 if 2000 <= second < 2060 else 1.0
        for event in alarms.judge({"gas1.nh3": value}, second * 1000).events:
            seen.setdefault(event.key, []).append((second, event.transition))
            assert 2 == event.details["level"]
    assert [(965, "raised")] == seen["gas1.nh3:peak"]  # more than 900 s after 60 s
    assert [(2000, "raised"), (2060, "returned_to_normal")] == seen["gas1.nh3:peak_5x"]
    # without shifts, the working day of the excursion rule ends at local midnight
    midnight = 16 * 3600  # 00:00 in Shenzhen (UTC+8) is 16:00 UTC
    for second in range(midnight - 60, midnight + 60, 5):
        ended = alarms.judge({"gas1.nh3": 1.0}, second * 1000).ended
        if ended:
            break
    assert (["gas1.nh3:peak"], midnight) == (ended, second)


def test_alarm_sensor_faults_and_unreliable_alarms() -> None:
    """A stuck O2 cell raises a fault; its active alarm is marked unreliable, not ended.
    Once the cell moves again, the fault ends and the alarm is reliable again."""
    spec = site(ChannelSpec("gas1.o2", "gas1", "%VOL", (O2LOW,),
                            faults=FaultSpec(stuck_s=60.0, epsilon=0.0)))
    alarms = engine(spec)
    seen = []
    for second in range(0, 200, 5):
        t = 1_000_000 + second * 1000
        moving = second >= 120 and second % 10 == 0
        out = alarms.judge({"gas1.o2": 19.1 if moving else 19.0}, t)
        out.extend(alarms.reliability(t))
        seen += [(second, *x) for x in transitions(out)]
        if second == 115:
            assert "gas1.o2:below:1" in alarms.active
    assert [(0, "gas1.o2:below:1", "raised"), (60, "gas1.o2:stuck", "raised"),
            (60, "gas1.o2:below:1", "unreliable"),
            (180, "gas1.o2:stuck", "returned_to_normal"),
            (180, "gas1.o2:below:1", "reliable")] == seen


def test_alarm_drift_between_redundant_sensors() -> None:
    spec = site(ChannelSpec("top.o2", "top", "%VOL"), ChannelSpec("bottom.o2", "bottom", "%VOL"),
                pairs=(PairSpec("top.o2", "bottom.o2", 0.5, 30.0),))
    alarms = engine(spec)
    seen = []
    for second in range(0, 90, 5):
        t = 1_000_000 + second * 1000
        seen += transitions(alarms.judge({"top.o2": 20.9, "bottom.o2": 19.9}, t))
    assert {("top.o2:drift", "raised"), ("bottom.o2:drift", "raised")} <= set(seen)


def test_alarm_combined_rule_off_gas_then_heat() -> None:
    """H2 rising, then the rack temperature rising within 5 minutes: the thermal-runaway
    warning of a declared rule."""
    rule = RuleSpec("runaway", 2, 300.0, (TermSpec("bay.h2", "rising", 5.0),
                                          TermSpec("rack.t3", "rising", 1.0)))
    spec = site(ChannelSpec("bay.h2", "bay", "ppm", rate_window_s=60.0),
                ChannelSpec("rack.t3", "rack", "°C", rate_window_s=60.0), rules=(rule,))
    alarms = engine(spec)
    seen, h2, temp = [], 2.0, 24.0
    for second in range(0, 400, 5):
        h2 += 10 * 5 / 60 if second < 200 else 0.0  # 10 ppm/min for 200 s
        temp += 2 * 5 / 60 if second >= 150 else 0.0  # 2 °C/min from 150 s
        t = 1_000_000 + second * 1000
        seen += [(k, tr, second) for k, tr in transitions(alarms.judge(
            {"bay.h2": h2, "rack.t3": temp}, t))]
    raised = [s for k, tr, s in seen if k == "rule:runaway" and tr == "raised"]
    assert len(raised) == 1
    assert 150 < raised[0] < 250


def test_two_of_three_detectors_and_a_faulty_voter_compensated() -> None:
    """k-of-n voting (GB 16808-2025 §5.5.1.8): two of three CO heads confirm the alarm;
    with one head's device comm-lost, one healthy head in alarm is enough."""
    heads = [f"d{i}.co" for i in (1, 2, 3)]
    rule = RuleSpec("co_confirmed", 2, 0.0, tuple(TermSpec(h, "above", 50.0) for h in heads),
                    votes=2)
    spec = site(*(ChannelSpec(h, h.split(".")[0], "ppm") for h in heads), rules=(rule,),
                fault_keys=("d3:comm_lost",))
    alarms = engine(spec)
    one = alarms.judge({"d1.co": 80.0, "d2.co": 5.0, "d3.co": 5.0}, 1000)
    assert [] == transitions(one)
    two = alarms.judge({"d1.co": 80.0, "d2.co": 70.0, "d3.co": 5.0}, 2000)
    assert [("rule:co_confirmed", "raised")] == transitions(two)
    assert 2 == two.events[0].details["votes"]
    alarms.judge({"d1.co": 5.0, "d2.co": 5.0, "d3.co": 5.0}, 3000)
    alarms.fault("d3:comm_lost", True, 4000, {})
    assert [("rule:co_confirmed", "raised")] == transitions(
        alarms.judge({"d1.co": 80.0, "d2.co": 5.0}, 5000))


def test_alarm_anomaly_on_a_step_after_stable_readings() -> None:
    """A short step after stable readings is an anomaly, which ends once they are stable
    again."""
    spec = site(ChannelSpec("vent.voc", "vent", "ppm", anomaly=True))
    alarms = engine(spec)
    seen = []
    for k in range(4600):
        value = 25.0 if 3500 <= k < 3510 else 1.0 + 0.01 * math.sin(k)
        seen += [(k, *x) for x in transitions(alarms.judge({"vent.voc": value},
                                                           1_000_000 + k * 1000))]
        if k == 3510:
            assert ["anomaly"] == [a.cls for a in alarms.active.values()]
    assert [(3500, "vent.voc:anomaly", "raised"),
            (3900, "vent.voc:anomaly", "returned_to_normal")] == seen


def test_alarm_snapshot_restores_every_kernel() -> None:
    """Timers, windows and models continue after a restart from the stored snapshot."""
    spec = site(ChannelSpec("gas1.co", "gas1", "ppm",
                            (LimitSpec("gas1.co", 1, "above", 24.0, 1.0, "ppm",
                                       on_delay_s=30.0),),
                            exposure=ExposureSpec(25.76, 17.17, max_gap_s=5.0)))
    first = engine(spec)
    for second in range(0, 600, 5):
        first.judge({"gas1.co": 60.0 if second >= 590 else 0.0}, 10**9 + second * 1000)
    second = engine(spec)
    second.restore(first.snapshot())
    assert first.exposure.state()["avg_ring"].tolist() == \
        second.exposure.state()["avg_ring"].tolist()
    # the on-delay started before the restart completes after it
    assert [("gas1.co:above:1", "raised")] == transitions(
        second.judge({"gas1.co": 60.0}, 10**9 + 620 * 1000))


def _twa_after_a_clock_step(step_s: int, kernels_on_wall: bool) -> float:
    """CO at 20 ppm for 7 hours, polled every minute, with the wall clock stepped by
    ``step_s`` one hour in (NTP on a Pi without RTC): the moving 8-hour TWA at the end.
    The kernels run on the jump-free clock unless ``kernels_on_wall``."""
    alarms = engine(site(ChannelSpec("gas1.co", "gas1", "ppm",
                                     exposure=ExposureSpec(None, 17.17, max_gap_s=60.0))))
    for minute in range(7 * 60):
        wall_ms = 1_000_000_000 + (minute * 60 + (step_s if minute >= 60 else 0)) * 1000
        t = None if kernels_on_wall else 1_000_000.0 + minute * 60
        alarms.judge({"gas1.co": 20.0}, wall_ms, t)
    return float(alarms.exposure.twa[0])


@pytest.mark.parametrize("step_s", [-7200, 7200])
def test_a_wall_clock_step_does_not_move_exposure_windows(step_s: int) -> None:
    """Kernels on the monotonic-based clock: a 2 h step of the wall clock leaves the TWA
    as it is (20 ppm × 7 h / 8 h = 17.5). On the wall clock, a step forward would push
    the first hour out of the 8-hour window and understate the exposure."""
    steady = _twa_after_a_clock_step(0, kernels_on_wall=False)
    assert steady == pytest.approx(17.5, abs=0.1)
    assert steady == _twa_after_a_clock_step(step_s, kernels_on_wall=False)
    if step_s > 0:
        assert _twa_after_a_clock_step(step_s, kernels_on_wall=True) < steady - 2
