"""``edge-agent config show|diff|set|migrate|apply``: every change validated before a
file is touched, comments kept, the old file kept, and a running agent switched
through the same path as the platform's set-config."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edge_agent import config as config_module
from edge_agent.cli import app
from edge_agent.demo.broker import free_port
from edge_agent.demo.platform import PlatformSubscriber
from simulators import ModbusTcpSimulator
from tests.integration.test_cli import edge_agent
from tests.support import REPO, AgentProcess


@pytest.fixture
def plating(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text((REPO / "config" / "plating_shop.toml").read_text().replace(
        "/var/lib/edge-agent/buffer.db", str(tmp_path / "buffer.db")))
    return path


def test_show_json_fills_in_the_limits_in_force(plating: Path) -> None:
    result = edge_agent("config", "show", "-c", str(plating), "--json")
    assert 0 == result.returncode, result.stderr
    shown = json.loads(result.stdout)
    pickling = next(d for d in shown["devices"] if d["name"] == "pickling")
    assert [{"level": 1, "above": 25.0}, {"level": 2, "above": 50.0}] == [
        {k: v for k, v in limit.items() if k in ("level", "above")}
        for limit in pickling["limits_in_force"]["lel"]]  # from the defaults, not the file
    assert 268435456 == shown["buffer"]["max_bytes"]


def test_set_writes_a_valid_file_keeps_comments_and_a_backup(plating: Path) -> None:
    before = plating.read_text()
    result = edge_agent("config", "set", "devices.cyanide-line.poll_interval_s", "2.5",
                        "-c", str(plating))
    assert 0 == result.returncode, result.stderr
    assert result.stdout.startswith("set devices.cyanide-line.poll_interval_s: 1.0 -> 2.5")
    after = plating.read_text()
    assert before == (plating.parent / "site.toml.previous").read_text()
    assert [line for line in before.splitlines() if line.startswith("#")] == [
        line for line in after.splitlines() if line.startswith("#")]
    assert 2.5 == config_module.load_config(plating).site.devices[2].poll_interval_s
    # an inline table in an item of [[devices]] that is not the last one: that item only
    result = edge_agent("config", "set", "devices.pickling.channels.co.limits",
                        "[{level = 1, above = 15}]", "-c", str(plating))
    assert 0 == result.returncode, result.stderr
    devices = config_module.load_config(plating).site.devices
    assert [15.0] == [x.above for x in devices[0].channels["co"].limits]
    assert [12.9, 25.8] == [x.above for x in devices[1].channels["co"].limits]


@pytest.mark.parametrize(("key", "value", "says"), [
    ("mqtt.keepalive_s", "2", "mqtt.keepalive_s (line 79): should be greater than or equal to 5"),
    ("devices.cyanide-lin.poll_interval_s", "2", 'did you mean "cyanide-line"?'),
    ("devices.pickling.channels.lel.limits", "[{level = 1, above = 15}]",
     "there is no table devices.pickling.channels.lel yet; add it with an editor"),
    ("mqtt.hots", '"x"', 'mqtt.hots (line 79): unknown key "hots"; did you mean "host"?'),
])
def test_set_refuses_what_would_break_the_config(plating: Path, key: str, value: str,
                                                  says: str) -> None:
    before = plating.read_text()
    result = edge_agent("config", "set", key, value, "-c", str(plating))
    assert 1 == result.returncode
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert before == plating.read_text()


def test_diff_lists_what_would_change(plating: Path, tmp_path: Path) -> None:
    proposed = tmp_path / "proposed.toml"
    proposed.write_text(plating.read_text().replace('host = "mqtt.platform.example.com"',
                                                    'host = "mqtt2.platform.example.com"'))
    result = edge_agent("config", "diff", str(proposed), "-c", str(plating), "--json")
    assert [{"key": "mqtt.host", "from": "mqtt.platform.example.com",
             "to": "mqtt2.platform.example.com"}] == json.loads(result.stdout)
    same = edge_agent("config", "diff", str(plating), "-c", str(plating))
    assert same.stdout.startswith("no change")


def _rename_batch(data: MutableMapping[str, Any]) -> list[str]:
    """A made-up step from format 1 to 2: [mqtt] batch became telemetry_batch."""
    mqtt = data.get("mqtt", {})
    if "batch" not in mqtt:
        return []
    mqtt["telemetry_batch"] = mqtt.pop("batch")
    return ["mqtt.batch is now mqtt.telemetry_batch"]


def test_an_older_format_is_upgraded_with_a_message_and_migrated(
        plating: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(config_module.MIGRATIONS, 1, _rename_batch)
    plating.write_text(plating.read_text().replace('[mqtt]\n', '[mqtt]\nbatch = 50  # keep\n'))
    runner = CliRunner()
    checked = runner.invoke(app, ["config", "validate", str(plating)])
    assert 0 == checked.exit_code, checked.output
    assert "upgraded in memory" in checked.output
    assert "format 1 -> 2: mqtt.batch is now mqtt.telemetry_batch" in checked.output
    migrated = runner.invoke(app, ["config", "migrate", str(plating)])
    assert 0 == migrated.exit_code, migrated.output
    text = plating.read_text()
    assert "telemetry_batch = 50  # keep" in text
    assert "schema_version = 2" in text
    assert 50 == config_module.load_config(plating).site.mqtt.telemetry_batch
    again = runner.invoke(app, ["config", "migrate", str(plating)])
    assert "already in the current format" in again.output


def test_a_newer_format_is_refused(plating: Path) -> None:
    plating.write_text("schema_version = 99\n" + plating.read_text())
    result = edge_agent("config", "validate", str(plating))
    assert 1 == result.returncode
    assert "schema_version: 99 was written for a newer edge-agent" in result.stderr


def test_apply_switches_the_running_agent_or_says_it_rolled_back(
        agent: AgentProcess, platform: PlatformSubscriber, site_config: Path,
        modbus_server: ModbusTcpSimulator, tmp_path: Path) -> None:
    view = platform.gateways["gw-test"]
    assert platform.wait_for(lambda: "gas1.co" in view.latest, 15), agent.log
    proposed = tmp_path / "proposed.toml"
    proposed.write_text(site_config.read_text().replace("above = 24", "above = 20"))
    result = edge_agent("config", "apply", str(proposed), "-c", str(site_config))
    assert 0 == result.returncode, result.stderr
    assert result.stdout.startswith("applied: config hash ")
    assert proposed.read_text() == site_config.read_text()
    lost = tmp_path / "lost.toml"
    lost.write_text(site_config.read_text().replace(f"port = {modbus_server.port}",
                                                    f"port = {free_port()}"))
    result = edge_agent("config", "apply", str(lost), "-c", str(site_config), timeout=120)
    assert 1 == result.returncode
    assert "these devices stopped answering: gas1; the previous config runs again" in (
        result.stderr)
    assert proposed.read_text() == site_config.read_text()
