"""Several broker endpoints: the agent moves to the next when the one in use dies, does
not flap back, loses nothing, and keeps its session (commands queued while away)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.nats import NatsCluster
from edge_agent.demo.platform import PlatformSubscriber
from simulators import ModbusTcpSimulator, SimulatedDevice
from tests.integration.test_cli import edge_agent
from tests.integration.test_pipeline import all_seqs, first_arrival_order
from tests.support import SITE, AgentProcess, CommandClient, buffered, last_seq, wait_until

GATEWAY = "gw-test"


def endpoints_site(tmp_path: Path, modbus_port: int, ports: list[int]) -> Path:
    text = SITE.format(modbus_port=modbus_port, broker_port=ports[0],
                       buffer=tmp_path / "buffer.db", interval=0.2)
    nodes = ", ".join(f'{{ host = "127.0.0.1", port = {p} }}' for p in ports)
    text = text.replace(f'host = "127.0.0.1"\nport = {ports[0]}\n', f"endpoints = [{nodes}]\n")
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[list[tuple[Mosquitto, PlatformSubscriber]]]:
    """Two independent persistent mosquittos, each with a platform subscriber."""
    with contextlib.ExitStack() as stack:
        pairs = []
        for name in ("a", "b"):
            broker = stack.enter_context(Mosquitto(workdir=tmp_path / name, persistent=True))
            platform = PlatformSubscriber(broker.port, client_id=f"platform-{name}",
                                          clean_session=False).start()
            stack.callback(platform.stop)
            pairs.append((broker, platform))
        yield pairs


def test_failover_to_the_next_endpoint_and_back_only_when_that_one_fails(
        tmp_path: Path, modbus_server: ModbusTcpSimulator, gas_detector: SimulatedDevice,
        two_brokers: list[tuple[Mosquitto, PlatformSubscriber]]) -> None:
    (a, pa), (b, pb) = two_brokers
    config = endpoints_site(tmp_path, modbus_server.port, [a.port, b.port])
    buffer = tmp_path / "buffer.db"
    on_a, on_b = pa.gateways[GATEWAY], pb.gateways[GATEWAY]
    agent = AgentProcess(config).start()
    try:
        assert pa.wait_for(lambda: on_a.status.get("broker") == f"127.0.0.1:{a.port}"
                           and len(on_a.sample_seqs) >= 10, 20), agent.log
        a.kill()
        gas_detector.pin("co", 200)  # raised around the failover
        assert pb.wait_for(lambda: on_b.status.get("state") == "online", 20), agent.log
        assert (f"127.0.0.1:{b.port}", 1) == (on_b.status["broker"], on_b.status["failovers"])
        assert pb.wait_for(lambda: "gas1.co:above:2" in on_b.active, 20), agent.log

        a.start()  # the preferred one is back: the agent stays where it works
        seen = len(on_b.sample_seqs)
        assert pb.wait_for(lambda: len(on_b.sample_seqs) >= seen + 30, 20)
        assert pb.wait_for(lambda: on_b.health.get("uplink", {}).get("last_outage_s"), 20)
        assert on_b.health["uplink"]["broker"] == f"127.0.0.1:{b.port}"
        assert 0 < on_b.health["uplink"]["last_outage_s"] < 10

        b.kill()  # now it fails: back to a, the next in order
        assert pa.wait_for(lambda: on_a.status.get("failovers") == 2, 20), agent.log
        gas_detector.pin("co", 2)
        assert pa.wait_for(lambda: "gas1.co:above:2" not in on_a.active, 20), agent.log
        wait_until(lambda: buffered(buffer) == {"samples": 0, "events": 0}, 20, "drained")
        assert 0 == agent.stop()
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
    seqs = all_seqs(pa) + all_seqs(pb)
    assert set(seqs) == set(range(1, last_seq(buffer) + 1)), "every committed row arrived"
    for platform in (pa, pb):
        for kind in ("telemetry", "alarm"):
            order = first_arrival_order(platform, kind)
            assert order == sorted(order), f"{kind} out of order on one broker"


def test_commands_queued_while_the_gateway_was_away_are_answered(
        tmp_path: Path, modbus_server: ModbusTcpSimulator, broker: Mosquitto,
        platform: PlatformSubscriber) -> None:
    """The session is persistent: the broker keeps the command subscription and queues
    a command sent while the agent is down; the agent answers it when it is back."""
    config = endpoints_site(tmp_path, modbus_server.port, [broker.port])
    view = platform.gateways[GATEWAY]
    agent = AgentProcess(config).start()
    commander = CommandClient(broker.port)
    try:
        assert platform.wait_for(lambda: view.status.get("state") == "online", 20), agent.log
        agent.kill()
        commander.send("ping", {"id": "while-away"})
        agent = AgentProcess(config).start()
        assert commander.reply("while-away", 30)["ok"] is True
    finally:
        commander.close()
        agent.kill()


class OneMosquitto:
    """A single persistent mosquitto with the cluster's interface: the single-broker
    case of the same test (a node that dies is the only one, started again at once).
    """

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.mqtt_ports = [broker.port]

    def kill(self, _node: int) -> None:
        self.broker.kill()
        self.broker.start()

    def start_node(self, _node: int) -> None:
        pass


@pytest.fixture(params=["nats-cluster", "mosquitto"])
def brokers(request: pytest.FixtureRequest, tmp_path: Path
            ) -> Iterator[NatsCluster | OneMosquitto]:
    if request.param == "nats-cluster":
        with NatsCluster(tmp_path / "nats") as cluster:
            yield cluster
    else:
        with Mosquitto(workdir=tmp_path / "broker", persistent=True) as broker:
            yield OneMosquitto(broker)


def test_broker_nodes_die_under_the_agent_and_nothing_is_lost(
        tmp_path: Path, modbus_server: ModbusTcpSimulator, gas_detector: SimulatedDevice,
        brokers: NatsCluster | OneMosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    """Three NATS nodes speaking MQTT 3.1.1, the agent given all three, the platform on
    the third (or one mosquitto). The node the agent is on is SIGKILLed mid-stream with
    an alarm coming and started again; then the second node dies for a while. Every
    committed row arrives, in order per kind, and a command sent through a node the
    agent is not on is answered."""
    ports = brokers.mqtt_ports
    nodes = range(len(ports))
    config = endpoints_site(tmp_path, modbus_server.port, ports)
    buffer = tmp_path / "buffer.db"
    platform = PlatformSubscriber(ports[-1], client_id="platform", clean_session=False).start()
    view = platform.gateways[GATEWAY]
    agent = AgentProcess(config).start()
    commander = None

    def link() -> dict:
        """The agent's own view of its link (its local socket), never stale."""
        result = edge_agent("status", "--json", "-c", str(config))
        return json.loads(result.stdout)["uplink"] if result.returncode == 0 else {}

    def on(node: int) -> bool:
        now = link()
        return bool(now.get("connected")) and now["broker"] == f"127.0.0.1:{ports[node]}"

    def on_other_than(dead: int) -> bool:
        return any(on(i) for i in nodes if i != dead or len(ports) == 1)

    try:
        wait_until(lambda: on(0), 30, "the agent on n1, its first choice")
        assert platform.wait_for(lambda: len(view.sample_seqs) >= 20, 30), agent.log
        brokers.kill(0)  # the node the agent is on, mid-stream
        gas_detector.pin("co", 200)
        wait_until(lambda: on_other_than(0), 30, "the agent on another node")
        assert platform.wait_for(lambda: "gas1.co:above:2" in view.active, 30), agent.log
        brokers.start_node(0)

        commander = CommandClient(ports[0])  # through n1, which the agent left
        assert commander.call("ping", timeout_s=30)["ok"] is True

        second = min(1, len(ports) - 1)  # never the platform's node of a cluster
        brokers.kill(second)  # the second node, for a while
        wait_until(lambda: on_other_than(second), 30, "the agent on a live node")
        gas_detector.pin("co", 2)
        assert platform.wait_for(lambda: "gas1.co:above:2" not in view.active, 30), agent.log
        brokers.start_node(second)
        wait_until(lambda: buffered(buffer) == {"samples": 0, "events": 0}, 30, "drained")
        uplink = link()
        assert uplink["failovers"] >= (1 if len(ports) > 1 else 0)
        # NATS drops its clients 4 s into a re-election, which can happen twice.
        assert 0 < uplink["last_outage_s"] < 30, uplink
        assert 0 == agent.stop()
    finally:
        if commander is not None:
            commander.close()
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
        platform.stop()
    seqs = all_seqs(platform)
    assert set(seqs) == set(range(1, last_seq(buffer) + 1)), "every committed row arrived"
    for kind in ("telemetry", "alarm"):
        order = first_arrival_order(platform, kind)
        assert order == sorted(order), f"{kind} out of order"
    with capsys.disabled():  # the figures in CI's output too
        print(f"\n{type(brokers).__name__}: {last_seq(buffer)} rows committed, all arrived; "
              f"{len(seqs) - len(set(seqs))} duplicates (same seq); {uplink['failovers']} "
              f"failovers; last outage (link lost to first PUBACK) {uplink['last_outage_s']} s")
