"""What the central platform sees: a subscriber that keeps every message the agents
delivered and the state they describe. Used by the demo's live view and by tests.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.uplink import payloads

# The transitions that end an episode; the others (acknowledged, unreliable, reliable)
# leave it active.
ENDS = ("returned_to_normal", "withdrawn")


@dataclass
class Message:
    topic: str
    body: dict[str, Any]
    retain: bool

    @property
    def kind(self) -> str:
        return self.topic.rsplit("/", 1)[-1]


@dataclass
class GatewayView:
    """One gateway as the platform knows it."""

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)  # channel -> sample
    active: dict[str, dict[str, Any]] = field(default_factory=dict)  # alarm key -> raised event
    sample_seqs: set[int] = field(default_factory=set)
    duplicates: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)  # confined-space entry events
    status: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)


class PlatformSubscriber:
    """Subscribe to ``topic`` with QoS 1 and keep what arrives (thread-safe)."""

    def __init__(self, port: int, topic: str = "edge/v1/#", host: str = "127.0.0.1",
                 client_id: str = "", clean_session: bool = True,
                 tls: dict[str, Any] | None = None) -> None:
        """``tls``: keyword arguments for paho's ``tls_set`` (``ca_certs``, ``certfile``,
        ``keyfile``), for a broker that wants TLS and the platform's own client certificate.
        """
        self.topic = topic
        self.messages: list[Message] = []
        self.gateways: dict[str, GatewayView] = defaultdict(GatewayView)
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean_session if client_id else True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        if tls is not None:
            self.client.tls_set(**tls)
        self.host, self.port = host, port

    def start(self, timeout_s: float = 10.0) -> PlatformSubscriber:
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"no SUBACK from {self.host}:{self.port} within {timeout_s} s")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if "/cmd/" in msg.topic:
            return  # commands and their replies: the platform's own traffic
        body = payloads.decode(msg.payload)
        message = Message(msg.topic, body, bool(msg.retain))
        with self._changed:
            self.messages.append(message)
            view = self.gateways[body.get("gateway", "?")]
            if message.kind == "telemetry":
                for sample in body["samples"]:
                    if sample["seq"] in view.sample_seqs:
                        view.duplicates += 1
                        continue
                    view.sample_seqs.add(sample["seq"])
                    view.latest[sample["ch"]] = sample
            elif message.kind == "alarm":
                view.events.append(body)
                if body["transition"] == "raised":
                    view.active[body["key"]] = body
                elif body["transition"] in ENDS:
                    view.active.pop(body["key"], None)
            elif message.kind == "entry":
                view.entries.append(body)
            elif message.kind == "status":
                view.status = body
            elif message.kind == "health":
                view.health = body
            self._changed.notify_all()

    def wait_for(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        """Wait until ``condition()`` holds (checked on every new message) or time runs out."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
            return True

    def of_kind(self, kind: str) -> list[Message]:
        with self._changed:
            return [m for m in self.messages if m.kind == kind]
