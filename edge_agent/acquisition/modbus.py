"""Modbus transports: TCP, RTU on a serial port, and RTU framed over TCP (serial
device servers and DTUs), through pymodbus' async clients.

One client per bus and one transaction at a time. pymodbus' own retries are off:
the bus poller decides what a failure means. Its request timeout is one value
per client; a device's own ``timeout_ms`` is applied before each of its requests.

pymodbus closes a TCP link after a few timeouts in a row, whatever the unit, so
one dead device behind a gateway would cut off the live ones (FIELD_NOTES.md §2,
§3). That is switched off; instead the link is dropped and remade only when
every device on it has gone silent, which is what a dead link looks like.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from edge_agent.acquisition.plan import DevicePlan, ReadBlock, plan_device
from edge_agent.acquisition.scheduler import BusStats, NoAnswer, Refused
from edge_agent.config import Device, ModbusRtuBus, ModbusRtuOverTcpBus, ModbusTcpBus
from edge_agent.profiles import Function, Profile

# pymodbus logs every timeout at ERROR through stdlib logging; the poller reports
# failures itself, once per device and with context.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

ModbusBusConfig = ModbusTcpBus | ModbusRtuBus | ModbusRtuOverTcpBus


def make_client(bus: ModbusBusConfig) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    timeout = bus.timeout_ms / 1000
    if isinstance(bus, ModbusRtuBus):
        return AsyncModbusSerialClient(bus.port, framer=FramerType.RTU, baudrate=bus.baudrate,
                                       bytesize=8, parity=bus.parity, stopbits=bus.stopbits,
                                       timeout=timeout, retries=0)
    framer = FramerType.RTU if isinstance(bus, ModbusRtuOverTcpBus) else FramerType.SOCKET
    client = AsyncModbusTcpClient(bus.host, port=bus.port, framer=framer, timeout=timeout,
                                  retries=0, reconnect_delay=0.5, reconnect_delay_max=10)
    client.set_max_no_responses(1 << 30)
    return client


class ModbusTransport:
    """Reads devices' values with as few requests as their profiles allow."""

    def __init__(self, bus: ModbusBusConfig) -> None:
        self.bus = bus
        self.stats = BusStats()
        self.client = make_client(bus)
        self._plans: dict[str, DevicePlan] = {}
        self._silent: set[str] = set()  # devices whose last request went unanswered
        # pymodbus drops an RTU frame with a bad CRC silently and the request then
        # times out; count those frames by watching its decoder.
        framer = self.client.ctx.framer
        decode = framer.decode

        def counting_decode(data: bytes) -> tuple[int, int, int, bytes]:
            used, dev_id, tid, pdu = decode(data)
            if used and not pdu and framer.__class__.__name__ == "FramerRTU":
                self.stats.crc_errors += 1
            return used, dev_id, tid, pdu

        framer.decode = counting_decode  # type: ignore[method-assign]

    def plan(self, device: Device, profile: Profile) -> DevicePlan:
        if device.name not in self._plans:
            self._plans[device.name] = plan_device(device, profile)
        return self._plans[device.name]

    async def read(self, device: Device, profile: Profile) -> dict[str, float]:
        raw: dict[str, float] = {}
        try:
            for block in self.plan(device, profile).blocks:
                raw.update(block.raw(await self.transact(device, block)))
        finally:
            if getattr(self.bus, "connection", "keep") == "per-poll":
                self.client.close()
        return raw

    async def transact(self, device: Device, block: ReadBlock) -> list[int]:
        """One read request; the words (or bits) it returned."""
        response = await self.request(device, _READS[block.function], block.address,
                                      count=block.count)
        values = response.bits if block.function.is_bits else response.registers
        if len(values) < block.count:
            raise Refused(f"short answer: {len(values)} of {block.count} {block.function} "
                          f"values at {block.address}")
        return list(values[: block.count])

    async def write(self, device: Device, function: str, address: int, value: int) -> None:
        """Write one coil (function "coil") or one holding register (function "holding")."""
        if function == "coil":
            await self.request(device, "write_coil", address, value=bool(value))
        else:
            await self.request(device, "write_register", address, value=value)

    async def request(self, device: Device, method: str, address: int, **kwargs: Any) -> Any:
        """Send one request to ``device``; NoAnswer or Refused unless it succeeded."""
        client = self.client
        timeout = (device.timeout_ms or self.bus.timeout_ms) / 1000
        client.ctx.comm_params.timeout_connect = timeout  # the per-request timeout of pymodbus
        self.stats.transactions += 1
        started = time.monotonic()
        try:
            if not client.connected:
                # pymodbus never retries a first connect that failed; try on every poll.
                await client.connect()
            response = await getattr(client, method)(address, device_id=device.unit_id,
                                                     **kwargs)
        except (ConnectionException, ModbusIOException, OSError, TimeoutError) as exc:
            self.stats.timeouts += 1
            self._went_silent(device)
            raise NoAnswer(f"{type(exc).__name__}: {exc}") from None
        except ModbusException as exc:
            raise Refused(f"{type(exc).__name__}: {exc}") from None
        if response.isError():
            self.stats.exceptions += 1
            code = getattr(response, "exception_code", None)
            what = (f"exception {code} ({EXCEPTIONS.get(code, 'unknown')}) for unit "
                    f"{device.unit_id}, {method} at {address}")
            # 10 and 11 come from a gateway whose device behind it did not answer.
            raise (NoAnswer if code in (10, 11) else Refused)(what, code=code)
        self.stats.round_trips.append(time.monotonic() - started)
        self._silent.discard(device.name)
        return response

    def _went_silent(self, device: Device) -> None:
        self._silent.add(device.name)
        if (self._plans and not isinstance(self.bus, ModbusRtuBus)
                and self._silent >= set(self._plans) and self.client.connected):
            # Every device of the link is silent: remake the connection (a gateway
            # that rebooted, a NAT that forgot us).
            self.client.close()
            self._silent.clear()

    async def close(self) -> None:
        self.client.close()
        await asyncio.sleep(0)


_READS = {Function.HOLDING: "read_holding_registers", Function.INPUT: "read_input_registers",
          Function.COIL: "read_coils", Function.DISCRETE: "read_discrete_inputs"}
# Modbus application protocol, section 7.
EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
               4: "server device failure", 5: "acknowledge", 6: "server device busy",
               10: "gateway path unavailable", 11: "gateway target failed to respond"}
