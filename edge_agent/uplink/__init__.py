"""The MQTT uplink: drains the buffer to the broker in its own thread.

It only ever reads the buffer and deletes what the broker acknowledged: a row
leaves the buffer when the PUBACK for the message that carried it arrives, never
before (PEER_LESSONS 1, 8). Alarms and faults go before telemetry. A bounded
window of unacknowledged messages keeps memory flat during an outage; paho
re-sends the unacknowledged ones after a reconnect.
"""

from __future__ import annotations

import collections
import os
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_agent.buffer import Buffer
from edge_agent.config import Mqtt
from edge_agent.errors import StartupError
from edge_agent.uplink import payloads
from edge_agent.uplink.payloads import Topics

__all__ = ["Topics", "Uplink"]

log = structlog.get_logger(__name__)


class Uplink:
    """Publish buffered rows with QoS 1 and delete them on PUBACK."""

    def __init__(self, settings: Mqtt, *, origin: payloads.Origin, buffer_path: str,
                 birth: dict[str, Any], health: Callable[[], dict[str, Any]],
                 health_interval_s: float = 10.0) -> None:
        self.settings = settings
        self.origin = origin
        self.topics = Topics.for_site(settings.topic_prefix, origin.site, origin.gateway)
        self._buffer_path = buffer_path
        self._birth = birth
        self._health = health
        self._health_interval_s = health_interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_until: float | None = None
        self._connected = threading.Event()
        self._closing = False
        self._acked: collections.deque[int] = collections.deque()
        self._inflight: dict[int, tuple[str, list[int]]] = {}
        self._cursor = {"events": 0, "samples": 0}
        self._thread: threading.Thread | None = None
        self.delivered = {"events": 0, "samples": 0, "messages": 0}
        self.client = self._make_client()

    # --- set-up -------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=s.client_id or f"edge-agent-{self.origin.gateway}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        if s.tls == "on":
            try:
                client.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None,
                               certfile=str(s.cert_file) if s.cert_file else None,
                               keyfile=str(s.key_file) if s.key_file else None,
                               cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise StartupError(f"mqtt TLS files (ca_file, cert_file, key_file) cannot be "
                                   f"used: {exc}") from exc
        if s.username:
            client.username_pw_set(s.username, self._password())
        # Our window bounds what is unacknowledged; paho must not hold back any of it.
        client.max_inflight_messages_set(s.inflight_window + 4)
        client.reconnect_delay_set(min_delay=1, max_delay=s.reconnect_max_s)
        # The broker sends the will when the link is lost; its time is when it arrives.
        client.will_set(self.topics.status,
                        self._status("offline", stamped=False, reason="connection lost"),
                        qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _password(self) -> str | None:
        s = self.settings
        if s.password_file:
            try:
                return s.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise StartupError(f"mqtt.password_file {s.password_file} cannot be read "
                                   f"({exc.strerror}); check its owner and mode") from exc
        if s.password_env:
            if s.password_env not in os.environ:
                raise StartupError(f"mqtt.password_env: the environment variable "
                                   f"{s.password_env} is not set for the agent")
            return os.environ[s.password_env]
        return None

    def _status(self, state: str, *, stamped: bool = True, **extra: Any) -> bytes:
        stamp = {"ts": _now_ms()} if stamped else {}
        return payloads.encode(self.origin.envelope(state=state, **stamp, **self._birth,
                                                    **extra))

    # --- paho callbacks (paho's network thread) ------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any,
                    reason_code: Any, _properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("uplink_refused", host=self.settings.host, reason=str(reason_code))
            return
        log.info("uplink_connected", host=self.settings.host,
                 port=self.settings.effective_port)
        client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any,
                       reason_code: Any, _properties: Any) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("uplink_lost", reason=str(reason_code),
                        unacknowledged=len(self._inflight))
        self._connected.clear()

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _reason_code: Any,
                    _properties: Any) -> None:
        self._acked.append(mid)
        self._wake.set()

    # --- the drain thread ----------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        self.client.connect_async(s.host, s.effective_port, keepalive=s.keepalive_s)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """New rows were committed; called by the poll path, never blocks."""
        self._wake.set()

    def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Deliver what is buffered (while connected, up to the timeout), then go offline."""
        self._drain_until = time.monotonic() + drain_timeout_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(drain_timeout_s + 10)

    def _run(self) -> None:
        while True:
            try:
                self._drain_loop()
                return
            except Exception:  # the uplink must never stop for good (PEER_LESSONS 3)
                log.exception("uplink_failed")
                if self._stop.wait(1.0):
                    self._go_offline()
                    return

    def _drain_loop(self) -> None:
        buffer = Buffer(self._buffer_path)
        next_health = time.monotonic() + self._health_interval_s
        try:
            while True:
                self._wake.wait(1.0)
                self._wake.clear()
                self._settle(buffer)
                if self._connected.is_set():
                    self._fill_window(buffer)
                if time.monotonic() >= next_health and self._connected.is_set():
                    next_health = time.monotonic() + self._health_interval_s
                    self._publish_health(buffer)
                if self._stop.is_set() and self._drained(buffer):
                    self._go_offline(buffer)
                    return
        finally:
            buffer.close()

    def _drained(self, buffer: Buffer) -> bool:
        empty = not self._inflight and not any(buffer.depth().values())
        late = self._drain_until is not None and time.monotonic() >= self._drain_until
        return empty or late or not self._connected.is_set()

    def _settle(self, buffer: Buffer) -> None:
        done: dict[str, list[int]] = {"events": [], "samples": []}
        while self._acked:
            entry = self._inflight.pop(self._acked.popleft(), None)
            if entry is not None:  # None: status or health, which hold no rows
                done[entry[0]] += entry[1]
                self.delivered["messages"] += 1
        for table, seqs in done.items():
            if seqs:
                buffer.delete(table, seqs)
                self.delivered[table] += len(seqs)

    def _fill_window(self, buffer: Buffer) -> None:
        s = self.settings
        while len(self._inflight) < s.inflight_window:
            events = buffer.events_after(self._cursor["events"], 1)
            if events:
                ok = self._publish(self.topics.alarm, self.origin.alarm(events[0]), "events",
                                   [events[0].seq])
            else:
                samples = buffer.samples_after(self._cursor["samples"], s.telemetry_batch)
                if not samples:
                    return
                ok = self._publish(self.topics.telemetry, self.origin.telemetry(samples),
                                   "samples", [r.seq for r in samples])
            if not ok:
                return

    def _publish(self, topic: str, payload: bytes, table: str, seqs: list[int]) -> bool:
        info = self.client.publish(topic, payload, qos=1)
        # NO_CONN still queues the message in paho, which sends it after the reconnect
        # and reports its PUBACK by mid (FIELD_NOTES.md §5): track it like any other.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("publish_refused", topic=topic, rc=int(info.rc))
            return False
        self._inflight[info.mid] = (table, seqs)
        self._cursor[table] = seqs[-1]
        return True

    def _publish_health(self, buffer: Buffer | None) -> mqtt.MQTTMessageInfo:
        document = self.origin.envelope(
            ts=_now_ms(), **self._health(),
            buffer={**buffer.depth(), "bytes": buffer.used_bytes()} if buffer else None,
            uplink={"delivered": dict(self.delivered), "unacknowledged": len(self._inflight)})
        return self.client.publish(self.topics.health, payloads.encode(document), qos=1)

    def _go_offline(self, buffer: Buffer | None = None) -> None:
        self._closing = True
        if self._connected.is_set():
            final = [self._publish_health(buffer),
                     self.client.publish(self.topics.status,
                                         self._status("offline", reason="stopped"),
                                         qos=1, retain=True)]
            for info in final:
                try:
                    info.wait_for_publish(timeout=3)
                except (RuntimeError, ValueError):
                    break
        self.client.disconnect()
        self.client.loop_stop()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
