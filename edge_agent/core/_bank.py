"""Checks shared by the kernels' wrapper classes: parameters per channel, input rows and
series, and saved states. Plain Python, run once per call, never in a kernel.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def per_channel(name: str, value: object, dtype: type, n: int) -> np.ndarray:
    array = np.array(value, dtype=dtype)
    if array.ndim == 0:
        array = np.full(n, array, dtype=dtype)
    if array.shape != (n,):
        raise ValueError(f"{name}: expected a scalar or {n} entries (one per channel), "
                         f"got shape {array.shape}")
    return array


def check_row(name: str, value: object, dtype: type, n: int) -> None:
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != (n,):
        got = (f"{value.dtype}{list(value.shape)}" if isinstance(value, np.ndarray)
               else type(value).__name__)
        raise ValueError(f"{name}: expected a {np.dtype(dtype)} array of shape ({n},), "
                         f"got {got}")


def check_series(x: object, t: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(x, np.ndarray) or x.dtype != np.float64 or x.ndim != 2 or (
            x.shape[1] != n):
        raise ValueError(f"x: expected a float64 array of shape (T, {n})")
    if not isinstance(t, np.ndarray) or t.dtype != np.float64 or t.shape != x.shape[:1]:
        raise ValueError(f"t: expected a float64 array of shape ({x.shape[0]},), one time "
                         "per row of x")
    if not np.isfinite(t).all():
        raise ValueError("t: every time must be finite (seconds)")
    return np.ascontiguousarray(x), np.ascontiguousarray(t)


def load_state(bank: object, state: Mapping[str, np.ndarray]) -> None:
    """Copy a saved state into the bank's arrays, after checking all of it."""
    names = type(bank).STATE
    missing = [name for name in names if name not in state]
    extra = [name for name in state if name not in names]
    if missing or extra:
        raise ValueError(f"state: missing {missing}, unknown {extra}")
    for name in names:
        own, saved = getattr(bank, name), np.asarray(state[name])
        if saved.size == 0 == own.size:
            saved = saved.reshape(own.shape).astype(own.dtype)  # no pairs: [] from SQL
        if saved.shape != own.shape or not np.can_cast(saved.dtype, own.dtype, "same_kind"):
            raise ValueError(f"state[{name!r}]: expected {own.dtype}{list(own.shape)}, got "
                             f"{saved.dtype}{list(saved.shape)} (saved for another layout?)")
    for name in names:
        getattr(bank, name)[...] = state[name]
