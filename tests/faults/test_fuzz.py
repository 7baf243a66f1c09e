"""Fuzzing with hypothesis: whatever arrives at a decoder, a config loader or the
command parser, the answer is a result or the one clear error type of that
entry point; never a crash, never a hang, never unbounded memory."""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU

from edge_agent import commands
from edge_agent.acquisition.serial import FrameCodec, LineCodec, checksum_ok
from edge_agent.commands import CommandError
from edge_agent.config import load_config
from edge_agent.profiles import ProfileLibrary
from edge_agent.records import Quality
from edge_agent.validation import FileError
from tests.support import REPO

LIBRARY = ProfileLibrary()


def refusal(call: Callable[[], object]) -> Any:
    """The clear error of an entry point (FileError, CommandError), or None if it took
    the input; any other exception fails the test."""
    try:
        call()
    except (FileError, CommandError) as exc:
        return exc
    return None

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
chunks = st.lists(st.binary(max_size=64), max_size=30)


@FUZZ
@given(chunks)
def test_frame_codec_survives_noise_and_stays_bounded(parts: list[bytes]) -> None:
    """Bytes from a serial line arrive in any split; noise is dropped, the pending
    buffer never holds more than one frame, and only checksummed frames decode."""
    codec = FrameCodec(LIBRARY.get("winsen_ze03_co"))
    spec = LIBRARY.get("winsen_ze03_co").frame
    received = bytearray()
    for part in parts:
        received += part
        found, bad = codec.take(received)
        assert bad >= 0
        assert len(received) < spec.length + len(spec.header)
        for values in found:
            assert set(values) == {f.name for f in LIBRARY.get("winsen_ze03_co").fields}


@FUZZ
@given(st.binary(max_size=40), st.integers(0, 8))
def test_frame_codec_finds_a_valid_frame_after_any_noise(noise: bytes, cut: int) -> None:
    codec = FrameCodec(LIBRARY.get("winsen_ze03_co"))
    # A ZE03 answer (9 bytes, 0xFF start, Winsen checksum): 0x0064 = 100 raw.
    frame = bytes([0xFF, 0x86, 0x00, 0x64, 0x00, 0x00, 0x00, 0x00])
    frame += bytes([(~sum(frame[1:8]) + 1) & 0xFF])
    assert checksum_ok("winsen", frame)
    received = bytearray(noise.replace(b"\xff", b"\x00"))  # noise without a false header
    found = []
    for part in (frame[:cut], frame[cut:]):
        received += part
        found += codec.take(received)[0]
    assert 1 == len(found)


@FUZZ
@given(chunks)
def test_line_codec_survives_noise_and_stays_bounded(parts: list[bytes]) -> None:
    codec = LineCodec(LIBRARY.get("gss_cozir_ah"))
    received = bytearray()
    for part in parts:
        received += part
        found, bad = codec.take(received)
        assert bad >= 0
        assert len(received) <= 4096
        assert all(isinstance(v, float) for values in found for v in values.values())


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([FramerRTU, FramerSocket]))
def test_modbus_frame_decoder_takes_any_bytes(data: bytes, framer: type) -> None:
    """What a Modbus line or socket delivers goes through the framer and the PDU
    decoder the agent's client uses; garbage is consumed or waited on, never raised."""
    decoder = DecodePDU(False)
    used, _, _, pdu = framer(decoder).decode(data)
    assert 0 <= used <= len(data)
    if pdu:
        decoder.decode(pdu)  # a response object, or None for an unknown function


@FUZZ
@given(st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=200))
def test_register_words_of_any_value_decode_to_a_value_and_a_quality(words: list[int]) -> None:
    """A device may put anything in its registers: every value gets a quality."""
    profile = LIBRARY.get("generic_4gas")
    raw = {p.name: float(words[i % len(words)]) if words else 0.0
           for i, p in enumerate(profile.registers)}
    for value, quality in profile.interpret(raw).values():
        assert value is None or value == value  # a number or nothing, never NaN
        assert isinstance(quality, Quality)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                  max_size=5), max_leaves=20)


@FUZZ
@given(st.sampled_from([*commands.ARGS, "nope", ""]),
       st.one_of(st.binary(max_size=200),
                 json_values.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(["id", "key", "alarm", "by", "device", "toml",
                                                  "x"]), json_values, max_size=4)
                 .map(lambda v: json.dumps(v).encode())))
def test_command_payloads_parse_or_get_a_clear_error(name: str, payload: bytes) -> None:
    refused = refusal(lambda: commands.parse(name, payload))
    if refused is not None:
        assert refused.code in ("unknown_command", "bad_request")
        assert str(refused)


toml_keys = st.sampled_from(["gateway_id", "site_id", "buses", "devices", "mqtt", "buffer",
                             "name", "type", "host", "port", "bus", "unit_id", "profile",
                             "limits", "level", "above", "channels", "co", "path", "x"])
toml_values = st.recursive(
    st.booleans() | st.integers(-10, 70000) | st.floats(allow_nan=True) |
    st.text(string.printable, max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(toml_keys, inner, max_size=4),
    max_leaves=25)


@FUZZ
@given(st.dictionaries(toml_keys, toml_values, max_size=8))
def test_random_config_structures_load_or_list_problems(tmp_path: Path, data: dict) -> None:
    path = tmp_path / "site.toml"
    try:
        path.write_text(tomlkit.dumps(data))
    except (TypeError, ValueError):  # a structure TOML cannot hold
        return
    refused = refusal(lambda: load_config(path))
    if refused is not None:
        assert refused.problems
        assert all(isinstance(p, str) and p for p in refused.problems)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_as_a_config_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(data)
    refused = refusal(lambda: load_config(path))
    assert refused is None or refused.problems


@FUZZ
@given(st.integers(0, 3000), st.binary(min_size=1, max_size=4))
def test_a_real_config_with_one_byte_changed(tmp_path: Path, at: int, junk: bytes) -> None:
    """Mistakes of a technician's editor: one stray byte anywhere in a real config."""
    text = (REPO / "config" / "plating_shop.toml").read_bytes()
    at %= len(text)
    path = tmp_path / "site.toml"
    path.write_bytes(text[:at] + junk + text[at + 1:])
    refused = refusal(lambda: load_config(path))
    assert refused is None or refused.problems
