"""From the core's kernels to alarm, fault and anomaly events, each episode with its own id.

The engine holds every rule of the site (limits on values and rates, exposure,
sensor faults, anomaly scores, combined rules), steps the kernels on each poll
result, and turns every state change into an event: ``raised`` when a condition
starts, ``returned_to_normal`` when it ends, with the same id. Active alarms come
back from the buffer after a restart with the id they were raised with, and the
kernels' state comes back with them.
"""

from edge_agent.alarms.engine import AlarmEngine, Outcome
from edge_agent.alarms.specs import (
    ChannelSpec,
    ExposureSpec,
    FaultSpec,
    LimitSpec,
    PairSpec,
    RuleSpec,
    SiteSpec,
    TermSpec,
)

__all__ = ["AlarmEngine", "ChannelSpec", "ExposureSpec", "FaultSpec", "LimitSpec", "Outcome",
           "PairSpec", "RuleSpec", "SiteSpec", "TermSpec"]
