"""Simulated devices that speak their own protocol on a serial line: fixed-length
binary frames (the Winsen 9-byte family) and ASCII text lines, built from the same
drivers/ profiles as the agent.

Each serves one SimulatedDevice on a tty (in tests, one end of a socat
pseudo-terminal pair) from a background thread. In query mode it answers each
request it recognises; in stream mode it sends a reading every ``interval_s``.
The device's faults apply to every message: silent sends nothing, corrupt sends it
with a wrong checksum (a frame) or cut short (a line).

Checksums are computed here from SAFETY_REFERENCE §8.1-8.2, not taken from the
agent, so the simulator checks the agent's transport rather than agreeing with it.
"""

from __future__ import annotations

import os
import re
import select
import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal

import serial

from edge_agent.profiles import Profile
from simulators.device import SimulatedDevice

Mode = Literal["query", "stream"]

# Winsen mode switch FF 01 78 <code> 00 00 00 00 CS: code -> (mode, the module acks).
# ZE03 uses 04/03 and acks; ZE07, ZE08 and ZE25 use 41/40 and do not (§8.2).
_WINSEN_SWITCH = {0x04: ("query", True), 0x03: ("stream", True),
                  0x41: ("query", False), 0x40: ("stream", False)}
_ZE03_ACK = bytes.fromhex("FF 78 01 00 00 00 00 00 87")
_READ_CHUNK = 4096


def _seal(kind: str, frame: bytearray) -> None:
    """Write the check value of ``kind`` into the end of ``frame``."""
    if kind == "winsen":  # two's complement of the sum of bytes 1..7 (§8.2)
        frame[-1] = (~sum(frame[1:-1]) + 1) & 0xFF
    elif kind == "sum8":
        frame[-1] = sum(frame[:-1]) & 0xFF
    elif kind == "crc16-modbus":  # §8.1: init 0xFFFF, poly 0xA001 reflected, low byte first
        crc = 0xFFFF
        for byte in frame[:-2]:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        frame[-2:] = crc.to_bytes(2, "little")


def _winsen_command(code: int) -> bytes:
    frame = bytearray([0xFF, 0x01, 0x78, code, 0, 0, 0, 0, 0])
    _seal("winsen", frame)
    return bytes(frame)


def build_frame(profile: Profile, raw: Mapping[str, float]) -> bytes:
    """The frame a device sends for ``raw`` values: header, fields, check value."""
    spec = profile.frame
    if spec is None:
        raise ValueError(f"profile {profile.name} has no frame section")
    frame = bytearray(spec.length)
    frame[:len(spec.header)] = spec.header
    # Whole fields first, then the bit fields packed into shared bytes.
    for field in sorted(profile.fields, key=lambda f: f.bits is not None):
        start, end = field.byte, field.byte + field.size  # type: ignore[operator]
        wire = field.bytes_from_raw(raw[field.name])
        if field.bits is None:
            frame[start:end] = wire
            continue
        lo, hi = field.bits
        mask = ((1 << (hi - lo + 1)) - 1) << lo
        packed = int.from_bytes(frame[start:end], "big") & ~mask
        packed |= int.from_bytes(wire, "big") << lo & mask
        frame[start:end] = packed.to_bytes(field.size, "big")
    _seal(spec.checksum, frame)
    return bytes(frame)


_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>((?:[^()\\]|\\.)*)\)")
_FIXED_DIGITS = re.compile(r"\\d\{(\d+)\}")


def line_template(profile: Profile) -> str:
    r"""A ``str.format`` template for the lines of ``profile``, read off its pattern.

    Works for patterns made of literal text, ``\s*`` / ``\s+`` and named groups
    (``\d{5}`` groups are zero-padded to five digits); raise ValueError for others,
    so a simulator never sends lines its own profile would not accept.
    """
    spec = profile.lines
    if spec is None:
        raise ValueError(f"profile {profile.name} has no lines section")
    parts, last = [], 0
    for match in _NAMED_GROUP.finditer(spec.pattern):
        parts.append(_literal(spec.pattern[last:match.start()], spec.pattern))
        name, body = match.groups()
        fixed = _FIXED_DIGITS.fullmatch(body)
        parts.append(f"{{{name}:0{fixed.group(1)}d}}" if fixed else f"{{{name}}}")
        last = match.end()
    parts.append(_literal(spec.pattern[last:], spec.pattern))
    return "".join(parts)


