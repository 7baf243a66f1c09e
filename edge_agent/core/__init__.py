"""The alarm and anomaly core: numba kernels over per-limit state arrays, each with
a plain-Python twin. Pure: no I/O, no clock, no logging, no project imports
beyond this package.
"""

from edge_agent.core.threshold import new_state, threshold_step, threshold_twin

# kernel name -> (compiled step, plain-Python twin); the conformance tests walk this.
KERNELS = {"threshold": (threshold_step, threshold_twin)}

__all__ = ["KERNELS", "new_state", "threshold_step", "threshold_twin"]
