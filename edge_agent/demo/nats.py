"""A 3-node NATS cluster speaking MQTT on loopback, for the failover tests and the fleet
bench: the clustered broker of a city platform, small enough to kill a node of.

Each node has JetStream (MQTT needs it), a cluster route to the others and an MQTT
listener, all on ports picked here (FIELD_NOTES.md §7). A node counts as up once it
answers a real MQTT CONNECT: on a fresh cluster the first CONNACK comes 6-9 s after
the start, while the streams for sessions and messages are created.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.demo.broker import free_port


def nats_binary() -> str:
    found = shutil.which("nats-server") or shutil.which("nats-server",
                                                        path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise FileNotFoundError("nats-server is not installed; run `make test` or "
                                "`sudo apt-get install nats-server`")
    return found


@dataclass
class NatsNode:
    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def write_config(self, routes: list[int]) -> Path:
        conf = self.workdir / f"{self.name}.conf"
        conf.write_text("\n".join([
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.client_port}",
            f'jetstream {{ store_dir: "{self.workdir / ("js-" + self.name)}" }}',
            f"cluster {{ name: edge-test; listen: 127.0.0.1:{self.cluster_port}; routes: ["
            + ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes) + "] }",
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}",
        ]) + "\n")
        return conf


class NatsCluster:
    """``nodes`` nats-server processes in one cluster; kill and start them one by one."""

    def __init__(self, workdir: Path | None = None, nodes: int = 3) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edge-agent-nats-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = [NatsNode(f"n{i + 1}", free_port(), free_port(), free_port(), self.workdir)
                      for i in range(nodes)]

    @property
    def mqtt_ports(self) -> list[int]:
        return [n.mqtt_port for n in self.nodes]

    def start(self, timeout_s: float = 60.0) -> NatsCluster:
        for i in range(len(self.nodes)):
            self._spawn(i)
        for i in range(len(self.nodes)):
            self.wait_ready(i, timeout_s)
        # A CONNACK is not yet a cluster at rest: the first persistent sessions create
        # the replicated streams. One QoS 1 round trip through every node settles them.
        for i in range(len(self.nodes)):
            if not _round_trip(self.nodes[i].mqtt_port, timeout_s):
                raise RuntimeError(f"NATS node {self.nodes[i].name}: no QoS 1 round trip")
        return self

    def start_node(self, i: int, timeout_s: float = 60.0) -> None:
        self._spawn(i)
        self.wait_ready(i, timeout_s)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        node = self.nodes[i]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(sig)
            node.proc.wait(15)
        node.proc = None

    def stop(self) -> None:
        for i in range(len(self.nodes)):
            self.kill(i, signal.SIGTERM)

    def node_of(self, port: int) -> int:
        return self.mqtt_ports.index(port)

    def _spawn(self, i: int) -> None:
        node = self.nodes[i]
        conf = node.write_config([n.cluster_port for n in self.nodes])
        with node.log_path.open("ab") as log:
            node.proc = subprocess.Popen([nats_binary(), "-c", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT)

    def wait_ready(self, i: int, timeout_s: float) -> None:
        """Until the node's MQTT listener answers a CONNECT with a CONNACK success."""
        node = self.nodes[i]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if node.proc is None or node.proc.poll() is not None:
                break
            if _connack(node.mqtt_port, min(5.0, deadline - time.monotonic())):
                return
            time.sleep(0.2)
        tail = node.log_path.read_text(errors="replace")[-800:] if node.log_path.exists() else ""
        raise RuntimeError(f"NATS node {node.name} gave no MQTT CONNACK on "
                           f"127.0.0.1:{node.mqtt_port} within {timeout_s:g} s: {tail}")

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _connack(port: int, timeout_s: float) -> bool:
    accepted = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{port}",
                         clean_session=True)
    client.on_connect = lambda _c, _u, _f, rc, _p: rc.is_failure or accepted.set()
    try:
        client.connect("127.0.0.1", port, keepalive=5)
    except OSError:
        return False
    client.loop_start()
    try:
        return accepted.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()


def _round_trip(port: int, timeout_s: float) -> bool:
    """A persistent session subscribes and gets its own QoS 1 message back."""
    got = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"settle-{port}",
                         clean_session=False)
    client.on_connect = lambda c, *_: c.subscribe(f"settle/{port}", qos=1)
    client.on_subscribe = lambda c, *_: c.publish(f"settle/{port}", b"1", qos=1)
    client.on_message = lambda *_: got.set()
    client.connect("127.0.0.1", port, keepalive=5)
    client.loop_start()
    try:
        return got.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
