"""The read plan of a device: which Modbus requests read all its registers.

Computed once at start-up from the profile (no I/O), and logged, so that a
technician sees how many requests each poll costs.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.config import Device
from edge_agent.profiles import Function, Profile, Register

MAX_READ_REGISTERS = 125  # Modbus application protocol: FC03/FC04 quantity 1..125


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers of ``function`` from ``address``."""

    function: Function
    address: int
    count: int
    registers: tuple[Register, ...]

    def decode(self, words: list[int]) -> dict[str, float]:
        return {reg.name: reg.decode(words[reg.address - self.address:
                                           reg.address - self.address + reg.count])
                for reg in self.registers}


@dataclass(frozen=True, slots=True)
class DevicePlan:
    device: Device
    profile: Profile
    blocks: tuple[ReadBlock, ...]

    def channel(self, register: str) -> str:
        return f"{self.device.name}.{register}"

    @property
    def channels(self) -> list[tuple[str, Register]]:
        return [(self.channel(r.name), r) for r in self.profile.registers]


def plan_device(device: Device, profile: Profile) -> DevicePlan:
    """Group the profile's registers into as few reads as possible.

    Only registers that touch each other are merged: reading across a gap can hit
    an address the device does not implement and fail the whole request with
    exception 02 (illegal data address).
    """
    blocks: list[ReadBlock] = []
    ordered = sorted(profile.registers, key=lambda r: (r.function.code, r.address))
    group: list[Register] = []
    for reg in ordered:
        if group and (reg.function != group[0].function
                      or reg.address != group[-1].address + group[-1].count
                      or reg.address + reg.count - group[0].address > MAX_READ_REGISTERS):
            blocks.append(_block(group))
            group = []
        group.append(reg)
    blocks.append(_block(group))
    return DevicePlan(device, profile, tuple(blocks))


def _block(group: list[Register]) -> ReadBlock:
    start = group[0].address
    return ReadBlock(group[0].function, start, group[-1].address + group[-1].count - start,
                     tuple(group))
