"""Field acquisition: read plans from profiles, transports, and the poller of each bus."""

from collections.abc import Callable

from edge_agent.acquisition.modbus import ModbusTransport
from edge_agent.acquisition.plan import DevicePlan, ReadBlock, plan_device
from edge_agent.acquisition.scheduler import (
    FAULTS,
    BusPoller,
    BusStats,
    NoAnswer,
    PollResult,
    Refused,
    Transport,
)
from edge_agent.acquisition.serial import SerialTransport
from edge_agent.config import (
    Bus,
    Device,
    ModbusRtuBus,
    ModbusRtuOverTcpBus,
    ModbusTcpBus,
    SerialBus,
)
from edge_agent.profiles import Profile

# bus type -> the transport that speaks on it
TRANSPORTS: dict[type, Callable[[Bus], Transport]] = {
    ModbusTcpBus: ModbusTransport,
    ModbusRtuBus: ModbusTransport,
    ModbusRtuOverTcpBus: ModbusTransport,
    SerialBus: SerialTransport,
}


def bus_poller(bus: Bus, devices: list[tuple[Device, Profile]],
               emit: Callable[[PollResult], None]) -> BusPoller:
    """The poller of ``bus`` with the transport its type needs."""
    return BusPoller(bus.name, TRANSPORTS[type(bus)](bus), devices, emit,
                     comm_loss_after=bus.comm_loss_after, backoff_max_s=bus.backoff_max_s,
                     gap_s=bus.gap_ms / 1000)


__all__ = [
    "FAULTS",
    "TRANSPORTS",
    "BusPoller",
    "BusStats",
    "DevicePlan",
    "ModbusTransport",
    "NoAnswer",
    "PollResult",
    "ReadBlock",
    "Refused",
    "SerialTransport",
    "Transport",
    "bus_poller",
    "plan_device",
]
