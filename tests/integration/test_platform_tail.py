"""``edge-agent platform-tail`` against a real mosquitto and the real agent: the payload
schema read end to end by the platform's side, duplicates dropped, errors said plainly.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.demo.broker import Mosquitto, free_port
from edge_agent.demo.platform import PlatformSubscriber
from simulators import SimulatedDevice
from tests.integration.test_cli import edge_agent
from tests.pki import Pki
from tests.support import REPO, AgentProcess

PINNED = {"o2": 20.9, "co": 2, "h2s": 0.0, "lel": 0.0, "temperature": -20.5, "humidity": 55.5,
          "run_hours": 70000}  # conftest's gas_detector
PREFIX = "edge/v1/site-x/gw-x"
EPOCH = "ab" * 16


def tail(*args: str) -> subprocess.Popen[str]:
    """platform-tail as a process whose output is read while it runs."""
    return subprocess.Popen([sys.executable, "-m", "edge_agent", "platform-tail", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc: subprocess.Popen[str], wanted: str) -> list[str]:
    """Lines of ``proc``'s stdout up to the first that holds ``wanted`` (or its end: the
    process's --seconds budget bounds the wait)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if wanted in line:
            break
    return lines


def wait_online(platform: PlatformSubscriber, agent: AgentProcess) -> None:
    view = platform.gateways["gw-test"]
    assert platform.wait_for(lambda: view.status.get("state") == "online", 15), agent.log


def test_json_count_prints_the_pinned_samples_once(agent: AgentProcess,
                                                   platform: PlatformSubscriber) -> None:
    wait_online(platform, agent)
    result = edge_agent("platform-tail", "--port", str(platform.port), "--json", "--count",
                        "20", "--seconds", "12", timeout=30)
    assert 0 == result.returncode, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    samples = [r for r in records if r["kind"] == "sample"]
    # The agent was online before the tail subscribed: exactly its retained birth.
    [status] = [r for r in records if r["kind"] != "sample"]
    assert ("status", "online", "gw-test", "site-test") == (
        status["kind"], status["state"], status["gateway"], status["site"])
    assert 64 == len(status["config_hash"])
    assert 20 == len(samples)
    for s in samples:
        assert ("gw-test", "site-test", "good", status["epoch"]) == (
            s["gateway"], s["site"], s["q"], s["epoch"])
        device, _, register = s["ch"].partition(".")
        assert "gas1" == device
        assert PINNED[register] == pytest.approx(s["v"]), s
    assert len(samples) == len({s["seq"] for s in samples})
    assert {"gas1.co", "gas1.o2"} <= {s["ch"] for s in samples}
    assert "20 samples, 0 events, 0 duplicates dropped, 0 bad payloads" in result.stderr


def test_human_output_shows_the_alarm_and_ctrl_c_exits_130(
        agent: AgentProcess, platform: PlatformSubscriber, gas_detector: SimulatedDevice) -> None:
    wait_online(platform, agent)
    proc = tail("--port", str(platform.port), "--seconds", "14")
    try:
        before = read_until(proc, "gas1.co ")  # a sample: the tail is subscribed
        assert any("gas1.co " in line for line in before), before
        gas_detector.pin("co", 30)  # level 1 is 24 ppm
        view = platform.gateways["gw-test"]
        assert platform.wait_for(lambda: "gas1.co:above:1" in view.active, 10), agent.log
        lines = read_until(proc, "gas1.co:above:1")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    [alarm] = [line for line in lines if "gas1.co:above:1" in line]
    event = view.active["gas1.co:above:1"]
    assert "ALARM" in alarm
    assert "raised" in alarm
    assert "value 30 ppm  setpoint 24 ppm" in alarm
    assert f"id {event['id'][:8]}" in alarm
    assert any("gas1.co" in line and " 30 ppm" in line for line in lines)  # the sample too
    assert 130 == proc.returncode
    assert "Traceback" not in stderr
    assert "Aborted" not in stderr
    assert "0 duplicates dropped, 0 bad payloads" in stderr