def _literal(fragment: str, pattern: str) -> str:
    text = re.sub(r"\\s\*|\\s\?|\^|\$", "", fragment)
    text = re.sub(r"\\s\+?", " ", text)
    if re.search(r"(?<!\\)[\[\](){}*+?|.]", text):
        raise ValueError(f"cannot write a line for pattern {pattern!r}; give line_format")
    text = re.sub(r"\\(.)", r"\1", text)
    return text.replace("{", "{{").replace("}", "}}")


class _SerialSimulator:
    """Serve one device on a tty from a thread; subclasses say what goes on the wire."""

    def __init__(self, device: SimulatedDevice, port: str, *, baudrate: int = 9600,
                 parity: str = "N", stopbits: int = 1, interval_s: float | None = 1.0,
                 mode: Mode | None = None) -> None:
        self.device = device
        self.port, self.baudrate, self.parity, self.stopbits = port, baudrate, parity, stopbits
        self.interval_s = interval_s  # None: upload only when upload() is called
        self.mode: Mode = mode or self._initial_mode()
        self.requests = 0  # requests received, answered or not
        self.error: BaseException | None = None  # why serving ended early (line gone)
        self._serial: serial.Serial | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._write_lock = threading.Lock()
        self._prefix = b""
        self._input = bytearray()

    def __str__(self) -> str:
        return self.port

    def _initial_mode(self) -> Mode:
        raise NotImplementedError

    def message(self) -> bytes:
        """What the device sends now (an answer or an upload), well formed."""
        raise NotImplementedError

    def _corrupt(self, message: bytes) -> bytes:
        raise NotImplementedError

    def _received(self) -> None:
        """Act on the complete commands in ``self._input``."""
        raise NotImplementedError

    # --- what tests do --------------------------------------------------------------

    def inject(self, data: bytes) -> None:
        """Write ``data`` on the line now (noise, a partial frame, a foreign device)."""
        self._write(data)

    def prefix_next(self, data: bytes) -> None:
        """Send ``data`` just before the next message, in the same write."""
        with self._write_lock:
            self._prefix += data

    def upload(self) -> bool:
        """Send one reading now if the device is in stream mode; whether it did."""
        if self.mode != "stream":
            return False
        self._send_message()
        return True

    # --- running ----------------------------------------------------------------------

    def start(self) -> _SerialSimulator:
        """Open the tty and serve it in a background thread."""
        self._serial = serial.Serial(self.port, self.baudrate, parity=self.parity,
                                     stopbits=self.stopbits, timeout=0)
        self._wake_r, self._wake_w = os.pipe()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name=f"serial-sim-{self}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(10)
            self._thread = None
        if self._serial is not None:
            self._serial.close()
            self._serial = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> _SerialSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        port = self._serial
        assert port is not None
        interval = self.interval_s
        next_upload = time.monotonic() + interval if interval else None
        while not self._stopping.is_set():
            wait = 0.5 if next_upload is None else max(0.0, next_upload - time.monotonic())
            ready, _, _ = select.select([port.fileno(), self._wake_r], [], [], wait)
            if self._wake_r in ready:
                break
            if ready:
                try:
                    self._input += port.read(_READ_CHUNK)
                except (serial.SerialException, OSError) as exc:
                    self.error = exc  # the other end of the line is gone
                    return
                self._guarded(self._received)
            if next_upload is not None and time.monotonic() >= next_upload:
                if self.mode == "stream":
                    self._guarded(self._send_message)
                # Keep the cadence; after a stall start again rather than burst.
                next_upload = max(next_upload + interval, time.monotonic())  # type: ignore[operator]

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run one step of serving; a failure is kept in ``error`` and serving goes on."""
        try:
            step()
        except Exception as exc:
            self.error = exc

    def _send_message(self) -> None:
        """Send the device's message now, as its faults allow."""
        answer = self.device.answer()
        if answer == "silent":
            return
        message = self.message()
        self._write(self._corrupt(message) if answer == "corrupt" else message)

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            data, self._prefix = self._prefix + data, b""
            if self._serial is not None:
                try:
                    self._serial.write(data)
                except (serial.SerialException, OSError) as exc:
                    self.error = exc


