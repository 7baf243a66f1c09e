"""The last hour of every channel, for the local web view's trend plots.

Delivered samples leave the buffer at the broker's PUBACK, so the trend keeps its
own summary there: per channel and 10-s bucket, the lowest, highest and last
fresh value and the worst alarm level the channel was in. An hour of a channel is
360 rows; it survives a restart with the buffer, and a gas peak shorter than a
bucket still shows (as the bucket's high).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from edge_agent.records import Quality, Sample

BUCKET_MS = 10_000
KEEP_MS = 3_600_000 + BUCKET_MS
_FRESH = (Quality.GOOD, Quality.OUT_OF_RANGE)


class Bucket(NamedTuple):
    channel: str
    unit: str
    bucket_ms: int  # the bucket's start
    lo: float | None  # None: no fresh value in the bucket (a gap in the plot)
    hi: float | None
    last: float | None
    level: int  # the worst alarm level in it; 0: none


class Trend:
    """The buckets still filling, one per channel; closed ones go to the buffer."""

    def __init__(self) -> None:
        self._open: dict[str, Bucket] = {}
        self._closed: list[Bucket] = []

    def follow(self, samples: Iterable[Sample], levels: dict[str, int]) -> None:
        """Add a poll's samples; ``levels``: the alarm level each channel is in now."""
        for s in samples:
            start = s.ts_ms - s.ts_ms % BUCKET_MS
            b = self._open.get(s.channel)
            if b is not None and b.bucket_ms != start:
                self._closed.append(b)
                b = None
            level = levels.get(s.channel, 0)
            value = s.value if s.quality in _FRESH and s.value is not None and math.isfinite(
                s.value) else None
            if b is None:
                b = Bucket(s.channel, s.unit, start, value, value, value, level)
            elif value is not None:
                b = b._replace(lo=value if b.lo is None else min(b.lo, value),
                               hi=value if b.hi is None else max(b.hi, value), last=value,
                               level=max(b.level, level))
            else:
                b = b._replace(level=max(b.level, level))
            self._open[s.channel] = b

    def take_closed(self, everything: bool = False) -> list[Bucket]:
        """The closed buckets; ``everything``: the filling ones too (at a stop; the buffer
        merges a bucket stored twice).
        """
        if everything:
            self._closed += self._open.values()
            self._open = {}
        closed, self._closed = self._closed, []
        return closed

    def filling(self, channel: str) -> Bucket | None:
        return self._open.get(channel)
