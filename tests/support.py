"""Helpers for the tests: waiting on conditions, the agent as a process, buffer reads."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0,
               what: str = "condition") -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


async def wait_until_async(condition: Callable[[], object], timeout_s: float = 10.0,
                           what: str = "condition") -> None:
    """``wait_until`` for a test that runs the agent in its own event loop."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


SITE = """\
gateway_id = "gw-test"
site_id = "site-test"

[[buses]]
name = "field"
type = "modbus-tcp"
host = "127.0.0.1"
port = {modbus_port}
timeout_ms = 500

[[devices]]
name = "gas1"
bus = "field"
unit_id = 1
profile = "generic_4gas"
poll_interval_s = {interval}

[devices.channels.co]
limits = [{{ level = 1, above = 24, deadband = 1 }}, {{ level = 2, above = 160, deadband = 5 }}]

[devices.channels.o2]
limits = [
  {{ level = 1, below = 19.5, deadband = 0.2 }},
  {{ level = 1, above = 23.5, deadband = 0.2 }},
]

[mqtt]
host = "127.0.0.1"
port = {broker_port}
tls = "off"
reconnect_max_s = 1
inflight_window = 4
telemetry_batch = 20

[buffer]
path = "{buffer}"
"""

# Appended to SITE: a confined space and the web view with the PIN WebClient.PIN.
WEB = """
[[spaces]]
name = "tank"
detectors = [{{ device = "gas1" }}]

[web]
enabled = true
port = {port}
pin_hash = "{pin_hash}"
"""


class WebClient:
    """Plain HTTP to the agent's web view on loopback."""

    PIN = "4711"

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, body: object = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        """(status, headers, the JSON body or the text); (0, {}, error) when unreachable."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, head, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            status, head, raw = exc.code, exc.headers, exc.read()
        except OSError as exc:
            return 0, {}, str(exc)
        if head.get_content_type() == "application/json":
            return status, head, json.loads(raw)
        return status, head, raw.decode()

    def site(self) -> dict[str, Any]:
        status, _, body = self.request("GET", "/api/site")
        return body if status == 200 else {}

    def act(self, action: str, pin: str | None = None, **fields: object
            ) -> tuple[int, dict[str, Any]]:
        status, _, body = self.request("POST", "/api/action", {
            "action": action, "pin": self.PIN if pin is None else pin, "by": "Wang Fang",
            **fields})
        return status, body


class ShiftedClock:
    """The clock of an agent process, moved forward by the test through the file named
    by EDGE_AGENT_CLOCK_SHIFT_FILE (edge_agent/clock.py): a 2-hour rule runs in seconds.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_s = 0.0
        path.write_text("0")

    @property
    def env(self) -> dict[str, str]:
        return {"EDGE_AGENT_CLOCK_SHIFT_FILE": str(self.path)}

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{self.offset_s:.3f}")
        tmp.replace(self.path)  # never read half-written

    def now_ms(self) -> int:
        return int((time.time() + self.offset_s) * 1000)


class AgentProcess:
    """``edge-agent run`` in its own process, its log in a file."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = env

    def start(self) -> AgentProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config",
                                      str(self.config)], stdout=log, stderr=log, cwd=REPO,
                                     env={**os.environ, **(self.env or {})})
        log.close()
        return self

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def buffered(path: Path) -> dict[str, int]:
    """Rows waiting in a buffer file, read from outside the agent (none while the agent
    is still creating the file)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        try:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                    for t in ("samples", "events")}
        except sqlite3.OperationalError:  # no such table yet
            return {"samples": 0, "events": 0}


def last_seq(path: Path) -> int:
    """The last sequence number committed; 0 while the agent is still creating the file."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        except sqlite3.OperationalError:  # no such table yet
            return 0
        return int(row[0]) - 1


class CommandClient:
    """The platform's side of commands: publish ``cmd/<name>``, wait for the reply.

    With ``protocol=5`` it asks for the reply on a response topic of its own, with
    correlation data, as an MQTT 5 platform would.
    """

    def __init__(self, port: int, prefix: str = "edge/v1/site-test/gw-test",
                 protocol: int = 4) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.prefix, self.v5 = prefix, protocol == 5
        self.replies: list[tuple[str, dict, bytes | None]] = []  # topic, body, correlation
        self._subscribed = threading.Event()
        self._lock = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311)
        self.client.on_connect = lambda c, *_: c.subscribe([("edge/v1/+/+/cmd/+/reply", 1),
                                                            ("platform/replies/#", 1)])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK for the reply topics"

    def _on_message(self, _client, _userdata, msg) -> None:
        correlation = getattr(getattr(msg, "properties", None), "CorrelationData", None)
        with self._lock:
            self.replies.append((msg.topic, json.loads(msg.payload), correlation))
            self._lock.notify_all()

    def send(self, name: str, payload: bytes | dict | None = None, *,
             prefix: str | None = None, response_topic: str | None = None,
             correlation: bytes | None = None) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload or b""
        properties = None
        if response_topic:
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = response_topic
            if correlation is not None:
                properties.CorrelationData = correlation
        self.client.publish(f"{prefix or self.prefix}/cmd/{name}", data, qos=1,
                            properties=properties).wait_for_publish(5)

    def reply(self, request_id: object, timeout_s: float = 15.0) -> dict:
        """The body of the reply carrying ``request_id``."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                found = [body for _, body, _ in self.replies if body.get("id") == request_id]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no reply with id {request_id!r} in {timeout_s} s; "
                                         f"replies: {self.replies}")
                self._lock.wait(left)

    def call(self, name: str, timeout_s: float = 15.0, **fields: object) -> dict:
        """Send a command with a fresh id and return its reply."""
        request_id = f"r{next(_ids)}"
        self.send(name, {"id": request_id, **fields})
        return self.reply(request_id, timeout_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


_ids = itertools.count(1)
