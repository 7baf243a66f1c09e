"""Serial transport for devices that speak their own protocol on a UART: fixed-length
binary frames (the Winsen 9-byte family and its clones) and ASCII text lines.

One device per port (the site config refuses a second), so the port belongs to
that device's profile: its setup commands go out after every open, and in stream
mode (a device that uploads on its own) everything it sends is read as it arrives.

The port is read from the event loop itself: pyserial opens and configures it
(baud rate, parity, stop bits), its file descriptor is non-blocking and
``loop.add_reader`` calls us when bytes are waiting. A reader thread would need a
queue, a lock around the latest frame and a join at close; with the loop there is
no second thread, a stream device's frames are decoded as they arrive in the same
loop that polls, and a dead descriptor is dropped the moment it reports an error.

A port that cannot be opened or goes away (USB adapter unplugged) makes the poll
fail with NoAnswer; the next poll opens it again, so the device comes back by itself
once the adapter does (PEER_LESSONS 10). Bytes that do not form a valid frame are
skipped and the search goes on in the same read (PEER_LESSONS 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import termios
import time
from collections.abc import Callable
from typing import Literal

import serial
import structlog

from edge_agent.acquisition.scheduler import BusStats, NoAnswer, Refused
from edge_agent.config import Device, SerialBus
from edge_agent.profiles import Profile

log = structlog.get_logger(__name__)

_READ_CHUNK = 4096
_MAX_LINE = 1024  # bytes without a line end: noise, not a line being received
# What a lost or half-closed tty raises: pyserial's own error, OS errors from our
# writes, and termios.error (not an OSError) from tcflush.
_PORT_ERRORS = (serial.SerialException, OSError, termios.error)


# --- checksums ------------------------------------------------------------------

def winsen_checksum(frame: bytes) -> int:
    """The Winsen check byte: two's complement of the sum of bytes 1..n-2 (§8.2)."""
    return -sum(frame[1:-1]) & 0xFF


def sum8_checksum(frame: bytes) -> int:
    """The low byte of the sum of every byte before the check byte."""
    return sum(frame[:-1]) & 0xFF


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: init 0xFFFF, reflected polynomial 0xA001 (sent low byte first)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


_CHECKS: dict[str, Callable[[bytes], bool]] = {
    "winsen": lambda frame: winsen_checksum(frame) == frame[-1],
    "sum8": lambda frame: sum8_checksum(frame) == frame[-1],
    "crc16-modbus": lambda frame: crc16_modbus(frame[:-2]).to_bytes(2, "little") == frame[-2:],
    "none": lambda frame: True,
}


def checksum_ok(kind: str, frame: bytes) -> bool:
    """Whether ``frame`` carries the right check value for the profile's ``checksum``."""
    return _CHECKS[kind](frame)


# --- finding readings in received bytes -------------------------------------------

class FrameCodec:
    """Finds valid fixed-length frames in received bytes and decodes their fields."""

    def __init__(self, profile: Profile) -> None:
        spec = profile.frame
        assert spec is not None  # a frame profile always has one (Profile validates it)
        self.mode: Literal["query", "stream"] = spec.mode
        self.request = spec.request
        self.setup: list[bytes] = list(spec.setup)
        self.what, self.bad = "frame", "with a bad checksum"
        self._length, self._header = spec.length, spec.header
        self._valid = _CHECKS[spec.checksum]
        self._fields = [(f, f.byte, f.byte + f.size) for f in profile.fields]  # type: ignore[operator]

    def take(self, received: bytearray) -> tuple[list[dict[str, float]], int]:
        """Remove every complete frame from ``received``: the raw values of the valid
        ones, oldest first, and how many had a bad checksum.

        Bytes before a header are noise and go without a count. A frame with a bad
        checksum may have swallowed the start of a good one, so the search resumes
        one byte after its header rather than after its end.
        """
        found: list[dict[str, float]] = []
        bad = 0
        while True:
            start = received.find(self._header)
            if start < 0:
                # Keep a tail that may be the first bytes of the next header.
                del received[:max(0, len(received) - len(self._header) + 1)]
                return found, bad
            del received[:start]
            if len(received) < self._length:
                return found, bad
            frame = bytes(received[:self._length])
            if self._valid(frame):
                found.append(self.decode(frame))
                del received[:self._length]
            else:
                bad += 1
                del received[:1]

    def decode(self, frame: bytes) -> dict[str, float]:
        """Raw number of every field of one valid frame."""
        return {field.name: float(field.raw_from_bytes(frame[start:end]))
                for field, start, end in self._fields}


