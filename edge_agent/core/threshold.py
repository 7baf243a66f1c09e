"""Two-level alarm limits with a clearing deadband, for a whole poll cycle at once.

Each limit watches one channel. A limit *above* a setpoint is reached when the
value is >= the setpoint (toxic and flammable gases, high O2); a limit *below*
when the value is <= the setpoint (low O2). Once active, a limit clears only
when the value is back past the setpoint by more than its deadband, so a
reading hovering at the setpoint does not chatter (OPC UA Part 9 B.1.5, clearing
deadband). A NaN reading (failed or missing) changes nothing: the limit keeps
its state, and the missing reading is reported as a fault elsewhere.

Arrays, one entry per limit (length L), channel values of length C:
    values    float64[C]  this cycle's reading per channel, NaN where none
    channel   int64[L]    index into ``values`` of the channel the limit watches
    setpoint  float64[L]  in the channel's unit
    above     bool[L]     True for a limit above its setpoint, False for one below
    deadband  float64[L]  >= 0, in the channel's unit
    active    bool[L]     state, updated in place
    changed   bool[L]     output: True where ``active`` flipped in this call
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from edge_agent.core._jit import JIT


@njit(**JIT)
def threshold_step(values, channel, setpoint, above, deadband, active, changed):
    """Advance every limit by one cycle; return how many changed.

    >>> import numpy as np
    >>> values = np.array([25.0, 19.0])           # CO ppm, O2 %VOL
    >>> active = np.zeros(2, dtype=np.bool_); changed = np.zeros(2, dtype=np.bool_)
    >>> threshold_step(values, np.array([0, 1]), np.array([24.0, 19.5]),
    ...                np.array([True, False]), np.array([1.0, 0.2]), active, changed)
    2
    >>> active.tolist()
    [True, True]
    """
    n = 0
    for i in range(setpoint.shape[0]):
        x = values[channel[i]]
        changed[i] = False
        if math.isnan(x):
            continue
        if above[i]:
            now = x >= setpoint[i] - deadband[i] if active[i] else x >= setpoint[i]
        else:
            now = x <= setpoint[i] + deadband[i] if active[i] else x <= setpoint[i]
        if now != active[i]:
            active[i] = now
            changed[i] = True
            n += 1
    return n


def threshold_twin(value: float, setpoint: float, direction: str, deadband: float,
                   active: bool) -> bool:
    """Plain-Python statement of the rule for one limit: its next state."""
    if math.isnan(value):
        return active
    if direction == "above":
        return value >= setpoint - deadband if active else value >= setpoint
    return value <= setpoint + deadband if active else value <= setpoint


def new_state(n_limits: int) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed ``active`` and ``changed`` arrays for ``n_limits`` limits."""
    return np.zeros(n_limits, dtype=np.bool_), np.zeros(n_limits, dtype=np.bool_)
