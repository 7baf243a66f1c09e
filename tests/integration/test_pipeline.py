"""End to end: a simulated gas detector, the agent as a process, a real mosquitto."""

from __future__ import annotations

import time
from pathlib import Path

from edge_agent.buffer import Buffer
from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber
from edge_agent.records import Event, Sample
from simulators import SimulatedDevice
from tests.support import AgentProcess, buffered, last_seq, wait_until

GATEWAY = "gw-test"


def all_seqs(platform: PlatformSubscriber) -> list[int]:
    """Every sequence number that reached the platform, duplicates included."""
    seqs = []
    for message in platform.messages:
        if message.kind == "telemetry":
            seqs += [s["seq"] for s in message.body["samples"]]
        elif message.kind in ("alarm", "entry"):
            seqs.append(message.body["seq"])
    return seqs


def first_arrival_order(platform: PlatformSubscriber, kind: str) -> list[int]:
    seen, order = set(), []
    for message in platform.of_kind(kind):
        batch = ([s["seq"] for s in message.body["samples"]] if kind == "telemetry"
                 else [message.body["seq"]])
        for seq in batch:
            if seq not in seen:
                seen.add(seq)
                order.append(seq)
    return order


def assert_complete(platform: PlatformSubscriber, buffer: Path) -> None:
    """Everything the agent ever recorded reached the platform, in order per topic."""
    assert buffered(buffer) == {"samples": 0, "events": 0}
    assert set(all_seqs(platform)) == set(range(1, last_seq(buffer) + 1))
    for kind in ("telemetry", "alarm"):
        order = first_arrival_order(platform, kind)
        assert order == sorted(order), f"{kind} arrived out of order"


def test_samples_arrive_with_values_units_and_sequence(
        agent: AgentProcess, platform: PlatformSubscriber, tmp_path: Path) -> None:
    """Every register is decoded to the value the device holds, with its unit."""
    view = platform.gateways[GATEWAY]
    expected = {"gas1.o2": (20.9, "%VOL"), "gas1.co": (2, "ppm"), "gas1.h2s": (0, "ppm"),
                "gas1.lel": (0, "%LEL"), "gas1.temperature": (-20.5, "°C"),
                "gas1.humidity": (55.5, "%RH"), "gas1.run_hours": (70000, "h")}
    assert platform.wait_for(lambda: set(expected) <= set(view.latest), 15), agent.log
    for channel, (value, unit) in expected.items():
        sample = view.latest[channel]
        assert (value, unit, "good") == (sample["v"], sample["u"], sample["q"])
    telemetry = platform.of_kind("telemetry")[0].body
    assert (1, "site-test", GATEWAY) == (telemetry["v"], telemetry["site"], telemetry["gateway"])
    assert platform.wait_for(lambda: view.status.get("state") == "online")
    assert len(view.status["config_hash"]) == 64

    assert 0 == agent.stop()
    assert platform.wait_for(lambda: view.status.get("state") == "offline")
    assert "stopped" == view.status["reason"]
    assert_complete(platform, tmp_path / "buffer.db")


def test_alarm_raised_and_returned_to_normal_with_one_id(
        agent: AgentProcess, platform: PlatformSubscriber, gas_detector: SimulatedDevice,
        tmp_path: Path) -> None:
    """CO crossing level 1 raises an alarm; falling past the deadband ends it, same id."""
    view = platform.gateways[GATEWAY]
    assert platform.wait_for(lambda: "gas1.co" in view.latest, 15), agent.log
    gas_detector.pin("co", 30)
    assert platform.wait_for(lambda: "gas1.co:above:1" in view.active, 10), agent.log
    raised = view.active["gas1.co:above:1"]
    assert ("alarm", "raised", "gas1.co", 1, "above", 24, 30, "ppm") == (
        raised["class"], raised["transition"], raised["channel"], raised["level"],
        raised["direction"], raised["setpoint"], raised["value"], raised["unit"])
    assert "gas1.co:above:2" not in view.active

    gas_detector.pin("co", 23)  # at the edge of the 1 ppm deadband: still in alarm
    assert platform.wait_for(lambda: view.latest["gas1.co"]["v"] == 23, 10)
    assert "gas1.co:above:1" in view.active
    gas_detector.pin("co", 22)
    assert platform.wait_for(lambda: "gas1.co:above:1" not in view.active, 10)
    ended = view.events[-1]
    assert ("returned_to_normal", raised["id"], 22) == (ended["transition"], ended["id"],
                                                         ended["value"])
    assert 0 == agent.stop()
    assert_complete(platform, tmp_path / "buffer.db")


