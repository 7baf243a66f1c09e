"""The profile schema, the value codecs, and how a device's raw values become readings.

A profile describes one sensor model: how to reach its values (Modbus registers,
fixed-length binary frames, or text lines) and how to turn them into engineering
values with a quality. Everything is resolved at load time, so polling never
matches strings.

Modbus values follow the Modbus application protocol: each register is 16 bits,
big-endian on the wire. 32-bit values span two registers in one of the four
orders found on real devices, named by where the bytes of the big-endian value
(A B C D) appear on the wire: ABCD (Modbus default), CDAB (word swap, e.g.
Honeywell Midas), BADC (byte swap) and DCBA (both).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from edge_agent.records import Quality


class Function(StrEnum):
    """Which Modbus table a value is read from."""

    COIL = "coil"  # function code 01 (read), 05 (write)
    DISCRETE = "discrete"  # function code 02
    HOLDING = "holding"  # function code 03 (read), 06 (write)
    INPUT = "input"  # function code 04

    @property
    def code(self) -> int:
        return {"coil": 1, "discrete": 2, "holding": 3, "input": 4}[self.value]

    @property
    def is_bits(self) -> bool:
        return self in (Function.COIL, Function.DISCRETE)


class DataType(StrEnum):
    BOOL = "bool"  # one coil or discrete input
    INT8 = "int8"  # frames only
    UINT8 = "uint8"  # frames only
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"


class WordOrder(StrEnum):
    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"


# Other names data sheets use for the four orders: which word comes first (MSW,
# LSW) and the byte order inside each word (BE, LE). Bare "little"/"big" are not
# accepted: libraries disagree on whether they mean the words or the bytes.
_WORD_ORDER_ALIASES = {
    "MSW-BE": "ABCD", "LSW-BE": "CDAB", "MSW-LE": "BADC", "LSW-LE": "DCBA",
    "WORD-SWAP": "CDAB", "BYTE-SWAP": "BADC", "WORD-BYTE-SWAP": "DCBA",
}


def _word_order_alias(value: Any) -> Any:
    if isinstance(value, str):
        upper = value.strip().upper()
        return _WORD_ORDER_ALIASES.get(upper, upper)
    return value


_STRUCT = {
    kind: struct.Struct(fmt) for kind, fmt in (
        (DataType.BOOL, ">B"), (DataType.INT8, ">b"), (DataType.UINT8, ">B"),
        (DataType.INT16, ">h"), (DataType.UINT16, ">H"), (DataType.INT32, ">i"),
        (DataType.UINT32, ">I"), (DataType.FLOAT32, ">f"))
}
_INT_RANGE = {
    DataType.BOOL: (0, 1), DataType.INT8: (-128, 127), DataType.UINT8: (0, 255),
    DataType.INT16: (-(1 << 15), (1 << 15) - 1), DataType.UINT16: (0, (1 << 16) - 1),
    DataType.INT32: (-(1 << 31), (1 << 31) - 1), DataType.UINT32: (0, (1 << 32) - 1),
}
# Index of each wire byte in the big-endian value; every one is its own inverse.
_PERMUTATION = {
    WordOrder.ABCD: (0, 1, 2, 3), WordOrder.CDAB: (2, 3, 0, 1),
    WordOrder.BADC: (1, 0, 3, 2), WordOrder.DCBA: (3, 2, 1, 0),
}

_Frozen = ConfigDict(extra="forbid", frozen=True)
PointName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=32)]
# The substances edge-agent knows default limits for (edge_agent/config/defaults.py):
# toxic gases of GBZ 2.1, oxygen, and flammables as %LEL.
Gas = Literal["o2", "flammable", "h2s", "co", "hcn", "hcl", "cl2", "nh3", "so2", "no2", "hf",
              "co2", "h2", "voc"]
# What a device can say about its own readings (status codes and bits).
StatusState = Literal["good", "bad", "not_ready", "device_fault", "out_of_range"]
_NO_VALUE = (Quality.BAD, Quality.NOT_READY, Quality.DEVICE_FAULT, Quality.COMM_LOST)


def _hex_bytes(value: Any) -> Any:
    """Bytes from hex text such as ``"FF 01 86"``, as data sheets print frames."""
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"{value!r} is not hex bytes like \"FF 01 86\"") from None
    return value


# Written back as data sheets print them, for the config hash and `profile show`.
HexBytes = Annotated[bytes, BeforeValidator(_hex_bytes),
                     PlainSerializer(lambda b: b.hex(" ").upper(), return_type=str)]


class Codec(NamedTuple):
    packing: struct.Struct
    order: tuple[int, ...] | None  # the wire bytes' big-endian order; None: as sent
    divisor: int  # 1 / scale when that is whole (0 otherwise)


class Point(BaseModel):
    """One value of a device and how its raw number becomes an engineering value.

    ``engineering = raw / 10**decimals * scale + offset``, where ``decimals`` is
    the value of the point named by ``decimals_from`` (devices that report their
    own decimal point) or 0. ``bits = [lo, hi]`` takes bits lo..hi of the raw
    integer first (status words, packed fields).
    """

    model_config = _Frozen

    name: PointName
    type: DataType = DataType.UINT16
    word_order: Annotated[WordOrder | None, BeforeValidator(_word_order_alias)] = None
    bits: tuple[int, int] | None = None
    decimals_from: PointName | None = None
    scale: float = Field(1.0, allow_inf_nan=False)
    offset: float = Field(0.0, allow_inf_nan=False)
    unit: str = ""
    range: tuple[float, float] | None = Field(
        None, description="the sensor's measuring range; readings outside are out_of_range")
    fault_values: list[int] = Field(default_factory=list,
                                    description="raw values by which the device reports a fault")
    publish: bool = Field(True, description="false for helper values (status, decimals)")
    gas: Gas | None = Field(None, description="what the value measures, for default limits")
    description: str = ""

    @field_validator("scale")
    @classmethod
    def _non_zero(cls, scale: float) -> float:
        if scale == 0:
            raise ValueError("scale must not be 0")
        return scale

    @model_validator(mode="after")
    def _check_point(self) -> Point:
        if self.word_order is not None and self.size != 4:
            raise ValueError(f"word_order applies to 32-bit types only, not {self.type}")
        if self.bits is not None:
            lo, hi = self.bits
            width = 8 * self.size
            if self.type is DataType.FLOAT32 or not 0 <= lo <= hi < width:
                raise ValueError(f"bits = [{lo}, {hi}] must lie within the {width} bits of "
                                 f"an integer type, low bit first")
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"range {list(self.range)} must be [low, high] with low < high")
        return self

    @property
    def size(self) -> int:
        """Bytes of the raw value."""
        return _STRUCT[self.type].size if self.type is not DataType.BOOL else 1

    @cached_property
    def codec(self) -> Codec:
        """How this value's bytes and numbers convert, worked out once: it is used for
        every value polled, and a private attribute costs a microsecond a read.
        """
        order = _PERMUTATION[self.word_order or WordOrder.ABCD] if self.size == 4 else None
        # Data sheets say "raw / 10"; dividing keeps 209 -> 20.9 exact where 209 * 0.1 is not.
        divisor = 1 / self.scale
        return Codec(_STRUCT[self.type], None if order == (0, 1, 2, 3) else order,
                     round(divisor) if abs(divisor - round(divisor)) < 1e-9 else 0)

    def raw_from_bytes(self, wire: bytes) -> int | float:
        """The raw number from its bytes as sent (word order and bit field applied)."""
        codec = self.codec
        raw = codec.packing.unpack(wire if codec.order is None
                                   else bytes(wire[i] for i in codec.order))[0]
        if self.bits is not None:
            lo, hi = self.bits
            raw = (raw >> lo) & ((1 << (hi - lo + 1)) - 1)
        return raw

    def bytes_from_raw(self, raw: float) -> bytes:
        """Inverse of ``raw_from_bytes`` without the bit field (the simulators use this)."""
        if self.type in _INT_RANGE:
            low, high = _INT_RANGE[self.type]
            raw = min(max(round(raw), low), high)  # a device clips to its range
        codec = self.codec
        packed = codec.packing.pack(raw)
        return packed if codec.order is None else bytes(packed[i] for i in codec.order)

    def engineering(self, raw: float, decimals: int = 0) -> float:
        value = raw / 10**decimals if decimals else raw
        divisor = self.codec.divisor
        return (value / divisor if divisor else value * self.scale) + self.offset

    def raw_for(self, value: float, decimals: int = 0) -> float:
        """The raw number a device sends for ``value`` (inverse of ``engineering``)."""
        return (value - self.offset) / self.scale * 10**decimals


class Register(Point):
    """A value in a Modbus table: holding or input registers, coils or discrete inputs."""

    address: int = Field(ge=0, le=0xFFFF, description="0-based PDU address (40001 is 0)")
    function: Function = Function.HOLDING

    @model_validator(mode="after")
    def _check_register(self) -> Register:
        if self.function.is_bits != (self.type is DataType.BOOL):
            raise ValueError(f"a {self.function} value needs type = "
                             f"{'bool' if self.function.is_bits else 'a register type'}, "
                             f"not {self.type}")
        if self.type in (DataType.INT8, DataType.UINT8):
            raise ValueError(f"{self.type} exists in frames only; a register is 16 bits")
        if self.address + self.count - 1 > 0xFFFF:
            raise ValueError(f"address {self.address} + {self.count} registers passes 0xFFFF")
        return self

    @property
    def count(self) -> int:
        """How many registers (or bits) the value occupies."""
        return 1 if self.size <= 2 else 2

    def raw(self, words: list[int] | tuple[int, ...]) -> int | float:
        """The raw number from register words (or a bit) as read from the device."""
        if self.type is DataType.BOOL:
            return int(bool(words[0]))
        if len(words) == 1:
            return self.raw_from_bytes(words[0].to_bytes(2, "big"))
        return self.raw_from_bytes(b"".join(w.to_bytes(2, "big") for w in words))

    def decode(self, words: list[int] | tuple[int, ...]) -> float:
        """Engineering value of a register that needs no other register to decode."""
        return self.engineering(self.raw(words))

    def encode(self, value: float) -> list[int]:
        """Register words a device would send for ``value`` (no bit field, no decimals)."""
        wire = self.bytes_from_raw(self.raw_for(value))
        if self.type is DataType.BOOL:
            return [wire[0]]
        return [int.from_bytes(wire[i:i + 2], "big") for i in range(0, len(wire), 2)]


class DataField(Point):
    """A value of a frame-based or text-line device.

    In a binary frame, ``byte`` is the offset of the value's first byte (values
    are big-endian unless ``word_order`` says otherwise). In a text line, the value
    is the regex group ``group`` (default: the field's name), parsed as a number.
    """

    byte: int | None = Field(None, ge=0, le=255)
    group: str | None = None


class StatusRule(BaseModel):
    """What a device's status point says about the quality of its readings.

    ``codes`` maps whole values of the point (an enumerated status) and ``bits``
    maps single bits (a status word) to a state. A state other than "good"
    overrides the quality of ``channels`` (default: every published value).
    """

    model_config = _Frozen

    point: PointName
    codes: dict[int, StatusState] = Field(default_factory=dict)
    bits: dict[int, StatusState] = Field(default_factory=dict)
    default: StatusState = Field("good", description="state of a code not listed")
    channels: list[PointName] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StatusRule:
        if bool(self.codes) == bool(self.bits):
            raise ValueError("give codes = {...} (an enumerated status) or bits = {...} "
                             "(a status word), not both or neither")
        if any(not 0 <= bit < 32 for bit in self.bits):
            raise ValueError("status bits are numbered 0-31")
        return self

    def state(self, raw: int) -> StatusState:
        if self.codes:
            return self.codes.get(raw, self.default)
        worst: StatusState = "good"
        for bit, state in sorted(self.bits.items()):
            if raw >> bit & 1 and _SEVERITY[state] > _SEVERITY[worst]:
                worst = state
        return worst


_SEVERITY = {"good": 0, "out_of_range": 1, "not_ready": 2, "bad": 3, "device_fault": 4}
_STATE_QUALITY = {"good": Quality.GOOD, "bad": Quality.BAD, "not_ready": Quality.NOT_READY,
                  "device_fault": Quality.DEVICE_FAULT, "out_of_range": Quality.OUT_OF_RANGE}


class Output(BaseModel):
    """A writable coil or register that switches something (sounder, beacon, fan)."""

    model_config = _Frozen

    name: PointName
    function: Literal["coil", "holding"] = "coil"
    address: int = Field(ge=0, le=0xFFFF)
    on: int = Field(1, ge=0, le=0xFFFF, description="value written to switch on")
    off: int = Field(0, ge=0, le=0xFFFF, description="value written to switch off")
    description: str = ""

    @model_validator(mode="after")
    def _coil_values(self) -> Output:
        if self.function == "coil" and {self.on, self.off} != {0, 1}:
            raise ValueError("a coil is switched with on = 1, off = 0 (or the reverse)")
        return self


class FrameSpec(BaseModel):
    """Fixed-length binary frames, e.g. the 9-byte Winsen family (0xFF start byte)."""

    model_config = _Frozen

    length: int = Field(ge=3, le=256)
    header: HexBytes = Field(description='the bytes every frame to decode starts with, "FF 86"')
    checksum: Literal["winsen", "sum8", "crc16-modbus", "none"]
    mode: Literal["query", "stream"] = Field(
        description="query: send `request`, read the answer; stream: the device sends on its own")
    request: HexBytes | None = None
    setup: list[HexBytes] = Field(default_factory=list,
                                  description="sent once after opening the port")

    @model_validator(mode="after")
    def _request_for_query(self) -> FrameSpec:
        if (self.mode == "query") != (self.request is not None):
            raise ValueError("query mode needs a request; stream mode has none")
        if len(self.header) >= self.length:
            raise ValueError("the header must be shorter than the frame")
        return self


class LineSpec(BaseModel):
    """Text lines such as ``T=23.5,H=45.2`` (CR LF ended), decoded with a regular expression."""

    model_config = _Frozen

    pattern: str
    mode: Literal["query", "stream"]
    request: str | None = Field(None, description="sent each poll in query mode, e.g. \"R\\r\\n\"")
    setup: list[str] = Field(default_factory=list, description="sent once after opening")
    encoding: Literal["ascii", "utf-8"] = "ascii"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _request_for_query(self) -> LineSpec:
        if (self.mode == "query") != (self.request is not None):
            raise ValueError("query mode needs a request; stream mode has none")
        return self


class Profile(BaseModel):
    """A sensor model: identity, where its values are and how to read them."""

    model_config = _Frozen

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    vendor: str
    model: str
    follows: str = Field(description="the real product family this profile follows")
    source: str = Field(description="where the register map or frame format comes from")
    description: str = ""
    transport: Literal["modbus", "frame", "lines"] = "modbus"
    registers: list[Register] = Field(default_factory=list)
    frame: FrameSpec | None = None
    lines: LineSpec | None = None
    fields: list[DataField] = Field(default_factory=list)
    status: list[StatusRule] = Field(default_factory=list)
    heartbeat: PointName | None = Field(
        None, description="a point that changes on every update; unchanged means stale")
    outputs: list[Output] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Profile:
        problems = self._transport_problems() + self._name_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _transport_problems(self) -> list[str]:
        sections = {"modbus": ("registers",), "frame": ("frame", "fields"),
                    "lines": ("lines", "fields")}
        problems = [f"transport {self.transport} needs {s}" for s in sections[self.transport]
                    if not getattr(self, s)]
        for transport, needed in sections.items():
            if transport != self.transport:
                problems += [f"{s} belongs to transport {transport}, not {self.transport}"
                             for s in needed if s != "fields" and getattr(self, s)]
        if self.outputs and self.transport != "modbus":
            problems.append("outputs need transport modbus")
        for f in self.fields:
            if self.transport == "frame" and f.byte is None:
                problems.append(f'field "{f.name}" needs byte = its offset in the frame')
            elif self.transport == "frame" and self.frame and (
                    f.byte + f.size > self.frame.length):  # type: ignore[operator]
                problems.append(f'field "{f.name}" passes the end of the '
                                f"{self.frame.length}-byte frame")
            elif self.transport == "lines" and (f.byte is not None or f.bits is not None):
                problems.append(f'field "{f.name}": byte and bits belong to frames, a line '
                                "field is a regex group")
            elif self.transport == "lines" and self.lines and (
                    (f.group or f.name) not in re.compile(self.lines.pattern).groupindex):
                problems.append(f'field "{f.name}": the pattern has no group '
                                f'"(?P<{f.group or f.name}>...)"')
        return problems

    def _name_problems(self) -> list[str]:
        problems, names, taken = [], set(), {}
        for point in self.points:
            if point.name in names:
                problems.append(f'value name "{point.name}" is used twice')
            names.add(point.name)
            if isinstance(point, Register) and point.bits is None:
                for addr in range(point.address, point.address + point.count):
                    other = taken.setdefault((point.function, addr), point.name)
                    if other != point.name:
                        problems.append(f'registers "{other}" and "{point.name}" overlap at '
                                        f"{point.function} address {addr}")
        for point in self.points:
            if point.decimals_from and point.decimals_from not in names:
                problems.append(f'{point.name}.decimals_from: no value "{point.decimals_from}"')
        for rule in self.status:
            problems += [f'status: no value "{n}"' for n in [rule.point, *(rule.channels or [])]
                         if n not in names]
        if self.heartbeat and self.heartbeat not in names:
            problems.append(f'heartbeat: no value "{self.heartbeat}"')
        if not any(p.publish for p in self.points):
            problems.append("no value is published")
        return problems

    @property
    def points(self) -> list[Register] | list[DataField]:
        return self.registers if self.transport == "modbus" else self.fields

    @property
    def channels(self) -> list[Point]:
        """The published values, in profile order."""
        return [p for p in self.points if p.publish]

    @cached_property
    def by_name(self) -> dict[str, Point]:
        """Every value by its name (looked up for every value polled)."""
        return {p.name: p for p in self.points}

    def point(self, name: str) -> Point:
        return self.by_name[name]

    def interpret(self, raw: Mapping[str, float]) -> dict[str, tuple[float | None, Quality]]:
        """Engineering value and quality of every published value, from raw numbers.

        Order of judgement: a non-finite raw is bad; a raw in ``fault_values`` is a
        device fault; then the status rules; a value outside ``range`` is
        out_of_range. Bad, faulted and not-ready readings carry no value.
        """
        states: dict[str, Quality] = {}
        for rule in self.status:
            quality = _STATE_QUALITY[rule.state(int(raw[rule.point]))]
            for name in rule.channels or [p.name for p in self.channels]:
                states[name] = max(states.get(name, Quality.GOOD), quality, key=_rank)
        out: dict[str, tuple[float | None, Quality]] = {}
        for point in self.channels:
            value = raw[point.name]
            if not math.isfinite(value):
                out[point.name] = (None, Quality.BAD)
                continue
            if value in point.fault_values:
                out[point.name] = (None, Quality.DEVICE_FAULT)
                continue
            decimals = int(raw[point.decimals_from]) if point.decimals_from else 0
            value = point.engineering(value, decimals)
            quality = states.get(point.name, Quality.GOOD)
            if quality is Quality.GOOD and point.range and not (
                    point.range[0] <= value <= point.range[1]):
                quality = Quality.OUT_OF_RANGE
            out[point.name] = (None if quality in _NO_VALUE else value, quality)
        return out


def _rank(quality: Quality) -> int:
    return {Quality.GOOD: 0, Quality.OUT_OF_RANGE: 1, Quality.NOT_READY: 2, Quality.BAD: 3,
            Quality.DEVICE_FAULT: 4}.get(quality, 5)