def test_unreachable_broker_names_host_and_port() -> None:
    port = free_port()
    result = edge_agent("platform-tail", "--port", str(port), "--seconds", "5", timeout=20)
    assert 1 == result.returncode
    assert "" == result.stdout
    lines = result.stderr.splitlines()
    assert [f"error: cannot reach the MQTT broker at 127.0.0.1:{port}: connection refused"
            ] == lines[:1]
    assert 2 == len(lines)  # what is wrong, then what to check
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--ca-file", "/nonexistent/ca.pem"], "error: --ca-file /nonexistent/ca.pem: no such file"),
    (["--username", "platform", "--password-env", "TAIL_TEST_PW"],
     "error: the environment variable TAIL_TEST_PW (--password-env) is not set"),
])
def test_options_that_cannot_work_are_refused_before_connecting(
        args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAIL_TEST_PW", raising=False)
    result = edge_agent("platform-tail", *args, "--seconds", "5", timeout=20)
    assert (1, message) == (result.returncode, result.stderr.splitlines()[0])
    assert "Traceback" not in result.stderr


class Publisher:
    """A stand-in gateway: publishes hand-made payloads with QoS 1."""

    def __init__(self, port: int, tls: dict[str, str] | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        if tls:
            self.client.tls_set(**tls)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: dict | bytes, retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(topic, data, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def envelope(**fields: object) -> dict:
    return {"v": 1, "site": "site-x", "gateway": "gw-x", "epoch": EPOCH, **fields}


def sample(seq: int) -> dict:
    return {"seq": seq, "ts": 1795705015366, "ch": "top.co", "v": seq, "u": "ppm", "q": "good"}


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[Publisher]:
    gateway = Publisher(broker.port)
    # Retained, so a tail's first line says it is subscribed.
    gateway.send(f"{PREFIX}/status", envelope(state="online", version="9.9", config_hash="c" * 64,
                                              started=1), retain=True)
    yield gateway
    gateway.close()


def test_duplicates_bad_payloads_and_commands(broker: Mosquitto, publisher: Publisher) -> None:
    """Each (gateway, epoch, seq) printed once; garbage is one stderr line; cmd is ignored."""
    proc = tail("--port", str(broker.port), "--json", "--count", "4", "--seconds", "10")
    try:
        assert "status" in json.loads(read_until(proc, "status")[0])["kind"]
        telemetry = envelope(samples=[sample(1), sample(2)])
        publisher.send(f"{PREFIX}/telemetry", telemetry)
        publisher.send(f"{PREFIX}/telemetry", telemetry)  # a re-send after a lost PUBACK
        publisher.send(f"{PREFIX}/telemetry", b"{not json")
        publisher.send(f"{PREFIX}/cmd/ping", {"id": "r1"})
        publisher.send(f"{PREFIX}/cmd/ping/reply", {"id": "r1", "ok": True})
        publisher.send(f"{PREFIX}/telemetry",
                       gzip.compress(json.dumps(envelope(samples=[sample(3)])).encode()))
        publisher.send(f"{PREFIX}/alarm", envelope(
            seq=4, id="f" * 32, ts=1795705015366, kind="threshold", **{"class": "alarm"},
            transition="raised", key="top.co:above:1", value=30, setpoint=24, unit="ppm"))
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert 0 == proc.returncode, stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    assert [("sample", 1), ("sample", 2), ("sample", 3), ("event", 4)] == [
        (r["kind"], r["seq"]) for r in records]
    assert ("threshold", "raised") == (records[-1]["event_kind"], records[-1]["transition"])
    bad = [line for line in stderr.splitlines() if line.startswith("bad payload")]
    assert 1 == len(bad)
    assert f"bad payload on {PREFIX}/telemetry (9 bytes)" in bad[0]
    assert "3 samples, 1 events, 2 duplicates dropped, 1 bad payloads" in stderr
    assert "Traceback" not in stderr


def test_mutual_tls_delivers_and_a_foreign_ca_is_refused(tls_broker: Mosquitto,
                                                        pki: Pki) -> None:
    port = str(tls_broker.port)
    refused = edge_agent("platform-tail", "--port", port, "--ca-file", str(pki.rogue_ca),
                         "--cert-file", str(pki.platform_cert), "--key-file",
                         str(pki.platform_key), "--seconds", "5", timeout=20)
    assert 1 == refused.returncode
    assert refused.stderr.startswith(f"error: cannot reach the MQTT broker at 127.0.0.1:{port}: "
                                     "the broker's certificate was not accepted")
    gateway = Publisher(tls_broker.port, tls={"ca_certs": str(pki.ca),
                                              "certfile": str(pki.client_cert),
                                              "keyfile": str(pki.client_key)})
    try:
        gateway.send(f"{PREFIX}/telemetry", envelope(samples=[sample(1)]), retain=True)
        result = edge_agent("platform-tail", "--port", port, "--ca-file", str(pki.ca),
                            "--cert-file", str(pki.platform_cert), "--key-file",
                            str(pki.platform_key), "--json", "--count", "1", "--seconds", "10",
                            timeout=20)
    finally:
        gateway.close()
    assert 0 == result.returncode, result.stderr
    assert [("gw-x", "sample", 1)] == [(r["gateway"], r["kind"], r["seq"])
                                      for r in map(json.loads, result.stdout.splitlines())]