class FrameSimulator(_SerialSimulator):
    """A fixed-length frame device, such as a Winsen ZE03 or ZE07 module.

    It understands the profile's request and the Winsen mode switches (§8.2). By
    default a Winsen module starts as shipped, uploading on its own, so a Q&A
    profile only gets answers after its setup switched the module over; a ZE03
    acknowledges the switch. While the module uploads, a Q&A profile's requests go
    unanswered (the module sends its upload frames, which a Q&A profile does not
    describe; this simulator sends none).
    """

    def __init__(self, device: SimulatedDevice, port: str, *, baudrate: int = 9600,
                 parity: str = "N", stopbits: int = 1, interval_s: float | None = 1.0,
                 mode: Mode | None = None) -> None:
        if device.profile.frame is None:
            raise ValueError(f"profile {device.profile.name} is not a frame profile")
        super().__init__(device, port, baudrate=baudrate, parity=parity, stopbits=stopbits,
                         interval_s=interval_s, mode=mode)
        spec = device.profile.frame
        self._commands: list[tuple[bytes, str, int]] = [
            (_winsen_command(code), "switch", code) for code in _WINSEN_SWITCH]
        if spec.request is not None:
            self._commands.append((spec.request, "request", 0))
        self._longest = max(len(command) for command, _, _ in self._commands)

    def _initial_mode(self) -> Mode:
        spec = self.device.profile.frame
        assert spec is not None
        return "stream" if spec.checksum == "winsen" else spec.mode

    def message(self) -> bytes:
        return build_frame(self.device.profile, self.device.raw())

    def _corrupt(self, message: bytes) -> bytes:
        if self.device.profile.frame.checksum == "none":  # type: ignore[union-attr]
            return message[:-1]  # nothing to get wrong: cut it short instead
        return message[:-1] + bytes([message[-1] ^ 0xFF])

    def _received(self) -> None:
        while True:
            hits = [(self._input.find(command), command, kind, code)
                    for command, kind, code in self._commands if command in self._input]
            if not hits:
                del self._input[:max(0, len(self._input) - self._longest + 1)]
                return
            at, command, kind, code = min(hits, key=lambda hit: hit[0])
            del self._input[:at + len(command)]
            if kind == "request":
                self.requests += 1
                if self.mode == "query":
                    self._send_message()
            else:
                self._switch(code)

    def _switch(self, code: int) -> None:
        mode, acks = _WINSEN_SWITCH[code]
        answer = self.device.answer()
        if answer == "silent":  # unplugged: it never saw the command
            return
        self.mode = mode  # type: ignore[assignment]
        if acks:
            self._write(self._corrupt(_ZE03_ACK) if answer == "corrupt" else _ZE03_ACK)


class LineSimulator(_SerialSimulator):
    """A text-line device, such as a GSS COZIR CO2 sensor.

    Each line is ``line_format`` filled with the device's raw values and ended by
    CR LF; by default the format is read off the profile's pattern. In query mode
    it answers the profile's request line; in stream mode it sends a line every
    ``interval_s``.
    """

    def __init__(self, device: SimulatedDevice, port: str, *, line_format: str | None = None,
                 baudrate: int = 9600, parity: str = "N", stopbits: int = 1,
                 interval_s: float | None = 1.0, mode: Mode | None = None) -> None:
        spec = device.profile.lines
        if spec is None:
            raise ValueError(f"profile {device.profile.name} is not a lines profile")
        super().__init__(device, port, baudrate=baudrate, parity=parity, stopbits=stopbits,
                         interval_s=interval_s, mode=mode)
        self.line_format = line_format if line_format is not None else line_template(
            device.profile)
        self._pattern = re.compile(spec.pattern)
        self._request = spec.request.strip() if spec.request else None
        self._encoding = spec.encoding

    def _initial_mode(self) -> Mode:
        return self.device.profile.lines.mode  # type: ignore[union-attr]

    def line(self) -> str:
        """The line the device sends now, without its CR LF."""
        raw = self.device.raw()
        text = self.line_format.format(**{
            name: round(value) if round(value) == round(value, 6) else round(value, 6)
            for name, value in raw.items()})
        if not self._pattern.search(text):
            raise ValueError(f"line {text!r} does not match the profile's pattern "
                             f"{self._pattern.pattern!r}")
        return text

    def message(self) -> bytes:
        return (self.line() + "\r\n").encode(self._encoding)

    def _corrupt(self, message: bytes) -> bytes:
        return message[:len(message) // 2] + b"\r\n"  # a line cut short by a glitch

    def _received(self) -> None:
        while (end := self._input.find(b"\n")) >= 0:
            line = bytes(self._input[:end]).decode(self._encoding, errors="replace").strip()
            del self._input[:end + 1]
            if self._request is not None and line == self._request:
                self.requests += 1
                if self.mode == "query":
                    self._send_message()
        if len(self._input) > _READ_CHUNK:
            self._input.clear()
