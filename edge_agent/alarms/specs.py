"""What the alarm engine judges a site by: plain data, built from the site config by
``edge_agent.site_rules`` so that the engine itself knows nothing of the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One alarm limit on a channel's value (``above``/``below``) or on its rate of
    change in units per minute (``rise``/``fall``).
    """

    channel: str
    level: int
    direction: str  # "above" | "below" | "rise" | "fall"
    setpoint: float  # for rise and fall: units per minute, > 0
    deadband: float
    unit: str
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0
    latch: bool = False

    @property
    def key(self) -> str:
        return f"{self.channel}:{self.direction}:{self.level}"

    @property
    def on_rate(self) -> bool:
        return self.direction in ("rise", "fall")


@dataclass(frozen=True, slots=True)
class ExposureSpec:
    stel: float | None  # in the channel's unit; None: no STEL rule
    twa: float | None
    twa_mode: str = "moving8h"
    max_gap_s: float = 10.0
    shift_start_min: int | None = None  # local minute of the day a shift starts


@dataclass(frozen=True, slots=True)
class FaultSpec:
    stuck_s: float | None = None
    epsilon: float = 0.0
    max_rate_per_s: float | None = None
    gap_s: float | None = None


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One published value and every rule on it."""

    name: str  # device.value
    device: str
    unit: str
    limits: tuple[LimitSpec, ...] = ()
    rate_window_s: float | None = None  # None: no rate of change kept
    exposure: ExposureSpec | None = None
    faults: FaultSpec | None = None
    anomaly: bool = False
    poll_interval_s: float = 1.0  # sizes the rate window's ring


@dataclass(frozen=True, slots=True)
class TermSpec:
    channel: str
    kind: str  # "above" | "below" | "rising" | "falling"
    value: float  # a level, or units per minute


@dataclass(frozen=True, slots=True)
class RuleSpec:
    name: str
    level: int
    within_s: float
    terms: tuple[TermSpec, ...]
    description: str = ""
    votes: int | None = None  # k of the n terms; None: all of them

    @property
    def key(self) -> str:
        return f"rule:{self.name}"


@dataclass(frozen=True, slots=True)
class PairSpec:
    """Two redundant sensors that should read alike within ``tolerance``."""

    a: str
    b: str
    tolerance: float
    duration_s: float


@dataclass(frozen=True)
class SiteSpec:
    channels: tuple[ChannelSpec, ...]
    rules: tuple[RuleSpec, ...] = ()
    pairs: tuple[PairSpec, ...] = ()
    fault_keys: tuple[str, ...] = field(default=())  # raised by the caller: device, task

    def limits(self) -> list[LimitSpec]:
        return [limit for channel in self.channels for limit in channel.limits]
