"""Alarm-management figures of the site, computed on the gateway.

From ALARM_MANAGEMENT.md §1.3-1.4 and §6.16 (EEMUA 191 and ISA-18.2 as quoted there):

- ``alarms_10min``: alarms raised in the last 10 minutes (target about 1);
- ``flood``: more than 10 of them (a flood, per operator position);
- ``stale``: alarms active for more than 24 hours (target 0);
- ``chattering``: per channel, its activations in the last 60 s when there are 3 or
  more (target: none);
- ``mean_ack_s``, ``mean_clear_s`` and ``mean_close_s``: from raised to acknowledged,
  to returned to normal, and to closed (handled, edge_agent/lifecycle.py), over the
  alarms since the agent started (null before the first).

Only class ``alarm`` counts: faults and anomalies are not operator alarms. The
figures are fed by the event loop and read by the uplink thread (``health``).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from edge_agent.records import ActiveAlarm, Event

WINDOW_MS = 600_000
FLOOD_OVER = 10
CHATTER_MS, CHATTER_COUNT = 60_000, 3
STALE_MS = 24 * 3_600_000


class AlarmFigures:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._raised: collections.deque[int] = collections.deque()  # ts of the last 10 min
        self._by_channel: dict[str, collections.deque[int]] = {}  # ts of the last 60 s
        self._started: dict[str, int] = {}  # alarm id -> raised ts, until it is over
        self._ack = [0, 0.0]  # count, total seconds
        self._clear = [0, 0.0]
        self._close = [0, 0.0]

    def follow(self, events: Iterable[Event]) -> None:
        with self._lock:
            for e in events:
                if e.cls != "alarm":
                    continue
                if e.transition == "closed":
                    self._close[0] += 1
                    self._close[1] += e.details["open_s"]
                if e.transition == "raised":
                    self._raised.append(e.ts_ms)
                    channel = e.key.split(":", 1)[0]
                    self._by_channel.setdefault(channel, collections.deque()).append(e.ts_ms)
                    self._started[e.alarm_id] = e.ts_ms
                elif e.alarm_id in self._started:
                    took_s = (e.ts_ms - self._started[e.alarm_id]) / 1000
                    if e.transition == "acknowledged":
                        self._ack[0] += 1
                        self._ack[1] += took_s
                    elif e.transition in ("returned_to_normal", "withdrawn"):
                        self._clear[0] += 1
                        self._clear[1] += took_s
                        del self._started[e.alarm_id]

    def report(self, now_ms: int, active: Mapping[str, ActiveAlarm]) -> dict[str, Any]:
        with self._lock:
            while self._raised and self._raised[0] <= now_ms - WINDOW_MS:
                self._raised.popleft()
            chattering = {}
            for channel, times in list(self._by_channel.items()):
                while times and times[0] <= now_ms - CHATTER_MS:
                    times.popleft()
                if not times:
                    del self._by_channel[channel]
                elif len(times) >= CHATTER_COUNT:
                    chattering[channel] = len(times)
            return {
                "alarms_10min": len(self._raised),
                "flood": len(self._raised) > FLOOD_OVER,
                "stale": sum(1 for a in active.values()
                             if a.cls == "alarm" and now_ms - a.raised_ms > STALE_MS),
                "chattering": chattering,
                "mean_ack_s": _mean(self._ack),
                "mean_clear_s": _mean(self._clear),
                "mean_close_s": _mean(self._close),
            }


def _mean(count_total: list) -> float | None:
    count, total = count_total
    return round(total / count, 1) if count else None