def test_broker_outage_loses_nothing_and_alarms_overtake_the_backlog(
        agent: AgentProcess, platform: PlatformSubscriber, broker: Mosquitto,
        gas_detector: SimulatedDevice, tmp_path: Path) -> None:
    """Stop the broker, raise an alarm while it is away, bring it back: all arrives."""
    buffer = tmp_path / "buffer.db"
    view = platform.gateways[GATEWAY]
    assert platform.wait_for(lambda: len(view.sample_seqs) >= 14, 15), agent.log
    broker.stop()
    # Wait for a backlog of samples polled while the broker is away, then an alarm.
    wait_until(lambda: buffered(buffer)["samples"] >= 70, 20, "a backlog in the buffer")
    gas_detector.pin("co", 200)
    wait_until(lambda: buffered(buffer)["events"] >= 2, 10, "alarms buffered offline")
    wait_until(lambda: buffered(buffer)["samples"] >= 140, 20, "more backlog")
    gas_detector.pin("co", 2)

    broker.start()
    assert platform.wait_for(lambda: len(view.events) >= 4, 20), agent.log
    wait_until(lambda: buffered(buffer) == {"samples": 0, "events": 0}, 20, "the buffer drained")
    assert 0 == agent.stop()
    assert_complete(platform, buffer)

    # The level-1 alarm raised offline arrived before the telemetry polled just before it.
    raised = next(e for e in view.events if e["key"] == "gas1.co:above:1")
    messages = platform.messages
    alarm_at = next(i for i, m in enumerate(messages)
                    if m.kind == "alarm" and m.body["seq"] == raised["seq"])
    sample_at = next(i for i, m in enumerate(messages) if m.kind == "telemetry"
                     and any(s["seq"] == raised["seq"] - 1 for s in m.body["samples"]))
    assert alarm_at < sample_at


def test_kill_9_loses_nothing_committed(
        site_config: Path, platform: PlatformSubscriber, tmp_path: Path) -> None:
    """SIGKILL the agent mid-run; after a restart every committed row is delivered."""
    buffer = tmp_path / "buffer.db"
    view = platform.gateways[GATEWAY]
    first = AgentProcess(site_config).start()
    # Generous timeouts: make arm64-check runs this under emulation, where numba loads slowly.
    assert platform.wait_for(lambda: len(view.sample_seqs) >= 30, 90), first.log
    first.kill()
    killed_at = last_seq(buffer)
    second = AgentProcess(site_config).start()
    try:
        assert platform.wait_for(lambda: len(view.sample_seqs) >= killed_at + 20, 90), second.log
    finally:
        assert 0 == second.stop()
    assert_complete(platform, buffer)
    assert last_seq(buffer) > killed_at  # numbering continued; no seq was reused


def test_sensor_fault_codes_and_range_become_qualities_and_faults(
        agent: AgentProcess, platform: PlatformSubscriber, gas_detector: SimulatedDevice,
        tmp_path: Path) -> None:
    """A fault code from the device and a reading beyond the sensor's range are flagged
    on the sample and raised as faults of that sensor, then end."""
    view = platform.gateways[GATEWAY]
    assert platform.wait_for(lambda: "gas1.co" in view.latest, 15), agent.log
    gas_detector.pin("co", 0xFFFF)  # the head's sensor-fault code (profile fault_values)
    gas_detector.pin("temperature", 85.0)  # beyond the sensor's -40..70 °C
    assert platform.wait_for(lambda: {"gas1.co:sensor_fault", "gas1.temperature:out_of_range"}
                             <= set(view.active), 10), agent.log
    # Events overtake telemetry: wait for the samples of the same poll too.
    assert platform.wait_for(lambda: view.latest["gas1.co"]["q"] == "device_fault", 10)
    assert None is view.latest["gas1.co"]["v"]
    assert (85.0, "out_of_range") == (view.latest["gas1.temperature"]["v"],
                                      view.latest["gas1.temperature"]["q"])
    gas_detector.pin("co", 2)
    gas_detector.pin("temperature", 20.0)
    assert platform.wait_for(lambda: not {"gas1.co:sensor_fault",
                                          "gas1.temperature:out_of_range"} & set(view.active), 10)
    assert platform.wait_for(lambda: view.latest["gas1.co"]["q"] == "good", 10)
    assert 0 == agent.stop()
    assert_complete(platform, tmp_path / "buffer.db")


