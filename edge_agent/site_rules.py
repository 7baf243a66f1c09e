"""From the site config to what the alarm engine judges the site by (its SiteSpec):
limits (defaults applied), rates, exposure, sensor faults, anomaly, combined rules
and redundant pairs. The daemon and the offline replay (`edge-agent detect`) both
build their engine here, so both judge a series the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge_agent.alarms import (
    ChannelSpec,
    ExposureSpec,
    FaultSpec,
    LimitSpec,
    PairSpec,
    RuleSpec,
    SiteSpec,
    TermSpec,
)
from edge_agent.config import ChannelRules, Exposure, LoadedConfig
from edge_agent.config.defaults import default_exposure

# Faults of one sensor, raised while its samples have one of these qualities
# (the daemon judges the qualities; the engine only needs the keys).
QUALITY_FAULTS = ("sensor_fault", "out_of_range")
RULE_RATE_WINDOW_S = 120.0  # for channels a rule watches the trend of, without a rate


def site_spec(loaded: LoadedConfig, extra_fault_keys: Iterable[str] = ()) -> SiteSpec:
    """The engine's view of a loaded site config."""
    site = loaded.site
    trended = {t.channel for rule in site.rules for t in rule.when
               if t.rising_per_min is not None or t.falling_per_min is not None}
    channels = tuple(_channel(rules, site, rules.channel in trended)
                     for rules in loaded.channels())
    rules = tuple(RuleSpec(r.name, r.level, r.within_s, tuple(_term(t) for t in r.when),
                           r.description, r.votes) for r in site.rules)
    pairs = tuple(PairSpec(p.channels[0], p.channels[1], p.tolerance, p.duration_s)
                  for p in site.redundant)
    fault_keys = [f"{c.name}:{f}" for c in channels for f in QUALITY_FAULTS]
    return SiteSpec(channels, rules, pairs, tuple(fault_keys) + tuple(extra_fault_keys))


def _channel(rules: ChannelRules, site, trended: bool) -> ChannelSpec:
    point, settings = rules.point, rules.device.channels.get(rules.point.name)
    unit = point.unit
    limits = [LimitSpec(rules.channel, x.level, x.direction, x.setpoint, x.deadband, unit,
                        x.on_delay_s, x.off_delay_s, x.latch) for x in rules.limits]
    rate = settings.rate if settings else None
    if rate:
        limits += [LimitSpec(rules.channel, x.level, "rise" if x.rise_per_min else "fall",
                             x.rise_per_min or x.fall_per_min, 0.0, unit, x.on_delay_s)
                   for x in rate.limits]
    window = rate.window_s if rate else (RULE_RATE_WINDOW_S if trended else None)
    anomaly = settings.anomaly if settings and settings.anomaly is not None else (
        site.anomaly.channels == "all"
        or (site.anomaly.channels == "gas" and point.gas is not None))
    faults = settings.faults if settings else None
    return ChannelSpec(
        rules.channel, rules.device.name, unit, tuple(limits), window,
        _exposure(settings.exposure if settings else None, point, rules, site),
        FaultSpec(faults.stuck_s, faults.stuck_epsilon, faults.max_rate_per_s, faults.gap_s)
        if faults else None, anomaly, rules.device.poll_interval_s)


def _exposure(setting: Exposure | bool | None, point, rules: ChannelRules,
              site) -> ExposureSpec | None:
    """The channel's own exposure settings; without any, the GBZ 2.1 limits of its gas
    (unless the site turned defaults off); ``exposure = false``: none.
    """
    if setting is False or (setting is None and site.alarm_defaults.scheme == "none"):
        return None
    stel, twa = default_exposure(point.gas, point.unit, site.alarm_defaults.molar_volume_l)
    if setting is None:
        if stel is None and twa is None:
            return None
        setting = Exposure()
    # A reading is held for at most twice the poll interval (SAFETY_REFERENCE.md §5.4).
    gap = max(setting.max_gap_s, rules.device.poll_interval_s)
    shift = None
    if setting.shift_start:
        hours, minutes = setting.shift_start.split(":")
        shift = int(hours) * 60 + int(minutes)
    return ExposureSpec(setting.stel or stel, setting.twa or twa, setting.twa_mode, gap, shift)


def _term(term) -> TermSpec:
    for kind in ("above", "below"):
        if getattr(term, kind) is not None:
            return TermSpec(term.channel, kind, getattr(term, kind))
    if term.rising_per_min is not None:
        return TermSpec(term.channel, "rising", term.rising_per_min)
    return TermSpec(term.channel, "falling", term.falling_per_min)
