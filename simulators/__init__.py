"""Simulated field devices built from the same drivers/ profiles as the agent.

Never imports the daemon: the simulators stand where real devices would.
"""

from simulators.device import Scenario, SimulatedDevice, load_scenario
from simulators.serial import FrameSimulator, LineSimulator
from simulators.server import ModbusRtuSimulator, ModbusTcpSimulator, transaction_seconds

__all__ = ["FrameSimulator", "LineSimulator", "ModbusRtuSimulator", "ModbusTcpSimulator",
           "Scenario", "SimulatedDevice", "load_scenario", "transaction_seconds"]
