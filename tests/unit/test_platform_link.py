"""The pieces of the platform link that need no broker: command parsing and limits,
payload size cap and compression, reconnect delays, and the action hold logic."""

from __future__ import annotations

import asyncio
import gzip
import json
import random

import pytest

from edge_agent import commands
from edge_agent.actions import Actions
from edge_agent.buffer import SampleRow
from edge_agent.commands import CommandError, parse
from edge_agent.config import Action
from edge_agent.records import Event, Quality
from edge_agent.uplink.backoff import Backoff
from edge_agent.uplink.payloads import Origin, Topics, decode


def rows(n: int) -> list[SampleRow]:
    return [SampleRow(i + 1, 1000 + i, f"gas1.ch{i % 7}", "ppm", 20.9, Quality.GOOD)
            for i in range(n)]


def test_telemetry_is_cut_to_the_size_cap_and_keeps_the_first_rows() -> None:
    origin = Origin("s", "g", "e")
    payload, n = origin.telemetry(rows(500), max_bytes=4096)
    assert len(payload) <= 4096
    assert 0 < n < 500
    assert list(range(1, n + 1)) == [s["seq"] for s in decode(payload)["samples"]]
    whole, m = origin.telemetry(rows(500))
    assert (500, 500) == (m, len(json.loads(whole)["samples"]))


def test_gzip_telemetry_decodes_to_the_same_document_and_is_smaller() -> None:
    origin = Origin("s", "g", "e")
    plain, _ = origin.telemetry(rows(200))
    packed, n = origin.telemetry(rows(200), compress=True)
    assert (200, json.loads(plain)) == (n, decode(packed))
    assert packed[:2] == b"\x1f\x8b"
    assert len(packed) < len(plain) / 4
    assert gzip.decompress(packed) == plain


def test_topics_hear_only_this_gateways_commands() -> None:
    topics = Topics("edge/v1/s/g")
    assert "edge/v1/s/g/cmd/+" == topics.commands
    assert "ping" == topics.command_name("edge/v1/s/g/cmd/ping")
    assert None is topics.command_name("edge/v1/s/other/cmd/ping")
    assert None is topics.command_name("edge/v1/s/g/cmd/")
    assert "edge/v1/s/g/cmd/ping/reply" == topics.reply("ping")


@pytest.mark.parametrize(("name", "payload", "code", "request_id"), [
    ("ping", b"", None, None),
    ("ping", b'{"id": 7}', None, 7),
    ("nope", b'{"id": "a"}', "unknown_command", "a"),
    ("ping", b"\xff\xfe", "bad_request", None),
    ("ping", b'"just a string"', "bad_request", None),
    ("ping", b'{"id": "a", "extra": 1}', "bad_request", "a"),
    ("ack-alarm", b'{"id": "b", "key": "k", "alarm": "x", "by": "me"}', "bad_request", "b"),
    ("ack-alarm", b'{"key": "k", "by": ""}', "bad_request", None),
    ("set-config", b'{"toml": ""}', "bad_request", None),
    ("ping", b" " * (commands.MAX_PAYLOAD_BYTES + 1), "bad_request", None),
])
def test_parse_checks_every_command_before_it_runs(name: str, payload: bytes,
                                                   code: str | None,
                                                   request_id: object) -> None:
    if code is None:
        assert request_id == parse(name, payload)[0]
        return
    with pytest.raises(CommandError) as caught:
        parse(name, payload)
    assert (code, request_id) == (caught.value.code, caught.value.details.get("id"))


def test_rate_limit_allows_a_burst_then_refuses() -> None:
    limit = commands.RateLimit(per_s=0.001, burst=3)
    assert [True, True, True, False] == [limit.take() for _ in range(4)]


def test_backoff_spreads_a_fleet_over_the_whole_window() -> None:
    """Full jitter: 1000 gateways retrying after the same drop land evenly in [0, bound]."""
    delays = [Backoff(1.0, 60.0, random.Random(i)).next() for i in range(1000)]
    assert 0 <= min(delays) < 0.01
    assert 0.99 < max(delays) <= 1.0
    assert 80 < sum(1 for d in delays if d < 0.1) < 120  # a tenth of them in each tenth
    backoff = Backoff(1.0, 8.0, random.Random(1))
    bounds = []
    for _ in range(6):
        bounds.append(backoff.bound_s)
        backoff.next()
    assert [1, 2, 4, 8, 8, 8] == bounds
    backoff.reset()
    assert 1 == backoff.bound_s


def test_actions_hold_until_cleared_and_acknowledged() -> None:
    written: list[tuple[str, bool]] = []

    async def write(device: str, output: str, on: bool) -> None:
        written.append((output, on))

    def event(transition: str, key: str = "gas1.co:above:2") -> Event:
        return Event(1000, "alarm", transition, "a1", key)

    async def scenario() -> dict[str, object]:
        actions = Actions([Action(name="fan", when=["gas1.co:*"], device="r", output="relay_1"),
                           Action(name="horn", when=["*:above:2"], device="r", output="relay_2",
                                  release="cleared")], write, lambda *_: None)
        seen = {}
        actions.follow([event("raised"), event("raised", "gas1.h2s:above:1")])
        await asyncio.sleep(0)
        seen["raised"] = actions.state()
        actions.follow([event("returned_to_normal")])
        seen["cleared"], seen["awaiting"] = actions.state(), actions.awaiting_ack()
        actions.follow([event("acknowledged")])
        seen["acknowledged"] = actions.state()
        await actions.close()
        return seen

    seen = asyncio.run(scenario())
    assert {"fan": True, "horn": True} == seen["raised"]
    assert {"fan": True, "horn": False} == seen["cleared"]
    assert {"gas1.co:above:2": ("a1", "alarm")} == seen["awaiting"]
    assert {"fan": False, "horn": False} == seen["acknowledged"]
    assert ("relay_1", True) in written
