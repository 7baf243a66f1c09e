"""Device profiles: loading errors and register decoding against known vectors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from edge_agent.profiles import ProfileLibrary, Register, builtin_profiles_dir, load_profile
from edge_agent.validation import FileError

# 123.456 as float32 is 0x42F6E979; -123456789 as int32 is 0xF8A432EB.
FLOAT_WORDS = {"ABCD": [0x42F6, 0xE979], "CDAB": [0xE979, 0x42F6],
               "BADC": [0xF642, 0x79E9], "DCBA": [0x79E9, 0xF642]}
INT_WORDS = {"ABCD": [0xF8A4, 0x32EB], "CDAB": [0x32EB, 0xF8A4],
             "BADC": [0xA4F8, 0xEB32], "DCBA": [0xEB32, 0xA4F8]}


@pytest.mark.parametrize("order", FLOAT_WORDS)
def test_register_float32_word_orders(order: str) -> None:
    reg = Register(name="x", address=0, type="float32", word_order=order)
    assert 123.456 == pytest.approx(reg.decode(FLOAT_WORDS[order]), rel=1e-7)
    assert FLOAT_WORDS[order] == reg.encode(123.456)


@pytest.mark.parametrize("order", INT_WORDS)
def test_register_int32_word_orders(order: str) -> None:
    reg = Register(name="x", address=0, type="int32", word_order=order)
    assert -123456789 == reg.decode(INT_WORDS[order])
    assert INT_WORDS[order] == reg.encode(-123456789)


@pytest.mark.parametrize(("order", "word_order"), [("ABCD", "big"), ("CDAB", "little")])
def test_register_agrees_with_pymodbus_for_the_orders_it_supports(order: str,
                                                                   word_order: str) -> None:
    """An independent decoder (pymodbus) reads our ABCD and CDAB the same way."""
    ours = Register(name="x", address=0, type="float32", word_order=order)
    theirs = ModbusTcpClient.convert_from_registers(
        FLOAT_WORDS[order], ModbusTcpClient.DATATYPE.FLOAT32, word_order=word_order)
    assert theirs == ours.decode(FLOAT_WORDS[order])


@pytest.mark.parametrize(("alias", "order"), [("msw-be", "ABCD"), ("LSW-BE", "CDAB"),
                                              ("Byte-Swap", "BADC"), ("lsw-le", "DCBA")])
def test_register_word_order_aliases(alias: str, order: str) -> None:
    assert order == Register(name="x", address=0, type="uint32", word_order=alias).word_order


@pytest.mark.parametrize("ambiguous", ["little", "big", "LE"])
def test_register_word_order_refuses_ambiguous_names(ambiguous: str) -> None:
    with pytest.raises(ValueError, match="'ABCD', 'CDAB', 'BADC' or 'DCBA'"):
        Register(name="x", address=0, type="uint32", word_order=ambiguous)


def test_register_scaled_signed_value() -> None:
    """A two's-complement temperature in tenths (SAFETY_REFERENCE §8.5: 0xFF33 = -20.5)."""
    reg = Register(name="t", address=1, type="int16", scale=0.1, unit="°C")
    assert -20.5 == reg.decode([0xFF33])
    assert 20.9 == Register(name="o2", address=0, scale=0.1).decode([209])


def test_register_float32_nan_decodes_to_nan() -> None:
    reg = Register(name="x", address=0, type="float32")
    assert math.isnan(reg.decode([0x7FC0, 0x0000]))


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from(list(INT_WORDS)))
def test_register_int32_round_trip(value: int, order: str) -> None:
    reg = Register(name="x", address=0, type="int32", word_order=order)
    assert value == reg.decode(reg.encode(value))


def test_register_encode_clips_to_the_type_range() -> None:
    assert [0] == Register(name="x", address=0).encode(-5)
    assert [0xFFFF] == Register(name="x", address=0).encode(1e9)


@pytest.mark.parametrize(("fields", "message"), [
    ({"type": "uint16", "word_order": "CDAB"}, "word_order applies to 32-bit types only"),
    ({"scale": 0}, "scale must not be 0"),
    ({"scale": float("inf")}, "finite number"),
    ({"address": 0xFFFF, "type": "uint32"}, "passes 0xFFFF"),
])
def test_register_rejects_impossible_settings(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Register(name="x", address=fields.pop("address", 0), **fields)


def test_profile_errors_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\nvendor = "v"\nmodel = "m"\nfollows = "f"\nsource = "s"\n'
                    'registers = [\n'
                    '  { name = "a", address = 0, type = "uint32" },\n'
                    '  { name = "b", address = 1 },\n'
                    '  { name = "c", address = 2, typ = "int16" },\n]\n')
    with pytest.raises(FileError) as caught:
        load_profile(path)
    assert [f'{path}: registers[2].typ (line 9): unknown key "typ"; did you mean "type"?'
            ] == caught.value.report().splitlines()
    path.write_text(path.read_text().replace("typ =", "type ="))
    with pytest.raises(FileError, match='registers "a" and "b" overlap at holding address 1'):
        load_profile(path)


def test_profile_name_must_match_its_file(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text('name = "bad"\nvendor = "v"\nmodel = "m"\nfollows = "f"\nsource = "s"\n'
                    'registers = [{ name = "a", address = 0 }]\n')
    with pytest.raises(FileError, match='must equal the file name "other"'):
        load_profile(path)


def test_profiles_shipped_all_load() -> None:
    library = ProfileLibrary()
    assert library.directory == builtin_profiles_dir()
    for name in library.names():
        assert library.get(name).points


def test_profile_error_lines_follow_inline_array_items(tmp_path: Path) -> None:
    """The line is the item's own, even where earlier items use the same key."""
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\nvendor = "v"\nmodel = "m"\nfollows = "f"\nsource = "s"\n'
                    'registers = [\n'
                    '  { name = "a", address = 0, word_order = "CDAB", type = "uint32" },\n'
                    '  { name = "b", address = 2, type = "int16" },\n'
                    '  { name = "c", address = 3, word_order = "CDAB" },\n]\n')
    with pytest.raises(FileError) as caught:
        load_profile(path)
    assert [f"{path}: registers[2] (line 9): word_order applies to 32-bit types only, "
            "not uint16"] == caught.value.report().splitlines()
