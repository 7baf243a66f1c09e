"""The pre-entry gas test of a confined space (GB 30871-2022 §6.3, §6.4)."""

from __future__ import annotations

import datetime

import pytest

from edge_agent.config import SiteConfig, Space
from edge_agent.entry import SpaceChannel, entry_limits, overdue, pre_entry_test
from edge_agent.records import Quality, Sample

NOW = 1_800_000_000_000
VM = 24.05
SPACE = Space(name="manhole-3", detectors=[{"device": "top", "point": "top"}])
CHANNELS = [SpaceChannel(f"top.{name}", "top", gas, unit, 3000)
            for name, gas, unit in [("o2", "o2", "%VOL"), ("co", "co", "ppm"),
                                    ("h2s", "h2s", "ppm"), ("lel", "flammable", "%LEL")]]
CLEAN = {"top.o2": 20.9, "top.co": 1.0, "top.h2s": 0.2, "top.lel": 0.8}


def readings(values: dict[str, float], quality: dict[str, Quality] | None = None,
             age_ms: int = 500) -> dict[str, Sample]:
    return {ch: Sample(ch, NOW - age_ms, v, "", (quality or {}).get(ch, Quality.GOOD))
            for ch, v in values.items()}


def failures(values: dict[str, float], **kwargs) -> dict[str, str]:
    faults, held = kwargs.pop("faults", ()), kwargs.pop("held", None)
    test = pre_entry_test(SPACE, CHANNELS, readings(values, **kwargs), faults, NOW, VM, held)
    assert test.passed == (not [v for v in test.verdicts if v.passed is False])
    return {v.channel: v.reason for v in test.verdicts if v.passed is False}


def test_clean_air_passes() -> None:
    test = pre_entry_test(SPACE, CHANNELS, readings(CLEAN), (), NOW, VM)
    assert test.passed
    assert [v.limit for v in test.verdicts] == ["19.5-21 %VOL", "<= 17.17 ppm",
                                                "<= 7.06 ppm", "<= 10 %LEL"]
    assert test.body()["channels"][0] == {
        "channel": "top.o2", "point": "top", "gas": "o2", "value": 20.9, "unit": "%VOL",
        "limit": "19.5-21 %VOL", "passed": True, "reason": ""}


@pytest.mark.parametrize(("channel", "value", "reason"), [
    ("top.o2", 19.4, "19.4 %VOL is below 19.5"),   # oxygen-deficient
    ("top.o2", 21.3, "21.3 %VOL is above 21"),     # enriched: never ventilate with O2
    ("top.lel", 10.5, "10.5 %LEL is above 10"),    # methane: 0.5 %VOL = 10 %LEL
    ("top.h2s", 7.2, "7.2 ppm is above 7.06"),     # MAC 10 mg/m3
    ("top.co", 17.5, "17.5 ppm is above 17.17"),   # PC-TWA 20 mg/m3
])
def test_each_limit_fails_the_test_with_its_reason(channel: str, value: float,
                                                   reason: str) -> None:
    assert failures({**CLEAN, channel: value}) == {channel: reason}


def test_no_reading_is_no_proof_of_safe_air() -> None:
    values = dict(CLEAN)
    del values["top.co"]
    assert failures(values) == {"top.co": "no fresh reading"}
    assert failures(CLEAN, age_ms=3500) == dict.fromkeys(CLEAN, "no fresh reading")
    assert failures(CLEAN, quality={"top.h2s": Quality.NOT_READY}) == {
        "top.h2s": "sensor warming up (not ready)"}
    assert failures(CLEAN, quality={"top.lel": Quality.COMM_LOST}) == {
        "top.lel": "reading is comm_lost"}
    assert failures(CLEAN, faults={"top:comm_lost", "other:comm_lost"}) == dict.fromkeys(
        CLEAN, "fault top:comm_lost")
    assert failures(CLEAN, faults={"top.co:stuck"}) == {"top.co": "fault top.co:stuck"}


def test_a_channel_out_of_service_or_overdue_cannot_clear_a_space() -> None:
    assert failures(CLEAN, held={"top.co": "out of service (calibration) by Zhao"}) == {
        "top.co": "out of service (calibration) by Zhao"}
    assert failures(CLEAN, held={"top": "calibration overdue"}) == dict.fromkeys(
        CLEAN, "calibration overdue")


def test_the_flammable_limit_follows_the_lel_of_the_gas() -> None:
    # GB 30871-2022 §5.3.2: LEL >= 4 %VOL -> 0.5 %VOL; LEL < 4 %VOL -> 0.2 %VOL.
    propane = SPACE.model_copy(update={"flammable_lel_vol": 2.1})
    assert entry_limits(SPACE, "flammable", "%LEL", VM) == (None, 10.0)
    assert entry_limits(propane, "flammable", "%LEL", VM) == (None, 9.52)
    assert entry_limits(SPACE, "flammable", "%VOL", VM) == (None, 0.5)
    assert entry_limits(SPACE, "h2", "%LEL", VM) == (None, 12.5)  # hydrogen, LEL 4 %VOL
    assert entry_limits(SPACE, "voc", "ppm", VM) is None


def test_a_gas_without_an_entry_limit_is_reported_not_judged() -> None:
    channels = [*CHANNELS, SpaceChannel("top.voc", "top", "voc", "ppm", 3000)]
    test = pre_entry_test(SPACE, channels, readings({**CLEAN, "top.voc": 40.0}), (), NOW, VM)
    assert test.passed
    assert test.verdicts[-1].passed is None
    assert test.verdicts[-1].limit == ""


def test_a_space_without_channels_never_passes() -> None:
    assert not pre_entry_test(SPACE, [], {}, (), NOW, VM).passed


def test_a_detector_due_for_calibration_or_bump_cannot_clear_the_space() -> None:
    site = SiteConfig.model_validate({
        "gateway_id": "gw", "site_id": "s", "mqtt": {"host": "localhost"},
        "buses": [{"name": "b", "type": "modbus-tcp", "host": "127.0.0.1", "port": 502}],
        "devices": [{"name": "top", "bus": "b", "unit_id": 1, "profile": "generic_4gas",
                     "calibrated": datetime.date(2026, 6, 1), "bump_tested":
                     datetime.date(2026, 11, 1)}]})
    assert {} == overdue(SPACE, site, datetime.date(2026, 11, 27))  # due 2026-11-28
    assert {"top": "calibration due since 2026-11-28 (calibrated 2026-06-01)"} == overdue(
        SPACE, site, datetime.date(2026, 11, 28))
    strict = SPACE.model_copy(update={"bump_max_days": 7})
    assert {"top": "bump test overdue: last 2026-11-01, at most every 7 days"} == overdue(
        strict, site, datetime.date(2026, 11, 9))
    assert {} == overdue(strict, site, datetime.date(2026, 11, 8))
