"""Faults of the platform link: a broker that never acknowledges, a link that comes
and goes, a SIGTERM in the middle of a drain. In each, polling goes on and nothing
committed is lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber
from tests.faults.net import Proxy, SilentBroker
from tests.integration.test_pipeline import GATEWAY, all_seqs, assert_complete
from tests.support import REPO, AgentProcess, buffered, last_seq, wait_until


def test_broker_that_never_acknowledges_keeps_every_row_buffered(
        site_config: Path, broker: Mosquitto, platform: PlatformSubscriber,
        tmp_path: Path) -> None:
    """A broker that takes the connection and the publishes but sends no PUBACK: the
    window fills, nothing leaves the buffer, polling continues; a real broker on the
    same port later gets everything."""
    buffer = tmp_path / "buffer.db"
    broker.stop()
    with SilentBroker(broker.port) as silent:
        agent = AgentProcess(site_config).start()
        try:
            wait_until(lambda: silent.publishes >= 4, 15, "the window of 4 published")
            seen = last_seq(buffer)
            wait_until(lambda: last_seq(buffer) >= seen + 35, 10, "five more polls committed")
            assert buffered(buffer)["samples"] + buffered(buffer)["events"] == last_seq(buffer)
            assert silent.publishes <= 4 + 1  # the window (and the status), nothing more
        except BaseException:
            agent.kill()
            raise
    broker.start()  # the silent one is gone: the agent reconnects to a real broker
    try:
        view = platform.gateways[GATEWAY]
        assert platform.wait_for(lambda: set(range(1, seen + 36)) <= set(all_seqs(platform)),
                                 30), agent.log
        assert 0 == agent.stop()
    finally:
        agent.kill()
    assert view.status["state"] == "offline"
    assert_complete(platform, buffer)


def test_flapping_link_loses_nothing(site_config: Path, broker: Mosquitto,
                                     platform: PlatformSubscriber, tmp_path: Path) -> None:
    """Five cuts of the link between agent and broker, each while the agent publishes."""
    buffer = tmp_path / "buffer.db"
    with Proxy(broker.port) as link:
        site_config.write_text(site_config.read_text().replace(
            f"port = {broker.port}", f"port = {link.port}"))
        agent = AgentProcess(site_config).start()
        try:
            for flap in range(1, 6):
                wait_until(lambda: agent.log.count("uplink_connected") >= flap,  # noqa: B023
                           20, f"connection {flap}")
                link.cut()
                seen = last_seq(buffer)
                wait_until(lambda: last_seq(buffer) >= seen + 14, 10,  # noqa: B023
                           "polls while cut")
                link.restore()
            final = last_seq(buffer)
            assert platform.wait_for(lambda: set(range(1, final + 1)) <= set(
                all_seqs(platform)), 30), agent.log
            assert 0 == agent.stop()
        finally:
            agent.kill()
    assert agent.log.count("uplink_connected") == 6
    assert_complete(platform, buffer)


def test_sigterm_during_a_drain_stops_in_time_and_keeps_the_rest(
        site_config: Path, broker: Mosquitto, platform: PlatformSubscriber,
        tmp_path: Path) -> None:
    """A backlog drains; SIGTERM arrives part-way: the agent stops within its drain
    budget, what was not acknowledged stays buffered, and the next run sends it."""
    buffer = tmp_path / "buffer.db"
    site_config.write_text(site_config.read_text().replace("inflight_window = 4",
                                                           "inflight_window = 1"))
    broker.stop()
    agent = AgentProcess(site_config).start()
    try:
        wait_until(lambda: buffer.exists() and buffered(buffer)["samples"] >= 300, 60,
                   "a backlog")
        broker.start()
        view = platform.gateways[GATEWAY]
        assert platform.wait_for(lambda: len(view.sample_seqs) >= 20, 20), agent.log
        assert 0 == agent.stop(timeout_s=20)
    finally:
        agent.kill()
    committed = last_seq(buffer)
    connects = agent.log.count("uplink_connected")  # the two runs share one log file
    again = AgentProcess(site_config).start()
    try:
        assert platform.wait_for(lambda: set(range(1, committed + 1)) <= set(
            all_seqs(platform)), 30), again.log
        wait_until(lambda: again.log.count("uplink_connected") > connects, 15,
                   "the second run connected")
        assert 0 == again.stop()
    finally:
        again.kill()
    assert_complete(platform, buffer)


def test_network_loop_that_ends_without_a_disconnect_is_noticed(broker: Mosquitto,
                                                                 tmp_path: Path) -> None:
    """paho's loop thread can end without calling on_disconnect (select() refuses a
    descriptor above 1023; a process holding a thousand files meets it): the uplink
    must notice, and connect again once it can, instead of waiting for ever.

    In a process of its own: in the test process, files that other tests left to the
    garbage collector may close at any time and hand the uplink a low descriptor.
    """
    script = f"""
import os, resource, sys
from paho.mqtt.client import _ConnectionState
from edge_agent.config import Mqtt
from edge_agent.uplink import Uplink
from edge_agent.uplink.payloads import Origin
from tests.support import wait_until

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
uplink = Uplink(Mqtt(host="127.0.0.1", port={broker.port}, tls="off", reconnect_max_s=1),
                origin=Origin("site", "gw-fd", "e1"), buffer_path={str(tmp_path / "b.db")!r},
                birth={{}}, health=dict)
uplink.start()  # its socket gets a descriptor above 1100
wait_until(lambda: uplink.client._state == _ConnectionState.MQTT_CS_CONNECTION_LOST,
           10, "paho's loop ended on select()")
assert uplink.connects == 0
for fd in fillers:
    os.close(fd)
wait_until(lambda: uplink.connects >= 1, 15, "connected again on a low descriptor")
uplink.stop(drain_timeout_s=1)
print("reconnected")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uplink_loop_ended" in result.stdout + result.stderr
    assert result.stdout.strip().endswith("reconnected")


def test_publishes_the_broker_refuses_stay_buffered(
        site_config: Path, broker: Mosquitto, platform: PlatformSubscriber,
        tmp_path: Path) -> None:
    """An MQTT 5 broker that answers PUBACK "not authorised" (an ACL that does not
    grant the gateway's topics): every row stays in the buffer and polling goes on;
    once the broker takes them, everything arrives."""
    buffer = tmp_path / "buffer.db"
    site_config.write_text(site_config.read_text().replace('tls = "off"',
                                                           'tls = "off"\nprotocol = "5"'))
    broker.stop()
    refusing = Mosquitto(port=broker.port, workdir=tmp_path / "refusing",
                         acl=["topic readwrite edge/v1/+/+/status"]).start()
    agent = AgentProcess(site_config).start()
    try:
        wait_until(lambda: agent.log.count("publish_rejected") >= 3, 20, "three refusals")
        seen = last_seq(buffer)
        wait_until(lambda: last_seq(buffer) >= seen + 14, 10, "two more polls committed")
        assert buffered(buffer)["samples"] + buffered(buffer)["events"] == last_seq(buffer)
        refusing.stop()
        broker.start()  # the ACL is fixed
        assert platform.wait_for(lambda: set(range(1, seen + 15)) <= set(all_seqs(platform)),
                                 30), agent.log
        assert 0 == agent.stop()
    finally:
        agent.kill()
        refusing.stop()
    assert_complete(platform, buffer)
