"""Time for the alarm kernels that NTP cannot move.

A Raspberry Pi has no real-time clock: it boots with the time it saved at shutdown
(or 1970), and the wall clock steps by hours when NTP first syncs, or backwards
when a bad server answers. Exposure windows (STEL 15 min, TWA 8 h), rates of rise
and delays must not jump with it, so the kernels run on the wall clock as read
at start, advanced by the monotonic clock. Samples and events keep the wall time,
which is what the platform shows; how far it has moved from ours is reported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path

TIME_ERROR = 5  # adjtimex: the kernel's clock is not synchronised (Linux timex.h)


# Rehearsals and tests: seconds to add to both clocks, read from this file, so a job
# of 24 hours runs in seconds through the unchanged daemon (tests/integration/
# test_jobs.py). Never set in service: the unit file does not, and the agent says so
# loudly in its log when it is set.
SHIFT_FILE = os.environ.get("EDGE_AGENT_CLOCK_SHIFT_FILE")
_shift: tuple[float, float] = (-1.0, 0.0)  # (the file's mtime, its seconds)


def shift_s() -> float:
    """How far the rehearsal clock is ahead: 0 in service."""
    global _shift
    if SHIFT_FILE is None:
        return 0.0
    mtime = Path(SHIFT_FILE).stat().st_mtime_ns
    if mtime != _shift[0]:
        _shift = (mtime, float(Path(SHIFT_FILE).read_text() or 0))
    return _shift[1]


def now_ms() -> int:
    """The wall clock, in ms since the epoch: what samples and events carry."""
    return time.time_ns() // 1_000_000 + round(shift_s() * 1000)


def monotonic() -> float:
    """The monotonic clock that poll results carry (the kernels' time)."""
    return time.monotonic() + shift_s()


class AgentClock:
    """``at(mono)``: the kernels' seconds for a monotonic reading; ``step_s()``: how
    far the wall clock has moved from them since start (an NTP step, or drift).

    >>> wall, mono = [1000.0], [5.0]
    >>> clock = AgentClock(lambda: wall[0], lambda: mono[0])
    >>> mono[0], wall[0] = 65.0, 1060.0 - 7200   # a minute later, NTP stepped back 2 h
    >>> clock.at(mono[0]), round(clock.step_s())
    (1060.0, -7200)
    """

    def __init__(self, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self._wall, self._mono = wall, mono
        self._wall0, self._mono0 = wall(), mono()

    def at(self, mono: float) -> float:
        return self._wall0 + (mono - self._mono0)

    def now(self) -> float:
        return self.at(self._mono())

    def step_s(self) -> float:
        return self._wall() - self.now()


@functools.cache
def _adjtimex() -> Callable[[ctypes.Array[ctypes.c_char]], int] | None:
    """The C library's adjtimex, looked up once (find_library may run ldconfig); or None."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").adjtimex
    except (OSError, AttributeError):
        return None


def synchronised() -> bool | None:
    """Whether the kernel says its clock is synchronised (NTP); None if it cannot say.

    Cheap (one system call): the daemon asks after every poll.
    """
    adjtimex = _adjtimex()
    if adjtimex is None:
        return None
    state = adjtimex(ctypes.create_string_buffer(512))  # struct timex, modes 0: only read
    return None if state < 0 else state != TIME_ERROR