class LineCodec:
    """Finds text lines (LF ended, CR stripped) that match the profile's pattern.

    The pattern is searched, not fully matched, so noise before a line on the same
    line is skipped like bytes before a frame header; anchor it with ``^...$`` to
    refuse such lines.
    """

    def __init__(self, profile: Profile) -> None:
        spec = profile.lines
        assert spec is not None  # the Profile checks the section, its request and groups
        self.mode: Literal["query", "stream"] = spec.mode
        self.request = spec.request.encode(spec.encoding) if spec.request else None
        self.setup: list[bytes] = [command.encode(spec.encoding) for command in spec.setup]
        self.what, self.bad = "line", "not matching the pattern"
        self._encoding = spec.encoding
        self._pattern = re.compile(spec.pattern)
        self._groups = [(f.name, f.group or f.name) for f in profile.fields]

    def take(self, received: bytearray) -> tuple[list[dict[str, float]], int]:
        """Remove every complete line from ``received``: the raw values of the lines
        that match, oldest first, and how many non-empty lines did not.
        """
        found: list[dict[str, float]] = []
        bad = 0
        while (end := received.find(b"\n")) >= 0:
            line = bytes(received[:end]).rstrip(b"\r")
            del received[:end + 1]
            if not line.strip():
                continue
            values = self.decode(line.decode(self._encoding, errors="replace"))
            if values is None:
                bad += 1
            else:
                found.append(values)
        if len(received) > _MAX_LINE:
            received.clear()
            bad += 1
        return found, bad

    def decode(self, line: str) -> dict[str, float] | None:
        """Raw number of every field of one line; None if it does not match."""
        match = self._pattern.search(line)
        if match is None:
            return None
        try:
            return {name: float(match.group(group)) for name, group in self._groups}
        except (TypeError, ValueError):  # an optional group that did not match, or not a number
            return None


Codec = FrameCodec | LineCodec


def codec_for(profile: Profile) -> Codec:
    """The codec that finds ``profile``'s readings in the bytes a port receives."""
    if profile.transport == "frame":
        return FrameCodec(profile)
    if profile.transport == "lines":
        return LineCodec(profile)
    raise ValueError(f"profile {profile.name} speaks {profile.transport}; a serial bus reads "
                     "frame or lines profiles")


# --- the transport ----------------------------------------------------------------

class _PortError(Exception):
    """The port could not be opened, written or read."""


