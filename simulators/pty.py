"""A serial cable on one machine: two linked pseudo-terminals made by socat."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def pty_pair(folder: Path | None = None) -> Iterator[tuple[str, str]]:
    """Yield (device end, agent end): bytes written to one come out of the other."""
    made = folder is None
    folder = Path(folder or tempfile.mkdtemp(prefix="edge-agent-pty-"))
    folder.mkdir(parents=True, exist_ok=True)
    ends = folder / "device", folder / "agent"
    try:
        proc = subprocess.Popen(["socat", *(f"pty,raw,echo=0,link={end}" for end in ends)],
                                stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        raise RuntimeError("socat is not installed; run `make demo` or "
                           "`sudo apt-get install socat`") from None
    try:
        deadline = time.monotonic() + 5
        while not all(end.exists() for end in ends):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("socat did not make the pseudo-terminals")
            time.sleep(0.01)
        yield str(ends[0]), str(ends[1])
    finally:
        proc.terminate()
        proc.wait(5)
        if made:
            shutil.rmtree(folder, ignore_errors=True)
