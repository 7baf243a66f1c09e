"""The alarm and anomaly core: numba kernels over per-channel (or per-limit) state
arrays, each with a plain-Python twin written from the rule. Pure: no I/O, no
clock, no logging, no project imports beyond this package.

Conventions: ``x`` is one poll cycle's reading per channel (NaN: none), ``t`` its
time in seconds; state lives in arrays owned by a thin wrapper class that checks
inputs once and hands its state out for persistence (``state()`` / ``load()``).
"""

from edge_agent.core.threshold import LimitTwin, ThresholdBank, threshold_step

# kernel name -> (compiled step, plain-Python twin); the conformance tests walk this.
KERNELS = {"threshold": (threshold_step, LimitTwin)}

__all__ = ["KERNELS", "LimitTwin", "ThresholdBank", "threshold_step"]