def test_full_buffer_evicts_oldest_telemetry_and_reports_it(
        site_config: Path, broker: Mosquitto, platform: PlatformSubscriber,
        tmp_path: Path) -> None:
    """A buffer over its quota drops its oldest telemetry, never an event, and says so
    with a fault and a counter; the fault ends once the backlog has drained."""
    buffer_path = tmp_path / "buffer.db"
    site_config.write_text(site_config.read_text() + "max_bytes = 1048576\n")
    backlog = Buffer(buffer_path)
    old = int(time.time() * 1000) - 3_600_000
    for cycle in range(30):  # about 1.2 MiB of samples from an hour ago, and an alarm
        backlog.commit_cycle([Sample(f"gas1.ch{i % 7}", old + cycle, float(i), "ppm")
                              for i in range(1000)],
                             [Event(old, "alarm", "raised", "a1", "gas1.co:above:1", {})]
                             if cycle == 0 else [])
    backlog.close()
    broker.stop()  # nothing drains before the agent's first commit
    agent = AgentProcess(site_config).start()
    try:
        wait_until(lambda: "agent:buffer:full" in agent.log, 20, "the eviction fault")
        broker.start()
        view = platform.gateways[GATEWAY]
        assert platform.wait_for(lambda: any(
            e["key"] == "agent:buffer:full" and e["transition"] == "returned_to_normal"
            for e in view.events), 30), agent.log
        assert 0 == agent.stop()
    finally:
        agent.kill()
    full = next(e for e in view.events if e["key"] == "agent:buffer:full")
    assert ("fault", "raised", 1_048_576) == (full["class"], full["transition"],
                                              full["quota_bytes"])
    evicted = full["evicted_total"]
    assert evicted >= 1000
    assert platform.wait_for(lambda: view.health.get("samples_evicted") == evicted, 10)
    event_seqs = {e["seq"] for e in view.events}
    assert 1 in event_seqs  # the old alarm was kept
    assert not view.sample_seqs & set(range(2, 2 + evicted))  # the oldest samples went
    assert set(range(2 + evicted, last_seq(buffer_path) + 1)) <= view.sample_seqs | event_seqs


def test_gzip_telemetry_and_mqtt5_arrive_whole(
        site_config: Path, platform: PlatformSubscriber, tmp_path: Path) -> None:
    site_config.write_text(site_config.read_text().replace(
        'tls = "off"', 'tls = "off"\nprotocol = "5"\ncompression = "gzip"'))
    agent = AgentProcess(site_config).start()
    view = platform.gateways[GATEWAY]
    try:
        assert platform.wait_for(lambda: len(view.sample_seqs) >= 21, 15), agent.log
        assert 0 == agent.stop()
    finally:
        agent.kill()
    assert 20.9 == view.latest["gas1.o2"]["v"]
    assert_complete(platform, tmp_path / "buffer.db")


def test_corrupt_buffer_is_moved_aside_and_reported(
        site_config: Path, platform: PlatformSubscriber, tmp_path: Path) -> None:
    """PEER_LESSONS 9: a damaged buffer never stops the agent; it is kept for
    inspection, a new one starts under a new epoch, and the platform is told."""
    (tmp_path / "buffer.db").write_bytes(b"\x00garbage after a bad SD card write" * 200)
    agent = AgentProcess(site_config).start()
    view = platform.gateways[GATEWAY]
    try:
        assert platform.wait_for(lambda: "agent:buffer:corrupt" in view.active, 15), agent.log
        assert platform.wait_for(lambda: len(view.sample_seqs) >= 7, 10)
        assert 0 == agent.stop()
    finally:
        agent.kill()
    corrupt = view.active["agent:buffer:corrupt"]
    kept = Path(corrupt["moved_to"])
    assert kept.read_bytes().startswith(b"\x00garbage")
    assert kept.parent == tmp_path
