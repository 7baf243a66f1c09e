"""Modbus servers (pymodbus) that serve simulated devices by unit id: over TCP, like
a device or a Modbus gateway on the network, and over a serial line in RTU
framing, like sensors on an RS-485 bus.

They behave like field devices rather than like pymodbus' defaults: an address
the profile does not define answers exception 02 (illegal data address), and a
unit id nobody answers to stays silent, as on a real bus, instead of pymodbus'
exception 04 (FIELD_NOTES.md §1, §2).
"""

from __future__ import annotations

import asyncio
import logging
import threading

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.device import SimulatedDevice

# function code -> (table, is a write)
_FUNCTION = {1: ("coil", False), 2: ("discrete", False), 3: ("holding", False),
             4: ("input", False), 5: ("coil", True), 15: ("coil", True),
             6: ("holding", True), 16: ("holding", True)}
_TABLES = ("coil", "discrete", "holding", "input")  # pymodbus' order of blocks

# pymodbus logs each request to an unknown id with a traceback (FIELD_NOTES.md §1).
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


async def _refuse(*_: object) -> ExcCodes:
    return ExcCodes.DEVICE_FAILURE


# Id 0 catches every id no simulated device has; _silence_unknown_ids then drops
# its answer, so the client sees the silence of a real bus.
_ANY_OTHER_ID = SimDevice(id=0, action=_refuse,
                          simdata=[SimData(address=0, values=[0], datatype=DataType.REGISTERS)])


def _block(addresses: list[int], bits: bool) -> SimData:
    """One pymodbus block covering ``addresses``; a placeholder if there are none.

    The action refuses every address the profile does not define, so what the
    block holds between them is never served.
    """
    low, high = (addresses[0], addresses[-1]) if addresses else (0, 0)
    if bits:
        return SimData(address=low, values=[False] * (high - low + 1), datatype=DataType.BITS)
    return SimData(address=low, values=[0] * (high - low + 1), datatype=DataType.REGISTERS)


