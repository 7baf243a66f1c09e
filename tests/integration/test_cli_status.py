"""``edge-agent status`` and ``alarms`` against a running agent, through its local
socket; and what they say when no agent runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.demo.platform import PlatformSubscriber
from simulators import SimulatedDevice
from tests.integration.test_cli import edge_agent
from tests.support import AgentProcess, wait_until


@pytest.fixture
def running(agent: AgentProcess, platform: PlatformSubscriber,
            gas_detector: SimulatedDevice) -> AgentProcess:
    """The agent with a CO alarm raised, once the platform has heard of it."""
    gas_detector.pin("co", 30)
    view = platform.gateways["gw-test"]
    assert platform.wait_for(lambda: "gas1.co:above:1" in view.active, 15), agent.log
    return agent


def test_status_json_shows_channels_alarms_buses_uplink_and_buffer(
        running: AgentProcess, site_config: Path) -> None:
    result = edge_agent("status", "-c", str(site_config), "--json")
    assert 0 == result.returncode, result.stderr
    status = json.loads(result.stdout)
    channels = {c["ch"]: c for c in status["channels"]}
    assert (30, "ppm", "good", "alarm", 1) == tuple(
        channels["gas1.co"][k] for k in ("v", "u", "q", "alarm", "level"))
    assert (20.9, None) == (channels["gas1.o2"]["v"], channels["gas1.o2"]["alarm"])
    assert 1.0 == status["health"]["buses"]["field"]["success_rate"]
    assert status["health"]["numba_cache"]["loaded"] > 0
    assert status["uplink"]["connected"] is True
    assert ["gas1.co:above:1"] == [a["key"] for a in status["alarms"]]
    assert {"answering": True} == status["devices"]["gas1"]
    figures = status["health"]["alarm_figures"]
    assert (figures["alarms_10min"], figures["flood"], figures["stale"]) == (1, False, 0)


def test_status_once_is_a_readable_table(running: AgentProcess, site_config: Path) -> None:
    result = edge_agent("status", "-c", str(site_config), "--once")
    assert 0 == result.returncode, result.stderr
    row = next(line for line in result.stdout.splitlines() if "gas1.co " in line)
    assert ["gas1.co", "30", "ppm", "good", "L1", "alarm"] == row.replace("│", " ").split()[:6]
    assert "uplink connected to 127.0.0.1:" in result.stdout
    assert "unacknowledged" in result.stdout


def test_status_and_alarms_speak_chinese_under_a_chinese_locale(
        running: AgentProcess, site_config: Path) -> None:
    result = edge_agent("status", "-c", str(site_config), "--once", lang="zh_CN.UTF-8")
    assert 0 == result.returncode, result.stderr
    row = next(line for line in result.stdout.splitlines() if "gas1.co " in line)
    assert ["gas1.co", "30", "ppm", "正常", "一级报警"] == row.replace("│", " ").split()[:5]
    assert "通道" in result.stdout
    assert "未确认" in result.stdout
    listed = edge_agent("alarms", "list", "-c", str(site_config), lang="zh_CN.UTF-8")
    assert "未确认" in listed.stdout
    assert "unacknowledged" not in listed.stdout
    helped = edge_agent("alarms", "ack", "--help", lang="zh_CN.UTF-8")
    assert "确认" in helped.stdout


def test_alarms_ack_by_id_prefix_reaches_the_platform(
        running: AgentProcess, site_config: Path, platform: PlatformSubscriber) -> None:
    listed = json.loads(edge_agent("alarms", "list", "-c", str(site_config), "--json").stdout)
    assert [("gas1.co:above:1", "unacknowledged")] == [(a["key"], a["state"]) for a in listed]
    result = edge_agent("alarms", "ack", listed[0]["id"][:8], "--by", "technician li",
                        "-c", str(site_config))
    assert 0 == result.returncode, result.stderr
    assert result.stdout.startswith("acknowledged gas1.co:above:1")
    view = platform.gateways["gw-test"]
    assert platform.wait_for(lambda: any(e["transition"] == "acknowledged"
                                         and e["by"] == "technician li" for e in view.events))
    listed = json.loads(edge_agent("alarms", "list", "-c", str(site_config), "--json").stdout)
    assert "acknowledged" == listed[0]["state"]


def test_alarms_stats_shows_the_figures_with_their_targets(running: AgentProcess,
                                                          site_config: Path) -> None:
    result = edge_agent("alarms", "stats", "-c", str(site_config))
    assert 0 == result.returncode, result.stderr
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in result.stdout.splitlines() if line.count("│") == 4}
    assert rows["alarms in the last 10 min"] == "1"
    assert rows["flood (over 10 in 10 min)"] == "no"
    assert rows["chattering (3+ in 60 s)"] == "none"


def test_alarms_ack_of_nothing_says_what_can_be_acknowledged(
        running: AgentProcess, site_config: Path) -> None:
    result = edge_agent("alarms", "ack", "gas1.h2s:above:1", "--by", "li", "-c",
                        str(site_config))
    assert 1 == result.returncode
    assert ["error: ack-alarm: no alarm 'gas1.h2s:above:1' to acknowledge",
            "alarms that can be acknowledged: gas1.co:above:1 (edge-agent alarms list)"
            ] == result.stderr.splitlines()


def test_shelving_and_out_of_service_show_loudly_and_refusals_say_why(
        running: AgentProcess, site_config: Path) -> None:
    def cli(*args: str):
        return edge_agent("alarms", *args, "-c", str(site_config))

    shelved = cli("shelve", "gas1.co:above:1", "--by", "li", "--reason", "drifting",
                  "--minutes", "20")
    assert 0 == shelved.returncode, shelved.stderr
    assert shelved.stdout.startswith("shelved gas1.co:above:1 by li")
    assert 0 == cli("out-of-service", "gas1.h2s", "--by", "zhao", "--reason",
                    "calibration").returncode
    status = edge_agent("status", "-c", str(site_config), "--once").stdout
    assert "NOT FULLY PROTECTING: shelved gas1.co:above:1 by li (drifting), 20 min left; " \
           "OUT OF SERVICE gas1.h2s by zhao (calibration), 60 min left" in status
    assert "unacknowledged, SHELVED" in status

    level2 = cli("shelve", "gas1.co:above:2", "--by", "li", "--reason", "x")
    assert 1 == level2.returncode
    assert "level-2 alarms cannot be shelved" in level2.stderr
    handled = cli("handle", "gas1.co:above:1", "--by", "li", "--cause", "c", "--action", "a")
    assert "acknowledge it first" in handled.stderr
    assert 0 == cli("return-to-service", "gas1.h2s", "--by", "zhao").returncode
    assert 0 == cli("unshelve", "gas1.co:above:1", "--by", "li").returncode
    assert "NOT FULLY" not in edge_agent("status", "-c", str(site_config), "--once").stdout


def test_status_without_a_running_agent_says_so(site_config: Path) -> None:
    result = edge_agent("status", "-c", str(site_config))
    assert 1 == result.returncode
    assert result.stderr.startswith("error: no agent is running with this config (no socket ")
    assert "Traceback" not in result.stderr


def test_status_after_a_kill_says_the_agent_stopped(site_config: Path, tmp_path: Path) -> None:
    agent = AgentProcess(site_config).start()
    wait_until(lambda: (tmp_path / "buffer.db.sock").exists(), 15, "the control socket")
    agent.kill()
    result = edge_agent("status", "-c", str(site_config))
    assert 1 == result.returncode
    assert "it has stopped or was killed" in result.stderr


def test_an_agent_whose_control_socket_cannot_be_made_still_runs(
        site_config: Path, tmp_path: Path, platform: PlatformSubscriber) -> None:
    """A unix socket path is limited to 107 bytes: with the buffer that deep, the local
    window cannot open, and the agent polls, judges and publishes all the same."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    site_config.write_text(site_config.read_text().replace(
        str(tmp_path / "buffer.db"), str(deep / "buffer.db")))
    agent = AgentProcess(site_config).start()
    try:
        view = platform.gateways["gw-test"]
        assert platform.wait_for(lambda: len(view.sample_seqs) >= 7, 15), agent.log
        assert "control_socket_failed" in agent.log
        result = edge_agent("status", "-c", str(site_config))
        assert 1 == result.returncode
        assert "cannot reach the agent at " in result.stderr
        assert "Traceback" not in result.stderr
        assert 0 == agent.stop()
    finally:
        agent.kill()
