"""The MQTT uplink: drains the buffer to the broker in its own thread.

It only ever reads the buffer and deletes what the broker acknowledged: a row
leaves the buffer when the PUBACK for the message that carried it arrives, never
before (PEER_LESSONS 1, 8). Alarms and faults go before telemetry. A bounded
window of unacknowledged messages keeps memory flat during an outage; paho
re-sends the unacknowledged ones after a reconnect.

The link is kept by a thread of ours rather than by paho's reconnect loop, whose
delays have no jitter (backoff.py) and which knows one host. With several broker
endpoints (the nodes of a cluster) it connects to the first that answers; when the
link is lost it moves on to the next, with the same backoff, and comes back to an
earlier one only when the one in use fails: no flapping. The session is persistent
(a stable client id, clean session off), so the command subscription and the
commands queued while the gateway was away survive a reconnect; paho sends the
unacknowledged messages again on the new node, and the platform drops duplicates by
seq. Commands that arrive on the gateway's own ``cmd/+`` topics are handed to the
daemon's handler; the uplink only carries them.
"""

from __future__ import annotations

import collections
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.buffer import Buffer
from edge_agent.config import Mqtt
from edge_agent.errors import StartupError
from edge_agent.uplink import payloads
from edge_agent.uplink.backoff import Backoff
from edge_agent.uplink.payloads import Topics

