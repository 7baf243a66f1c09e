"""Stopping asyncio tasks for certain.

CPython 3.11 (Debian bookworm's Python) has a race in ``asyncio.wait_for``: when the
awaited future completes in the same loop iteration as the task is cancelled, it
returns the result and the cancellation is lost (fixed in 3.12, cpython gh-86296).
pymodbus waits for every answer that way, so a bus task cancelled just as its device
answers goes on polling, and an agent asked to stop would never stop. Seen in
``bench/fleet.py`` with 500 agents: about one run in two hung on shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task], retry_s: float = 1.0) -> None:
    """Cancel ``tasks`` and wait until all have ended, cancelling again every
    ``retry_s`` those that swallowed the cancellation.
    """
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=retry_s)
