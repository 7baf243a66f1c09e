"""``edge-agent platform-tail``: the platform's side of the link, as small as it can be.

It subscribes to a fleet of gateways and prints what a platform would keep: every
sample and event once, status changes and, on request, health. It exists so that
the payload schema (docs/payloads.md) is read end to end by something other than
the agent that writes it, with the platform's duty of de-duplicating by
(gateway, epoch, seq), since delivery is at least once.
"""

from __future__ import annotations

import json
import math
import os
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import paho.mqtt.client as mqtt
import typer
from paho.mqtt.enums import CallbackAPIVersion
from rich.markup import escape

from edge_agent import cli
from edge_agent.uplink import payloads

REMEMBER = 100_000  # (epoch, seq) keys kept per gateway: far more than any re-send window
CONNACK_TIMEOUT_S = 10.0
KINDS = ("telemetry", "alarm", "status", "health")
# Fields each payload must carry, by topic kind, before any of it is printed.
REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "telemetry": {"samples": list},
    "alarm": {"seq": int, "id": str, "ts": int, "class": str, "transition": str, "key": str},
    "status": {"state": str},
    "health": {"ts": int},
}
SAMPLE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "seq": int, "ts": int, "ch": str, "v": (int, float, type(None)), "u": str, "q": str}
ENDS = ("returned_to_normal", "withdrawn", "reliable")  # shown green: back to safe
CLASS_STYLE = {"alarm": "bold red", "fault": "yellow", "anomaly": "magenta"}


class BadPayload(Exception):
    """A message that is not schema v1: counted and reported, never fatal."""


class Dedup:
    """The keys seen per gateway, the newest ``limit`` of each: a re-sent message is
    dropped, and memory stays bounded however long the tail runs.
    """

    def __init__(self, limit: int = REMEMBER) -> None:
        self.limit = limit
        self._seen: dict[str, dict[tuple[str, int], None]] = {}  # insertion-ordered sets
        self.duplicates = 0

    def first(self, gateway: str, epoch: str, seq: int) -> bool:
        """True the first time (gateway, epoch, seq) is offered."""
        seen = self._seen.setdefault(gateway, {})
        key = (epoch, seq)
        if key in seen:
            self.duplicates += 1
            return False
        seen[key] = None
        if len(seen) > self.limit:
            del seen[next(iter(seen))]
        return True


def _checked(kind: str, body: Any) -> dict[str, Any]:
    """``body`` if it is a v1 payload of ``kind`` with the fields we print; else BadPayload."""
    if not isinstance(body, dict):
        raise BadPayload("not a JSON object")
    if body.get("v") != payloads.SCHEMA_VERSION:
        raise BadPayload(f"schema version {body.get('v')!r}, this tool reads "
                         f"{payloads.SCHEMA_VERSION}")
    _has(body, {"site": str, "gateway": str, "epoch": str, **REQUIRED[kind]}, "")
    for sample in body["samples"] if kind == "telemetry" else []:
        if not isinstance(sample, dict):
            raise BadPayload("a sample that is not a JSON object")
        _has(sample, SAMPLE_FIELDS, "sample ")
    return body


def _has(body: dict[str, Any], fields: dict[str, type | tuple[type, ...]], what: str) -> None:
    for name, types in fields.items():
        value = body.get(name)
        if not isinstance(value, types) or isinstance(value, bool):  # JSON true is no number
            raise BadPayload(f"{what}field {name!r} missing or of the wrong type")
        if isinstance(value, float) and not math.isfinite(value):  # json.loads lets them in
            raise BadPayload(f"{what}field {name!r} is {value}, which the schema forbids")


def _when(ms: int | None) -> str:
    ms = int(time.time() * 1000) if ms is None else ms
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else str(round(value, 6))


def _sample_line(gateway: str, s: dict[str, Any]) -> str:
    text = f"{_when(s['ts'])}  {gateway}  {s['ch']:<20} {_number(s['v'])} {s['u']}".rstrip()
    if s["q"] == "good":
        return escape(text)
    return f"{escape(text)}  [yellow]{escape(s['q'])}[/]"


def _event_line(gateway: str, e: dict[str, Any]) -> str:
    style = "green" if e["transition"] in ENDS else CLASS_STYLE.get(e["class"], "bold")
    unit = f" {e['unit']}" if e.get("unit") else ""
    extra = "".join(f"  {name} {_number(e[name])}{unit}" for name in ("value", "setpoint")
                    if isinstance(e.get(name), int | float))
    text = (f"{e['class'].upper():<7} {e['transition']:<18} {e['key']}{extra}  "
            f"id {e['id'][:8]}")
    return f"{escape(_when(e['ts']))}  {escape(gateway)}  [{style}]{escape(text)}[/]"


