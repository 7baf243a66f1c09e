"""The one place for numba compile options, so that no kernel picks its own, and the
one place that decides whether the kernels are compiled at all.

fastmath stays off: it lets LLVM assume that no value is NaN, and a NaN (a
missing or failed reading) must never be mistaken for a safe one.

The numba runtime (NRT) is off: it reference-counts every array a kernel touches with
atomic operations, on each call and each helper call, which was a third of the time of
a cycle. Kernels therefore allocate nothing: their callers pass every array in.

Numba's on-disk cache is keyed on each kernel's own source file, not on this one:
after changing these options, clear the caches (``__pycache__/*.nb[ic]``).

Where numba cannot run (no wheel: 32-bit Raspberry Pi OS; an LLVM that does not
load or compile), ``njit`` leaves each kernel as the plain Python it is written in:
the same statements, run by the interpreter, far slower but with the same results
(tests/unit/test_jit_fallback.py). ``UNAVAILABLE`` then says why; the daemon raises a
fault and flags it in health, so that nobody mistakes a slow gateway for a sound one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

JIT = {"cache": True, "nogil": True, "fastmath": False, "_nrt": False}
SUPPORTED = ("Linux on x86_64 or aarch64 (64-bit Raspberry Pi OS, Debian bookworm) with "
             "CPython 3.11, where numba has wheels")


def _probe(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def _numba() -> tuple[Callable[..., Any] | None, str | None]:
    """Numba's njit if it imports and compiles, else None and why."""
    try:
        from numba import njit

        if njit(**JIT)(_probe)(4) != 6:
            return None, "numba compiled a wrong result"
    except Exception as exc:  # no wheel, a broken LLVM, a read-only cache: any of them
        return None, f"{type(exc).__name__}: {exc}"
    return njit, None


_NJIT, UNAVAILABLE = _numba()


def njit(**options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """numba.njit with these options; without numba, the function unchanged."""
    if _NJIT is None:
        return lambda function: function
    return _NJIT(**options)
