"""Poll the devices of one Modbus bus: one transaction at a time, each device on its
own interval, a failing device isolated from the others.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from edge_agent.acquisition.plan import DevicePlan
from edge_agent.config import ModbusRtuBus, ModbusTcpBus
from edge_agent.profiles import Function
from edge_agent.records import Quality, Sample

log = structlog.get_logger(__name__)

# pymodbus logs every timeout at ERROR through stdlib logging; the poller reports
# failures itself, once per device and with context.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll of one device gave: a sample per channel, and the fault if any."""

    device: str
    samples: list[Sample]
    fault: str | None = None  # one of FAULTS
    error: str | None = None  # what went wrong, for the fault event and the log


# comm_lost: no answer (timeout, refused, disconnected); device_error: the device
# answered, but with a Modbus exception or an answer that cannot be used.
FAULTS = ("comm_lost", "device_error")


class DeviceError(Exception):
    """The device answered, but with a Modbus exception or too few registers."""


def _tcp_client(bus: ModbusTcpBus) -> AsyncModbusTcpClient:
    return AsyncModbusTcpClient(bus.host, port=bus.port, timeout=bus.timeout_ms / 1000,
                                retries=0, reconnect_delay=0.5, reconnect_delay_max=10)


def _rtu_client(bus: ModbusRtuBus) -> AsyncModbusSerialClient:
    return AsyncModbusSerialClient(bus.port, framer=FramerType.RTU, baudrate=bus.baudrate,
                                   bytesize=8, parity=bus.parity, stopbits=bus.stopbits,
                                   timeout=bus.timeout_ms / 1000, retries=0)


TRANSPORTS: dict[type, Callable] = {ModbusTcpBus: _tcp_client, ModbusRtuBus: _rtu_client}


@dataclass
class _Due:
    plan: DevicePlan
    next_due: float
    failing: bool = field(default=False)


class ModbusBus:
    """The poller of one bus. ``run`` polls until cancelled and hands each result on."""

    def __init__(self, bus: ModbusTcpBus | ModbusRtuBus, plans: list[DevicePlan],
                 emit: Callable[[PollResult], None]) -> None:
        self.bus = bus
        self.emit = emit
        self.client = TRANSPORTS[type(bus)](bus)
        now = time.monotonic()
        self._devices = [_Due(plan, now) for plan in plans]
        self.transactions = 0
        self.failures = 0
        self._log = log.bind(bus=bus.name)

    async def run(self) -> None:
        try:
            while True:
                entry = min(self._devices, key=lambda d: d.next_due)
                delay = entry.next_due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.emit(await self.poll(entry))
                interval = entry.plan.device.poll_interval_s
                # Keep the cadence; after a long stall, restart it rather than burst.
                entry.next_due = max(entry.next_due + interval, time.monotonic())
        finally:
            self.client.close()

    async def poll(self, entry: _Due) -> PollResult:
        plan = entry.plan
        device = plan.device
        error: str | None = None
        fault: str | None = None
        values: dict[str, float] = {}
        quality = Quality.GOOD
        try:
            if not self.client.connected:
                # pymodbus never retries a first connect that failed; do it on every poll.
                await self.client.connect()
            for block in plan.blocks:
                values.update(block.decode(await self._read(block, device.unit_id)))
        except (ConnectionException, ModbusIOException, OSError, TimeoutError) as exc:
            fault, error, quality = "comm_lost", f"{type(exc).__name__}: {exc}", Quality.COMM_LOST
        except (DeviceError, ModbusException) as exc:
            fault, error, quality = "device_error", str(exc), Quality.BAD
        ts_ms = time.time_ns() // 1_000_000
        if error is None:
            if entry.failing:
                self._log.info("device_recovered", device=device.name)
            entry.failing = False
        else:
            self.failures += 1
            if not entry.failing:
                self._log.warning("poll_failed", device=device.name, unit_id=device.unit_id,
                                  error=error)
            entry.failing = True
            values = {}
        samples = []
        for channel, reg in plan.channels:
            value = values.get(reg.name)
            if value is not None and not math.isfinite(value):  # a float32 NaN or inf code
                samples.append(Sample(channel, ts_ms, None, reg.unit, Quality.BAD))
            else:
                samples.append(Sample(channel, ts_ms, value, reg.unit,
                                      quality if value is None else Quality.GOOD))
        return PollResult(device.name, samples, fault, error)

    async def _read(self, block, unit_id: int) -> list[int]:
        self.transactions += 1
        read = (self.client.read_holding_registers if block.function is Function.HOLDING
                else self.client.read_input_registers)
        response = await read(block.address, count=block.count, device_id=unit_id)
        if response.isError():
            code = getattr(response, "exception_code", None)
            raise DeviceError(f"exception {code} reading {block.count} {block.function} "
                              f"registers at {block.address}")
        if len(response.registers) < block.count:
            raise DeviceError(f"short answer: {len(response.registers)} of {block.count} "
                              "registers")
        return list(response.registers[: block.count])