__all__ = ["Command", "Topics", "Uplink"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Command:
    """One command from the platform, and how to answer it."""

    name: str
    payload: bytes
    reply_topic: str
    correlation: bytes | None  # MQTT 5 correlation data, returned unchanged
    _client: mqtt.Client

    def reply(self, document: dict[str, Any]) -> None:
        properties = None
        if self.correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = self.correlation
        self._client.publish(self.reply_topic, payloads.encode(document), qos=1,
                             properties=properties)


class Uplink:
    """Publish buffered rows with QoS 1 and delete them on PUBACK."""

    def __init__(self, settings: Mqtt, *, origin: payloads.Origin, buffer_path: str,
                 birth: dict[str, Any], health: Callable[[], dict[str, Any]],
                 on_command: Callable[[Command], None] | None = None,
                 times_trusted: Callable[[], bool] = lambda: True,
                 health_interval_s: float = 10.0) -> None:
        """``times_trusted``: false while rows may carry the time of a clock that NTP
        has not set yet; rows published then are flagged ``"clock": "unsynchronised"``.
        """
        self.settings = settings
        self.origin = origin
        self.topics = Topics.for_site(settings.topic_prefix, origin.site, origin.gateway)
        self._buffer_path = buffer_path
        self._birth = birth
        self._health = health
        self._health_interval_s = health_interval_s
        self._on_command = on_command
        self._times_trusted = times_trusted
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._link_down = threading.Event()
        self._backoff = Backoff(base_s=1.0, cap_s=settings.reconnect_max_s)
        self._drain_until: float | None = None
        self._connected = threading.Event()
        self._closing = False
        self._acked: collections.deque[tuple[int, bool]] = collections.deque()
        # mid -> (table, first seq, last seq, rows) of each unacknowledged message
        self._inflight: dict[int, tuple[str, int, int, int]] = {}
        self._cursor = {"events": 0, "samples": 0}
        self._resend_at = 0.0  # monotonic time before which nothing new is published
        self._thread: threading.Thread | None = None
        self._link: threading.Thread | None = None
        self.delivered = {"events": 0, "samples": 0, "messages": 0}
        self.connects = 0
        # The link's story, written by paho's thread, read for health and status.
        self.broker: str | None = None  # host:port of the endpoint in use (or last used)
        self.failovers = 0  # connections made to another endpoint than the last one
        self.last_failover_ms: int | None = None
        self.last_outage_s: float | None = None  # link lost -> first PUBACK after it
        self._lost_at: float | None = None  # monotonic time the link was lost
        self.client = self._make_client()

    # --- set-up -------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        if s.tls == "off":
            log.warning("mqtt_tls_off", brokers=[f"{h}:{p}" for h, p in s.brokers],
                        risk="data, commands and the password travel unencrypted and the "
                             "broker is not authenticated")
        v5 = s.protocol == "5"
        # reconnect_on_failure=False: our link thread reconnects, with jitter, and picks
        # the endpoint. clean_session=False (MQTT 5: clean_start=False at connect): the
        # broker keeps our subscription and queues commands while we are away.
        client = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=s.client_id or f"edge-agent-{self.origin.gateway}",
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                             clean_session=None if v5 else False, reconnect_on_failure=False)
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
        # The broker sends the will when the link is lost; its time is when it arrives.
        client.will_set(self.topics.status,
                        self._status("offline", stamped=False, reason="connection lost"),
                        qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_log = self._on_paho_log
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

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any,
                    reason_code: Any, _properties: Any) -> None:
        if reason_code.is_failure:
            report = log.warning if self._backoff.attempt == 0 else log.debug  # as below
            report("uplink_refused", broker=self._endpoint(), reason=str(reason_code))
            return
        broker = self._endpoint()
        if self.broker is not None and broker != self.broker:
            self.failovers += 1
            self.last_failover_ms = _now_ms()
        self.broker = broker
        log.info("uplink_connected", broker=broker, protocol=self.settings.protocol,
                 session_present=bool(getattr(flags, "session_present", False)),
                 failovers=self.failovers)
        self.connects += 1
        self._backoff.reset()
        # Subscribed again after every connect, session or not: a cluster may have lost
        # the session in a failover (or the node never had it), and SUBSCRIBE is
        # idempotent. First: once "online" is seen, commands are heard.
        if self._on_command is not None:
            client.subscribe(self.topics.commands, qos=1)
        client.publish(self.topics.status, self._status("online", **self._link_facts()),
                       qos=1, retain=True)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any,
                       reason_code: Any, _properties: Any) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("uplink_lost", broker=self.broker, reason=str(reason_code),
                        unacknowledged=len(self._inflight))
            self._lost_at = time.monotonic()
        self._connected.clear()
        self._link_down.set()

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason_code: Any,
                    _properties: Any) -> None:
        # An MQTT 5 broker may acknowledge with a failure code (not authorised, quota
        # exceeded): the message was not taken, so its rows stay and go again.
        self._acked.append((mid, not reason_code.is_failure))
        if self._lost_at is not None:  # the first PUBACK since the link was lost
            self.last_outage_s = round(time.monotonic() - self._lost_at, 3)
            self._lost_at = None
            log.info("uplink_recovered", broker=self.broker, outage_s=self.last_outage_s,
                     failovers=self.failovers)
        self._wake.set()

    def _on_paho_log(self, _client: mqtt.Client, _userdata: Any, level: int,
                     message: str) -> None:
        """Paho says why a link failed (a refused client certificate) only in its log."""
        if level == mqtt.MQTT_LOG_ERR and not self._closing:
            log.warning("mqtt_client_error", message=message)

    def _on_message(self, client: mqtt.Client, _userdata: Any,
                    msg: mqtt.MQTTMessage) -> None:
        name = self.topics.command_name(msg.topic)
        if name is None or self._on_command is None:
            return
        properties = getattr(msg, "properties", None)
        response_topic = getattr(properties, "ResponseTopic", None)
        correlation = getattr(properties, "CorrelationData", None)
        self._on_command(Command(name, msg.payload, response_topic or self.topics.reply(name),
                                 correlation, client))

    # --- the link thread: connect, run paho's loop, wait with jitter, again -------

    def _keep_linked(self) -> None:
        s = self.settings
        brokers, at = s.brokers, 0
        session: dict[str, Any] = {}
        if s.protocol == "5":
            expiry = Properties(PacketTypes.CONNECT)
            expiry.SessionExpiryInterval = s.session_expiry_s
            session = {"clean_start": False, "properties": expiry}
        while not self._stop.is_set():
            # Cleared before connecting: with TLS 1.3 a broker that refuses our
            # certificate drops the link inside connect(), whose on_disconnect must count.
            self._link_down.clear()
            host, port = brokers[at]
            try:
                # connect(), not reconnect(): it may be another endpoint; paho keeps its
                # unacknowledged messages and sends them again, marked DUP.
                self.client.connect(host, port, keepalive=s.keepalive_s, **session)
            except (OSError, ssl.SSLError) as exc:
                # The first failure of a run of them is a warning; the retries of a long
                # outage would only flood the journal.
                report = log.warning if self._backoff.attempt == 0 else log.debug
                report("uplink_connect_failed", broker=f"{host}:{port}",
                       error=str(exc), retry_bound_s=self._backoff.bound_s)
                at = (at + 1) % len(brokers)
                self._stop.wait(self._backoff.next())
                continue
            self.client.loop_start()
            # paho's loop can also end without on_disconnect (when select() fails, as it
            # does on a descriptor above 1023), so watch its thread as well.
            network = self.client._thread
            while not self._link_down.wait(1.0):
                if network is None or not network.is_alive():
                    log.warning("uplink_loop_ended", state=str(self.client._state))
                    break
            self.client.loop_stop()
            self._connected.clear()
            if self._closing:
                return
            at = (at + 1) % len(brokers)  # this one failed: the next in order
            self._stop.wait(self._backoff.next())

    # --- the drain thread ----------------------------------------------------------

    def start(self) -> None:
        self._link = threading.Thread(target=self._keep_linked, name="uplink-link",
                                      daemon=True)
        self._link.start()
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def state(self) -> dict[str, Any]:
        """The link as `health` and `edge-agent status` show it."""
        return {"connected": self._connected.is_set(), **self._link_facts(),
                "delivered": dict(self.delivered), "unacknowledged": len(self._inflight),
                "connects": self.connects}

    def _link_facts(self) -> dict[str, Any]:
        """Which endpoint, and how the failovers went: also in the retained status."""
        return {"broker": self.broker, "failovers": self.failovers,
                "last_failover_ms": self.last_failover_ms,
                "last_outage_s": self.last_outage_s}

    def _endpoint(self) -> str:
        return f"{self.client.host}:{self.client.port}"

    def birth_changed(self, **fields: Any) -> None:
        """New birth fields (a new config hash): retained status published again."""
        self._birth = {**self._birth, **fields}
        if self._connected.is_set():
            self.client.publish(self.topics.status, self._status("online", **self._link_facts()),
                                qos=1, retain=True)

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
        # NORMAL: a delete lost in a power cut only means those rows go again (the
        # platform drops duplicates by seq), and it spares an fsync per PUBACK batch.
        buffer = Buffer(self._buffer_path, sync="NORMAL")
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
        done: dict[str, list[tuple[int, int]]] = {"events": [], "samples": []}
        while self._acked:
            mid, taken = self._acked.popleft()
            entry = self._inflight.pop(mid, None)
            if entry is None:  # status, health or a reply, which hold no rows
                continue
            table, first, last, count = entry
            if taken:
                done[table].append((first, last))
                self.delivered[table] += count
                self.delivered["messages"] += 1
            else:
                log.warning("publish_rejected", table=table, first_seq=first, last_seq=last)
                self._cursor[table] = min(self._cursor[table], first - 1)
                self._resend_at = time.monotonic() + 1.0  # not at the broker's own pace
        for table, ranges in done.items():
            if ranges:
                buffer.delete(table, ranges)

    def _fill_window(self, buffer: Buffer) -> None:
        s = self.settings
        # Asked before the rows are read: once true, every row here has a trusted time.
        flags = {} if self._times_trusted() else {"clock": "unsynchronised"}
        while len(self._inflight) < s.inflight_window and time.monotonic() >= self._resend_at:
            events = buffer.events_after(self._cursor["events"], 1)
            if events:
                topic = (self.topics.entry if events[0].body.get("class") == "entry"
                         else self.topics.alarm)
                ok = self._publish(topic, self.origin.alarm(events[0], **flags),
                                   "events", events[0].seq, events[0].seq, 1)
            else:
                samples = buffer.samples_after(self._cursor["samples"], s.telemetry_batch)
                if not samples:
                    return
                payload, n = self.origin.telemetry(samples, s.max_message_bytes,
                                                   compress=s.compression == "gzip", **flags)
                ok = self._publish(self.topics.telemetry, payload, "samples",
                                   samples[0].seq, samples[n - 1].seq, n)
            if not ok:
                return

    def _publish(self, topic: str, payload: bytes, table: str, first: int, last: int,
                 count: int) -> bool:
        """Publish the rows ``first`` .. ``last`` of ``table`` (every row between them)."""
        info = self.client.publish(topic, payload, qos=1)
        # NO_CONN still queues the message in paho, which sends it after the reconnect
        # and reports its PUBACK by mid (FIELD_NOTES.md §5): track it like any other.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("publish_refused", topic=topic, rc=int(info.rc))
            return False
        self._inflight[info.mid] = (table, first, last, count)
        self._cursor[table] = last
        return True

    def _publish_health(self, buffer: Buffer | None) -> mqtt.MQTTMessageInfo:
        document = self.origin.envelope(
            ts=_now_ms(), **self._health(),
            buffer={**buffer.depth(), "bytes": buffer.used_bytes(),
                    "oldest_ms": buffer.oldest_ms()} if buffer else None,
            uplink=self.state())
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
        self._link_down.set()
        if self._link is not None and self._link is not threading.current_thread():
            self._link.join(10)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