def _status_line(s: dict[str, Any]) -> str:
    online = s["state"] == "online"
    style = "green" if online else ("yellow" if s.get("reason") == "stopped" else "bold red")
    reason = f" ({s['reason']})" if s.get("reason") else ""
    text = (f"{s['state'].upper()}{reason}  site {s['site']}  version {s.get('version', '?')}"
            f"  config {str(s.get('config_hash', '?'))[:12]}")
    return f"{escape(_when(s.get('ts')))}  {escape(s['gateway'])}  [{style}]{escape(text)}[/]"


def _health_line(h: dict[str, Any]) -> str:
    buffered = h.get("buffer") or {}
    text = (f"health  up {h.get('uptime_s')} s  {h.get('samples_polled')} samples  "
            f"{h.get('alarms_active')} alarm(s), {h.get('faults_active')} fault(s) active  "
            f"buffer {buffered.get('samples', '?')} samples, {buffered.get('events', '?')} "
            f"events  {(h.get('uplink') or {}).get('unacknowledged', '?')} unacknowledged")
    return f"[dim]{escape(_when(h['ts']))}  {escape(h['gateway'])}  {escape(text)}[/]"


class Tail:
    """What arrived, printed once each: the state a platform keeps, and nothing more."""

    def __init__(self, as_json: bool, health: bool, count: int | None) -> None:
        self.as_json, self.health, self.count = as_json, health, count
        self.dedup = Dedup()
        self.printed = {"samples": 0, "events": 0}
        self.bad = 0
        self.status: dict[str, tuple[Any, ...]] = {}  # gateway -> what its last status said
        self.done = threading.Event()

    def _emit(self, kind: str, body: dict[str, Any], line: str) -> None:
        if self.as_json:
            fields = {k: v for k, v in body.items() if k not in ("gateway", "site")}
            if "kind" in fields:  # an event's own kind (threshold, comm_lost ...)
                fields["event_kind"] = fields.pop("kind")
            record = {"gateway": body["gateway"], "site": body["site"], "kind": kind, **fields}
            sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
            sys.stdout.flush()
        else:
            cli.out.print(line, highlight=False)

    def _counted(self, what: str) -> bool:
        """Count one printed sample or event; False once ``--count`` is reached."""
        if self.done.is_set():
            return False
        self.printed[what] += 1
        if self.count is not None and sum(self.printed.values()) >= self.count:
            self.done.set()
        return True

    def handle(self, topic: str, payload: bytes) -> None:
        """One MQTT message: commands and unknown topics are not ours, the rest is printed."""
        parts = topic.split("/")
        kind = parts[-1]
        if kind not in KINDS or "cmd" in (parts[-2:-1] + parts[-3:-2]):
            return  # cmd/<name>, cmd/<name>/reply: the platform's own traffic
        try:
            body = _checked(kind, payloads.decode(payload))
            del body["v"]  # checked; and a sample's own "v" is its value
        except (BadPayload, ValueError, OSError, EOFError) as exc:  # JSON, UTF-8, gzip
            self.bad += 1
            cli.err.print(f"bad payload on {escape(topic)} ({len(payload)} bytes): "
                          f"{escape(str(exc))}", highlight=False)
            return
        gateway, epoch = body["gateway"], body["epoch"]
        if kind == "telemetry":
            for sample in body["samples"]:
                if self.dedup.first(gateway, epoch, sample["seq"]) and self._counted("samples"):
                    record = {k: v for k, v in body.items() if k != "samples"} | sample
                    self._emit("sample", record, _sample_line(gateway, sample))
        elif kind == "alarm":
            if self.dedup.first(gateway, epoch, body["seq"]) and self._counted("events"):
                self._emit("event", body, _event_line(gateway, body))
        elif kind == "status":
            said = tuple(body.get(k) for k in ("state", "reason", "version", "config_hash",
                                               "started", "epoch"))
            if self.status.get(gateway) != said and not self.done.is_set():
                self.status[gateway] = said
                self._emit("status", body, _status_line(body))
        elif self.health and not self.done.is_set():
            self._emit("health", body, _health_line(body))

    def summary(self) -> str:
        return (f"{self.printed['samples']} samples, {self.printed['events']} events, "
                f"{self.dedup.duplicates} duplicates dropped, {self.bad} bad payloads")


