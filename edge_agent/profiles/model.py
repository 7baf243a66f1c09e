"""The profile schema and the register codecs.

Register values follow the Modbus application protocol: each register is 16 bits,
big-endian on the wire. 32-bit values span two registers in one of the four
orders found on real devices, named by where the bytes of the big-endian value
(A B C D) appear on the wire: ABCD (Modbus default), CDAB (word swap, e.g.
Honeywell Midas), BADC (byte swap) and DCBA (both).
"""

from __future__ import annotations

import struct
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)


class Function(StrEnum):
    """Which Modbus table a register is read from."""

    HOLDING = "holding"  # function code 03
    INPUT = "input"  # function code 04

    @property
    def code(self) -> int:
        return 3 if self is Function.HOLDING else 4


class DataType(StrEnum):
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
        (DataType.INT16, ">h"), (DataType.UINT16, ">H"), (DataType.INT32, ">i"),
        (DataType.UINT32, ">I"), (DataType.FLOAT32, ">f"))
}
_INT_RANGE = {
    DataType.INT16: (-(1 << 15), (1 << 15) - 1), DataType.UINT16: (0, (1 << 16) - 1),
    DataType.INT32: (-(1 << 31), (1 << 31) - 1), DataType.UINT32: (0, (1 << 32) - 1),
}
# Index of each wire byte in the big-endian value; every one is its own inverse.
_PERMUTATION = {
    WordOrder.ABCD: (0, 1, 2, 3), WordOrder.CDAB: (2, 3, 0, 1),
    WordOrder.BADC: (1, 0, 3, 2), WordOrder.DCBA: (3, 2, 1, 0),
}

_Frozen = ConfigDict(extra="forbid", frozen=True)


class Register(BaseModel):
    """One value of a device: where it is and how to turn its registers into a number."""

    model_config = _Frozen

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=32)
    address: int = Field(ge=0, le=0xFFFF, description="0-based PDU address (40001 is 0)")
    function: Function = Function.HOLDING
    type: DataType = DataType.UINT16
    word_order: Annotated[WordOrder | None, BeforeValidator(_word_order_alias)] = None
    scale: float = Field(1.0, allow_inf_nan=False)
    offset: float = Field(0.0, allow_inf_nan=False)
    unit: str = ""
    description: str = ""

    _struct: struct.Struct = PrivateAttr()
    _order: tuple[int, ...] = PrivateAttr()
    _divisor: int = PrivateAttr()

    @field_validator("scale")
    @classmethod
    def _non_zero(cls, scale: float) -> float:
        if scale == 0:
            raise ValueError("scale must not be 0")
        return scale

    @model_validator(mode="after")
    def _check(self) -> Register:
        if self.word_order is not None and self.count == 1:
            raise ValueError(f"word_order applies to 32-bit types only, not {self.type}")
        if self.address + self.count - 1 > 0xFFFF:
            raise ValueError(f"address {self.address} + {self.count} registers passes 0xFFFF")
        return self

    @property
    def count(self) -> int:
        """How many 16-bit registers the value occupies."""
        return 1 if self.type in (DataType.INT16, DataType.UINT16) else 2

    def model_post_init(self, context: Any, /) -> None:
        self._struct = _STRUCT[self.type]
        self._order = _PERMUTATION[self.word_order or WordOrder.ABCD][: 2 * self.count]
        # Data sheets say "raw / 10"; dividing keeps 209 -> 20.9 exact where 209 * 0.1 is not.
        divisor = 1 / self.scale
        self._divisor = round(divisor) if abs(divisor - round(divisor)) < 1e-9 else 0

    def decode(self, words: list[int] | tuple[int, ...]) -> float:
        """Engineering value from the register words as read from the device."""
        wire = b"".join(w.to_bytes(2, "big") for w in words)
        raw = self._struct.unpack(bytes(wire[i] for i in self._order))[0]
        return (raw / self._divisor if self._divisor else raw * self.scale) + self.offset

    def encode(self, value: float) -> list[int]:
        """Register words a device would send for ``value`` (the simulators use this)."""
        raw: float = (value - self.offset) / self.scale
        if self.type in _INT_RANGE:
            low, high = _INT_RANGE[self.type]
            raw = min(max(round(raw), low), high)  # a device clips to its range
        packed = self._struct.pack(raw)
        wire = bytes(packed[i] for i in self._order)
        return [int.from_bytes(wire[i:i + 2], "big") for i in range(0, len(wire), 2)]


class Profile(BaseModel):
    """A sensor model: identity and register map."""

    model_config = _Frozen

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    vendor: str
    model: str
    description: str = ""
    transport: Literal["modbus"] = "modbus"
    registers: list[Register] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Profile:
        problems, names, taken = [], set(), {}
        for reg in self.registers:
            if reg.name in names:
                problems.append(f'register name "{reg.name}" is used twice')
            names.add(reg.name)
            for addr in range(reg.address, reg.address + reg.count):
                other = taken.setdefault((reg.function, addr), reg.name)
                if other != reg.name:
                    problems.append(f'registers "{other}" and "{reg.name}" overlap at '
                                    f"{reg.function} address {addr}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def register(self, name: str) -> Register:
        for reg in self.registers:
            if reg.name == name:
                return reg
        raise KeyError(name)
