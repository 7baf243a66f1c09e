"""systemd's service watchdog (sd_notify), fed only while the pipeline really moves.

The agent tells systemd READY=1 once it polls, and WATCHDOG=1 at half the unit's
WatchdogSec, but only after a tick sent down the record queue has come back
committed: that proves the event loop runs, the record task judges and the
buffer writer commits. A bus task that died is restarted by supervision, so it
does not stop the pings; a pipeline stuck anywhere does, and systemd restarts it.
Without NOTIFY_SOCKET (not under systemd) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


def notify(message: str) -> bool:
    """Send one sd_notify message; False when not run by systemd or the send failed."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify_failed", error=str(exc))
        return False
    return True


def interval_s() -> float | None:
    """Half the watchdog timeout systemd asked for, or None when there is none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def feed(tick: Callable[[float], Awaitable[bool]], every_s: float) -> None:
    """Ping systemd every ``every_s`` while ``tick(timeout)``, a trip through the pipeline,
    comes back in time; say once in the log when it stops doing so, and when it resumes.
    """
    loop = asyncio.get_running_loop()
    withheld = False
    while True:
        started = loop.time()
        if await tick(every_s):
            notify("WATCHDOG=1")
            if withheld:
                log.info("watchdog_resumed")
            withheld = False
        elif not withheld:
            log.error("watchdog_withheld", reason=f"the pipeline did not commit within "
                      f"{every_s:g} s; systemd restarts the agent if this lasts")
            withheld = True
        await asyncio.sleep(max(0.0, every_s - (loop.time() - started)))
