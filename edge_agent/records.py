"""The records that flow down the pipeline: samples from the buses, events from the
alarm logic. Plain data, shared by acquisition, alarms, buffer and uplink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

import numpy as np


class Quality(IntEnum):
    """How far a sample can be trusted; stored as the integer, published as the name.

    Only good and out_of_range samples carry a value.
    """

    GOOD = 0
    BAD = 1  # the device answered, but with something that is not a reading
    STALE = 2  # the value did not update when it should have
    COMM_LOST = 3  # the device did not answer
    OUT_OF_RANGE = 4  # a reading outside the sensor's measuring range (kept, and judged)
    DEVICE_FAULT = 5  # the device reports a fault of this sensor
    NOT_READY = 6  # the device reports that the sensor is warming up or not yet valid

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one channel (``device.register``) at one time."""

    channel: str
    ts_ms: int  # wall clock, milliseconds since the epoch
    value: float | None
    unit: str
    quality: Quality = Quality.GOOD


EventClass = Literal["alarm", "fault", "anomaly", "entry"]  # entry: confined-space entry


@dataclass(frozen=True, slots=True)
class Event:
    """One transition of an alarm's or a fault's lifecycle.

    ``alarm_id`` is the same for every transition of one episode (raised ...
    returned to normal), so the platform can rebuild its history.
    """

    ts_ms: int
    cls: EventClass
    transition: str  # raised, returned_to_normal, ...
    alarm_id: str
    key: str  # what the alarm is about, stable across episodes: "gas1.co:above:1"
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The event as stored and published (without seq, which the buffer assigns)."""
        return {"id": self.alarm_id, "ts": self.ts_ms, "class": self.cls,
                "transition": self.transition, "key": self.key, **self.details}


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    """An alarm or fault that is raised and not yet over; survives a restart."""

    key: str
    alarm_id: str
    cls: str
    raised_ms: int


# The alarm core's saved state: kernel -> (row keys, arrays whose first axis follows
# the keys), so rows find their limit or channel again after a config change.
CoreState = dict[str, tuple[list[str], dict[str, np.ndarray]]]