class SerialTransport:
    """Reads the one device of a serial bus through its frame or line profile.

    Stats: in query mode a transaction is a request sent; in stream mode it is a
    reading handed to the poller. A poll that ends in NoAnswer is a timeout; a frame
    with a bad checksum, or a non-empty line that does not match, is a crc error.
    Round trips are from the start of the poll to its reading.
    """

    def __init__(self, bus: SerialBus) -> None:
        self.bus = bus
        self.stats = BusStats()
        self._port: serial.Serial | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._profile: Profile | None = None
        self._codec: Codec | None = None
        self._received = bytearray()  # bytes not yet part of a complete frame or line
        self._newest: dict[str, float] | None = None  # raw values not yet returned
        self._arrived = asyncio.Event()  # set when _newest is set or the port is lost
        self._lost: str | None = None
        self._setup_due = True
        self._log = log.bind(bus=bus.name, port=bus.port)

    async def write(self, device: Device, function: str, address: int, value: int) -> None:
        raise Refused(f"{device.name} speaks a serial protocol without outputs")

    async def read(self, device: Device, profile: Profile) -> dict[str, float]:
        """Raw values of the device's newest frame or line.

        Query mode: flush, send the request, wait for the answer. Stream mode: the
        newest reading received since the previous read, or failing that the first
        within the timeout. NoAnswer if none comes.
        """
        codec = self._codec_for(profile)
        timeout_ms = device.timeout_ms or self.bus.timeout_ms
        query = codec.mode == "query"
        if query:
            self.stats.transactions += 1
        started = time.monotonic()
        bad_before = self.stats.crc_errors
        try:
            port = self._open()
            if query:
                self._flush(port)
            if self._setup_due:
                for command in codec.setup:
                    self._send(port, command)
                self._setup_due = False
            if query:
                self._send(port, codec.request)  # type: ignore[arg-type]
            async with asyncio.timeout(timeout_ms / 1000):
                raw = await self._next_reading()
        except _PortError as exc:
            self.stats.timeouts += 1
            raise NoAnswer(f"{self.bus.port}: {exc}") from None
        except TimeoutError:
            self.stats.timeouts += 1
            # Whatever the reason, the device may have restarted in its factory mode.
            self._setup_due = True
            bad = self.stats.crc_errors - bad_before
            raise NoAnswer(
                f"no valid {codec.what} from {device.name} on {self.bus.port} within "
                f"{timeout_ms} ms" + (f" ({bad} {codec.bad})" if bad else "")
                + ("" if query else " (none since the previous poll)")) from None
        if not query:
            self.stats.transactions += 1  # one reading consumed
        self.stats.round_trips.append(time.monotonic() - started)
        return raw

    async def close(self) -> None:
        self._close_port()

    # --- the port -------------------------------------------------------------------

    def _codec_for(self, profile: Profile) -> Codec:
        if self._codec is None or profile is not self._profile:
            self._codec, self._profile = codec_for(profile), profile
            self._setup_due = True
        return self._codec

    def _open(self) -> serial.Serial:
        loop = asyncio.get_running_loop()
        if self._port is not None and self._loop is loop:
            return self._port
        self._close_port()  # registered with a loop that is gone
        try:
            # exclusive: a second process on the port (a technician's CLI) would
            # steal the device's frames.
            port = serial.Serial(self.bus.port, self.bus.baudrate, bytesize=serial.EIGHTBITS,
                                 parity=self.bus.parity, stopbits=self.bus.stopbits,
                                 timeout=0, write_timeout=0, exclusive=True)
        except (*_PORT_ERRORS, ValueError) as exc:
            raise _PortError(f"cannot open: {exc}") from None
        self._port, self._fd, self._loop = port, port.fileno(), loop
        self._arrived = asyncio.Event()  # an Event belongs to the loop that first awaits it
        self._received.clear()
        self._newest, self._lost, self._setup_due = None, None, True
        loop.add_reader(self._fd, self._on_readable)
        self._log.info("serial_port_opened", baudrate=self.bus.baudrate,
                       parity=self.bus.parity, stopbits=self.bus.stopbits)
        return port

    def _flush(self, port: serial.Serial) -> None:
        """Forget what came before the request, so an old answer is not taken for it."""
        try:
            port.reset_input_buffer()
        except _PORT_ERRORS as exc:
            raise _PortError(self._lose(f"flush failed: {exc}")) from None
        self._received.clear()
        self._newest = None

    def _send(self, port: serial.Serial, data: bytes) -> None:
        # os.write on the non-blocking descriptor: pyserial's write with
        # write_timeout=0 retries in a busy loop while the output buffer is full.
        try:
            written = os.write(port.fileno(), data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            raise _PortError(self._lose(f"write failed: {exc}")) from None
        if written != len(data):
            raise _PortError(f"output buffer full: wrote {written} of {len(data)} bytes")

    async def _next_reading(self) -> dict[str, float]:
        while self._newest is None:
            if self._lost is not None:
                raise _PortError(f"port lost: {self._lost}")
            self._arrived.clear()
            await self._arrived.wait()
        raw, self._newest = self._newest, None
        return raw

    def _on_readable(self) -> None:
        """Bytes are waiting (or the port hung up): decode what is complete."""
        port = self._port
        if port is None or self._codec is None:
            return
        try:
            data = port.read(_READ_CHUNK)
        except _PORT_ERRORS as exc:
            self._lose(f"read failed: {exc}")
            return
        self._received += data
        readings, bad = self._codec.take(self._received)
        self.stats.crc_errors += bad
        if readings:
            self._newest = readings[-1]
            self._arrived.set()

    def _lose(self, reason: str) -> str:
        """Drop a port that failed (the next read opens it again); say what happened."""
        if self._port is not None:
            self._log.warning("serial_port_lost", error=reason)
            self._close_port()
            self._lost = reason
            self._arrived.set()
        return f"port lost: {reason}"

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(*_PORT_ERRORS):
            port.close()
        self._setup_due = True