class _Simulator:
    """Serve ``devices`` in a thread with its own event loop (or in a caller's loop)."""

    def __init__(self, devices: list[SimulatedDevice]) -> None:
        ids = [d.unit_id for d in devices]
        if len(set(ids)) != len(ids):
            raise ValueError(f"unit ids must be unique on one server, got {ids}")
        self.devices = {d.unit_id: d for d in devices}
        self.requests = 0
        self.connections = 0  # connections accepted (TCP); a serial line is one
        self._answer: dict[int, str] = {}  # unit -> how to treat the answer being sent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _make_server(self, context: list[SimDevice]) -> ModbusTcpServer | ModbusSerialServer:
        raise NotImplementedError

    def _unit_of(self, packet: bytes) -> int | None:
        raise NotImplementedError

    def _line_time(self, table: str | None, write: bool, count: int) -> float:
        """How long the transaction would hold a real line (0: not modelled)."""
        return 0.0

    # --- running ------------------------------------------------------------------

    async def serve(self) -> None:
        """Serve until cancelled (for callers that already run an event loop)."""
        self._server = self._make_server(
            [self._sim_device(d) for d in self.devices.values()] + [_ANY_OTHER_ID])
        await self._server.serve_forever(background=True)
        self._ready.set()
        try:
            await self._server.serving
        finally:
            await self._server.shutdown()

    def start(self) -> _Simulator:
        """Start serving in a background thread; return once it listens."""
        self._thread = threading.Thread(target=self._run, name=f"modbus-sim-{self}",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None or not self._ready.is_set():
            raise RuntimeError(f"simulator on {self} did not start: {self._error!r}")
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._task = self._loop.create_task(self.serve())
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(10)

    def __enter__(self) -> _Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- behaviour ----------------------------------------------------------------

    def _sim_device(self, device: SimulatedDevice) -> SimDevice:
        profile = device.profile
        defined = {(reg.function.value, a) for reg in profile.registers
                   for a in range(reg.address, reg.address + reg.count)}
        writable = {(o.function, o.address): o for o in profile.outputs}
        blocks = {table: sorted({a for t, a in defined | set(writable) if t == table})
                  for table in _TABLES}

        async def action(function_code: int, start_address: int, address: int, count: int,
                         registers: list[int], set_values: list | None) -> ExcCodes | None:
            self.requests += 1
            self._answer[device.unit_id] = device.answer()
            table, write = _FUNCTION.get(function_code, (None, False))
            if write and set_values is None:
                return None  # pymodbus reading back what a write just stored, for its echo
            bits = table in ("coil", "discrete")
            if bits:
                # pymodbus gives bit requests the count of 16-bit words they touch, not
                # of bits: writes carry their bits; reads refresh every word touched.
                count = len(set_values) if set_values is not None else 16 * count
            if delay := self._line_time(table, write, count):
                await asyncio.sleep(delay)
            wanted = [(table, a) for a in range(address, address + count)]
            if write:
                if not all(key in writable for key in wanted):
                    return ExcCodes.ILLEGAL_ADDRESS if writable else ExcCodes.ILLEGAL_FUNCTION
                for key, value in zip(wanted, set_values or [], strict=False):
                    device.write(writable[key].name, int(value))
                return None
            if table is None or (table, address) not in defined or (
                    not bits and not all(key in defined for key in wanted)):
                return ExcCodes.ILLEGAL_ADDRESS
            words = device.registers()
            if bits:  # bit n lives in word n // 16 of the block, at bit n % 16
                first = address // 16 * 16
                for bit in range(first, first + count):
                    if (table, bit) in defined:
                        index, mask = bit // 16 - start_address, 1 << bit % 16
                        registers[index] = (registers[index] | mask if words[(table, bit)]
                                            else registers[index] & ~mask)
            else:
                for key in wanted:
                    registers[key[1] - start_address] = words[key]
            return None

        return SimDevice(id=device.unit_id, action=action, simdata=tuple(
            [_block(blocks[table], table in ("coil", "discrete"))] for table in _TABLES))

    def _answer_of(self, unit: int | None) -> str:
        return self._answer.pop(unit, "answer") if unit in self.devices else "silent"

    def _misbehave(self, sending: bool, packet: bytes) -> bytes:
        """Drop or break an answer as the device's faults say; unknown ids stay silent."""
        if not sending:
            return packet
        answer = self._answer_of(self._unit_of(packet))
        if answer == "silent":
            return b""
        if answer == "corrupt":
            return self._corrupt(packet)
        return packet

    def _corrupt(self, packet: bytes) -> bytes:
        raise NotImplementedError


class ModbusTcpSimulator(_Simulator):
    """Modbus over TCP on ``host:port``: MBAP framing (Modbus TCP), or RTU frames with
    CRC as a serial device server or DTU tunnels them (``framing="rtu"``).
    """

    def __init__(self, devices: list[SimulatedDevice], host: str = "127.0.0.1",
                 port: int = 5020, framing: str = "socket") -> None:
        super().__init__(devices)
        self.host, self.port, self.framing = host, port, framing

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def _make_server(self, context: list[SimDevice]) -> ModbusTcpServer:
        framer = FramerType.RTU if self.framing == "rtu" else FramerType.SOCKET
        return ModbusTcpServer(context, framer=framer, address=(self.host, self.port),
                               trace_packet=self._misbehave, trace_connect=self._count)

    def _count(self, connected: bool) -> None:
        self.connections += connected

    def _unit_of(self, packet: bytes) -> int | None:
        if self.framing == "rtu":
            return packet[0] if packet else None
        # MBAP header: transaction(2) protocol(2) length(2) unit(1), then the PDU.
        return packet[6] if len(packet) > 6 else None

    def _corrupt(self, packet: bytes) -> bytes:
        if self.framing == "rtu":
            return _broken_crc(packet)
        # MBAP has no checksum: a flipped byte would be a wrong value nobody can see.
        # Cut the frame short instead; its length field then never completes.
        return packet[:-1]


class ModbusRtuSimulator(_Simulator):
    """Modbus RTU on a serial port (in tests, one end of a socat pseudo-terminal pair).

    A pseudo-terminal has no baud rate. With ``line_timing`` each answer is held back
    for as long as the request and the answer would take on a real line at
    ``baudrate`` (11 bits a character, Modbus over serial line §2.5.1), plus the
    3.5-character silence before each frame, so benchmarks meet the physical limit.
    """

    def __init__(self, devices: list[SimulatedDevice], port: str, baudrate: int = 9600,
                 parity: str = "N", stopbits: int = 1, line_timing: bool = False) -> None:
        super().__init__(devices)
        self.port, self.baudrate, self.parity, self.stopbits = port, baudrate, parity, stopbits
        self.line_timing = line_timing

    def _line_time(self, table: str | None, write: bool, count: int) -> float:
        if not self.line_timing:
            return 0.0
        return transaction_seconds(self.baudrate, table or "holding", write, count)

    def __str__(self) -> str:
        return self.port

    def _make_server(self, context: list[SimDevice]) -> ModbusSerialServer:
        return ModbusSerialServer(context, framer=FramerType.RTU, port=self.port,
                                  baudrate=self.baudrate, parity=self.parity,
                                  stopbits=self.stopbits, trace_packet=self._misbehave)

    def _unit_of(self, packet: bytes) -> int | None:
        # RTU frame: address(1) function(1) data CRC(2)
        return packet[0] if packet else None

    def _corrupt(self, packet: bytes) -> bytes:
        return _broken_crc(packet)


def transaction_seconds(baudrate: int, table: str, write: bool, count: int) -> float:
    """Time one RTU transaction holds the line: request, answer, and the 3.5-character
    silence before each (fixed 1.75 ms above 19200 baud, Modbus over serial line §2.5.1.1).
    """
    char = 11 / baudrate
    if write:
        request, answer = 8, 8  # FC05/FC06: address function address value CRC, echoed
    else:
        data = (count + 7) // 8 if table in ("coil", "discrete") else 2 * count
        request, answer = 8, 5 + data  # address function start count CRC; address fc n data CRC
    silence = 0.00175 if baudrate > 19200 else 3.5 * char
    return (request + answer) * char + 2 * silence


def _broken_crc(packet: bytes) -> bytes:
    return packet[:-1] + bytes([packet[-1] ^ 0xFF])
