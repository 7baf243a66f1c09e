"""Field acquisition: read plans from profiles, and the pollers of each bus."""

from edge_agent.acquisition.modbus import FAULTS, ModbusBus, PollResult
from edge_agent.acquisition.plan import DevicePlan, ReadBlock, plan_device

__all__ = ["FAULTS", "DevicePlan", "ModbusBus", "PollResult", "ReadBlock", "plan_device"]
