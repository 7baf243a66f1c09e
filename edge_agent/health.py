"""The agent's own vital signs, for `health` and `edge-agent status`: how late the
event loop runs, how much CPU the process takes, and whether numba's kernels came
from its cache (a cold cache costs seconds at every start, FIELD_NOTES.md §8).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

LAG_PERIOD_S = 0.5


class LoopLag:
    """How late the event loop wakes a sleeper: the last lag and the worst since read."""

    def __init__(self) -> None:
        self.last_ms = 0.0
        self.worst_ms = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + LAG_PERIOD_S
            await asyncio.sleep(LAG_PERIOD_S)
            self.last_ms = max(0.0, (loop.time() - asked) * 1000)
            self.worst_ms = max(self.worst_ms, self.last_ms)

    def report(self) -> dict[str, float]:
        """The figures; the worst starts again from now."""
        figures = {"loop_lag_ms": round(self.last_ms, 2), "loop_lag_worst_ms": round(
            self.worst_ms, 2)}
        self.worst_ms = self.last_ms
        return figures


class CpuMeter:
    """The process's CPU use, in percent of one core, since the previous reading."""

    def __init__(self) -> None:
        self._at = (time.monotonic(), time.process_time())

    def percent(self) -> float:
        now = (time.monotonic(), time.process_time())
        wall, cpu = now[0] - self._at[0], now[1] - self._at[1]
        self._at = now
        return round(100 * cpu / wall, 1) if wall > 0 else 0.0


def numba_cache() -> dict[str, Any]:
    """Where the kernels' cache lives and how many kernels came from it or were compiled."""
    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:  # no numba here: the kernels run as plain Python (core/_jit.py)
        return {"dir": None, "loaded": 0, "compiled": 0, "warm": False}

    hits = misses = 0
    where = None
    for name, module in list(sys.modules.items()):
        if not name.startswith("edge_agent.core."):
            continue
        for kernel in vars(module).values():
            if isinstance(kernel, CPUDispatcher) and kernel.stats.cache_path:
                stats = kernel.stats
                hits += sum(stats.cache_hits.values())
                misses += sum(stats.cache_misses.values())
                where = where or stats.cache_path
    return {"dir": os.environ.get("NUMBA_CACHE_DIR") or where, "loaded": hits,
            "compiled": misses, "warm": hits > 0 and misses == 0}
