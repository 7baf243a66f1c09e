"""One agent per buffer: a lock file next to the buffer, held while the agent runs.

A second agent on the same buffer would double every sample; a technician's
command that opens the buses while the agent polls them would break both
(DESIGN.md: the CLI never opens a bus a running daemon holds).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from edge_agent.buffer import BufferUnavailable
from edge_agent.errors import StartupError


def lock_path(buffer_path: Path) -> Path:
    return buffer_path.with_name(buffer_path.name + ".lock")


def hold(buffer_path: Path) -> IO[str]:
    """Take the lock for this process; StartupError naming the holder if taken."""
    path = lock_path(buffer_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+")
    except OSError as exc:
        raise BufferUnavailable(f"cannot open the buffer {buffer_path}: cannot create its "
                                f"lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StartupError(f"an agent (pid {holder}) already runs with the buffer "
                           f"{buffer_path}; stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def holder(buffer_path: Path) -> int | None:
    """The pid of the agent running with this buffer, or None."""
    path = lock_path(buffer_path)
    if not path.exists():
        return None
    with path.open() as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