def _client(username: str | None, password_env: str | None,
            tls_files: dict[str, Path | None]) -> mqtt.Client:
    """A paho client with TLS and credentials as asked, or the command ends with why not."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    given = {name: path for name, path in tls_files.items() if path is not None}
    for name, path in given.items():
        if not path.is_file():
            cli.fail(f"--{name.replace('_', '-')} {path}: no such file",
                     "give the path of a PEM file this user can read")
    if given.get("key_file") and not given.get("cert_file"):
        cli.fail("--key-file without --cert-file", "give the client certificate with "
                 "--cert-file, or leave both out")
    if given:
        try:  # CERT_REQUIRED and paho's hostname check: verification is never switched off
            client.tls_set(ca_certs=str(given["ca_file"]) if "ca_file" in given else None,
                           certfile=str(given["cert_file"]) if "cert_file" in given else None,
                           keyfile=str(given["key_file"]) if "key_file" in given else None,
                           cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError, ValueError) as exc:
            cli.fail(f"the TLS files cannot be used: {exc}", "check that --ca-file, --cert-file "
                     "and --key-file are PEM files and that the key belongs to the certificate")
    if password_env and not username:
        cli.fail("--password-env without --username", "MQTT sends a password only with a "
                 "user name; add --username")
    password = None
    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            cli.fail(f"the environment variable {password_env} (--password-env) is not set",
                     f"export {password_env} with the broker password before running")
    if username:
        client.username_pw_set(username, password)
    return client


def _unreachable(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the broker's certificate was not accepted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "no answer"
    return (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)


def tail_command(
    host: Annotated[str, typer.Option(help="the broker's host name or address")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="the broker's port (default 1883, 8883 with "
                                             "TLS)", show_default=False)] = None,
    topic: Annotated[str, typer.Option(help="topic filter; the default is every gateway")
                     ] = "edge/v1/#",
    ca_file: Annotated[Path | None, typer.Option(help="CA that signed the broker's "
                                                 "certificate (turns TLS on)")] = None,
    cert_file: Annotated[Path | None, typer.Option(help="client certificate (turns TLS on)")
                         ] = None,
    key_file: Annotated[Path | None, typer.Option(help="key of --cert-file")] = None,
    username: Annotated[str | None, typer.Option(help="MQTT user name")] = None,
    password_env: Annotated[str | None, typer.Option(
        metavar="NAME", help="environment variable holding the password")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    health: Annotated[bool, typer.Option("--health", help="print health messages too")
                      ] = False,
    count: Annotated[int | None, typer.Option(min=1, help="exit after this many samples and "
                                              "events", show_default=False)] = None,
    seconds: Annotated[float | None, typer.Option(min=0.1, help="exit after this many seconds",
                                                  show_default=False)] = None,
) -> None:
    """Subscribe to gateways like a platform: print samples, alarms and status, once each."""
    started = time.monotonic()
    tls = {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}
    client = _client(username, password_env, tls)
    port = port or (8883 if any(tls.values()) else 1883)
    where = f"{host}:{port}"
    tail = Tail(as_json, health, count)
    answer: dict[str, Any] = {}  # what the broker said first: CONNACK, SUBACK or a hang-up
    answered = threading.Event()

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            answer.setdefault("refused", str(reason))
            answered.set()
        else:
            c.subscribe(topic, qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _m: int, reasons: list[Any], _p: Any) -> None:
        if any(r.is_failure for r in reasons):
            answer.setdefault("sub_refused", str(reasons[0]))
        answer.setdefault("subscribed", True)
        answered.set()

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not answered.is_set():
            answer.setdefault("hung_up", str(reason))
            answered.set()
        elif "subscribed" in answer and not tail.done.is_set():  # paho reconnects
            cli.err.print(f"connection to {where} lost ({reason}); reconnecting",
                          highlight=False)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            tail.handle(msg.topic, msg.payload)
        except BrokenPipeError:  # e.g. | head: the reader is gone, so are we
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
            tail.done.set()
        except Exception as exc:  # a v1 payload we failed to show: one line, not paho's end
            tail.bad += 1
            cli.err.print(f"cannot show a message on {escape(msg.topic)}: {escape(repr(exc))}",
                          highlight=False)

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_disconnect, client.on_message = on_disconnect, on_message
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    try:
        try:
            client.connect(host, port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            cli.fail(f"cannot reach the MQTT broker at {where}: {_unreachable(exc)}",
                     "check that the broker runs and listens there (--host, --port), that no "
                     "firewall is in the way, and for TLS the port and --ca-file")
        client.loop_start()
        if not answered.wait(CONNACK_TIMEOUT_S):
            cli.fail(f"no MQTT answer from {where} within {CONNACK_TIMEOUT_S:.0f} s",
                     "check that this port is the broker's MQTT listener (TLS or not)")
        if "refused" in answer:
            cli.fail(f"the broker at {where} refused the connection: {answer['refused']}",
                     "check --username and the password in --password-env")
        if "hung_up" in answer:
            cli.fail(f"the broker at {where} closed the connection before accepting it "
                     f"({answer['hung_up']})", "check that it accepts this client: TLS or "
                     "not, the client certificate (--cert-file), the user name")
        if "sub_refused" in answer:
            cli.fail(f"the broker at {where} refused the subscription to {topic} "
                     f"({answer['sub_refused']})", "check the topic filter and the broker's "
                     "access rules for this user")
        while not tail.done.is_set():
            left = None if seconds is None else seconds - (time.monotonic() - started)
            if left is not None and left <= 0:
                break
            tail.done.wait(0.5 if left is None else min(left, 0.5))
    except KeyboardInterrupt:
        tail.done.set()
        cli.err.print(tail.summary(), highlight=False)
        raise typer.Exit(130) from None
    finally:
        tail.done.set()  # nothing more is printed while paho's thread winds down
        client.disconnect()
        client.loop_stop()
    cli.err.print(tail.summary(), highlight=False)
