"""A device that answers for another unit id (two transmitters set to the same
address, or a gateway that rewrites ids): its answers are never taken for the
device asked, it is reported comm-lost, and the healthy device goes on."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.demo.broker import free_port
from edge_agent.demo.platform import PlatformSubscriber
from tests.support import AgentProcess

ROGUE = """
[[buses]]
name = "rogue"
type = "modbus-tcp"
host = "127.0.0.1"
port = {port}
timeout_ms = 300

[[devices]]
name = "gas2"
bus = "rogue"
unit_id = 1
profile = "generic_4gas"
poll_interval_s = 0.2
"""


@pytest.fixture
def wrong_unit() -> Iterator[int]:
    """A Modbus TCP server that answers every read, well formed, from unit id + 1."""
    server = socket.create_server(("127.0.0.1", free_port()))
    server.settimeout(0.2)
    stop = threading.Event()

    def talk(client: socket.socket) -> None:
        with client:
            while not stop.is_set() and (request := client.recv(260)):
                tid, _, _, unit, function, _, count = struct.unpack(">HHHBBHH", request[:12])
                body = bytes([function, 2 * count]) + b"\x00\x07" * count
                client.sendall(struct.pack(">HHHB", tid, 0, len(body) + 1, unit + 1) + body)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=talk, args=(client,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


def test_an_answer_from_another_unit_is_never_taken(
        site_config: Path, wrong_unit: int, platform: PlatformSubscriber) -> None:
    head, tail = site_config.read_text().split("[mqtt]")
    site_config.write_text(head + ROGUE.format(port=wrong_unit) + "\n[mqtt]" + tail)
    agent = AgentProcess(site_config).start()
    view = platform.gateways["gw-test"]
    try:
        assert platform.wait_for(lambda: "gas2:comm_lost" in view.active, 15), agent.log
        seen = len(view.sample_seqs)
        assert platform.wait_for(lambda: len(view.sample_seqs) >= seen + 21, 10)
        assert 0 == agent.stop()
    finally:
        agent.kill()
    rogue = [s for m in platform.of_kind("telemetry") for s in m.body["samples"]
             if s["ch"].startswith("gas2.")]
    assert rogue
    assert all(s["v"] is None for s in rogue)  # no value of the other unit, ever
    assert {"stale", "comm_lost"} >= {s["q"] for s in rogue}
    assert "good" == view.latest["gas1.co"]["q"]  # the healthy device went on
