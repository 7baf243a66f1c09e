"""The read plan of a Modbus device: which requests read all its values.

Computed once at start-up from the profile (no I/O), and logged, so that a
technician sees how many requests each poll costs.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.config import Device
from edge_agent.profiles import Function, Profile, Register

# Modbus application protocol: quantity per read request.
MAX_READ = {Function.HOLDING: 125, Function.INPUT: 125, Function.COIL: 2000,
            Function.DISCRETE: 2000}


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers (or bits) of ``function`` from ``address``."""

    function: Function
    address: int
    count: int
    registers: tuple[Register, ...]

    def raw(self, words: list[int]) -> dict[str, int | float]:
        """Raw numbers of this block's values from the words (or bits) read."""
        return {reg.name: reg.raw(words[reg.address - self.address:
                                        reg.address - self.address + reg.count])
                for reg in self.registers}


@dataclass(frozen=True, slots=True)
class DevicePlan:
    device: Device
    profile: Profile
    blocks: tuple[ReadBlock, ...]

    def channel(self, name: str) -> str:
        return f"{self.device.name}.{name}"


def plan_device(device: Device, profile: Profile) -> DevicePlan:
    """Group the profile's registers into as few reads as possible.

    Only values that touch or share registers are merged: reading across a gap
    can hit an address the device does not implement and fail the whole request
    with exception 02 (illegal data address).
    """
    blocks: list[ReadBlock] = []
    ordered = sorted(profile.registers, key=lambda r: (r.function.code, r.address))
    group: list[Register] = []
    end = 0
    for reg in ordered:
        reg_end = reg.address + reg.count
        if group and (reg.function != group[0].function or reg.address > end
                      or max(end, reg_end) - group[0].address > MAX_READ[reg.function]):
            blocks.append(_block(group, end))
            group = []
        if not group:
            end = reg_end
        group.append(reg)
        end = max(end, reg_end)
    if group:
        blocks.append(_block(group, end))
    return DevicePlan(device, profile, tuple(blocks))


def _block(group: list[Register], end: int) -> ReadBlock:
    start = group[0].address
    return ReadBlock(group[0].function, start, end - start, tuple(group))
