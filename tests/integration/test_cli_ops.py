"""``edge-agent install`` (staged under a directory, as root is not needed to check
it) and ``edge-agent logs`` on a real agent's log file."""

from __future__ import annotations

import subprocess
from pathlib import Path

from edge_agent.config import load_config
from tests.integration.test_cli import edge_agent
from tests.support import AgentProcess, wait_until


def test_install_stages_the_unit_the_config_and_the_commands(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = edge_agent("install", "--root", str(root))
    assert 0 == result.returncode, result.stderr
    unit = (root / "etc/systemd/system/edge-agent.service").read_text()
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    executable = exec_line.split("=", 1)[1].split()[0]
    assert Path(executable).is_file()  # this copy of the agent, not a made-up path
    assert exec_line.endswith(" run --config /etc/edge-agent/site.toml")
    verify = subprocess.run(["systemd-analyze", "verify", str(
        root / "etc/systemd/system/edge-agent.service")], capture_output=True, text=True,
        check=False)
    assert "" == verify.stderr.replace(f"{root}/etc/systemd/system/", "")  # ExecStart exists
    site = root / "etc/edge-agent/site.toml"
    assert "gw-change-me" == load_config(site).site.gateway_id  # the skeleton validates
    assert 0o770 == (root / "etc/edge-agent").stat().st_mode & 0o777
    lines = result.stdout.splitlines()
    assert ("would run: useradd --system --home-dir /var/lib/edge-agent --shell "
            "/usr/sbin/nologin --groups dialout --user-group edge-agent") in lines
    assert "would run: systemctl enable edge-agent" in lines
    assert any("[mqtt]" in line for line in lines)


def test_install_keeps_an_existing_config(tmp_path: Path) -> None:
    site = tmp_path / "root/etc/edge-agent/site.toml"
    site.parent.mkdir(parents=True)
    site.write_text("# the technician's own\n")
    result = edge_agent("install", "--root", str(tmp_path / "root"))
    assert 0 == result.returncode, result.stderr
    assert "# the technician's own\n" == site.read_text()
    assert f"kept the existing {site}" in result.stdout


def test_install_refuses_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('gateway_id = "x"\n')
    result = edge_agent("install", "--root", str(tmp_path / "root"), "--config", str(bad))
    assert 1 == result.returncode
    assert "invalid config" in result.stderr
    assert not (tmp_path / "root").exists()


def test_logs_renders_the_agents_json_lines(site_config: Path) -> None:
    agent = AgentProcess(site_config).start()
    try:
        wait_until(lambda: "uplink_connected" in agent.log, 15, "the agent connected")
    finally:
        agent.stop()
    result = edge_agent("logs", "--file", str(agent.log_path), "-n", "500")
    assert 0 == result.returncode, result.stderr
    started = next(line for line in result.stdout.splitlines() if "agent_starting" in line)
    assert "info    agent_starting" in started
    assert 'gateway="gw-test"' in started
    last = edge_agent("logs", "--file", str(agent.log_path), "-n", "1").stdout.splitlines()
    assert 1 == len(last)
    assert "agent_stopped" in last[0]


def test_logs_of_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    result = edge_agent("logs", "--file", str(tmp_path / "nope.log"))
    assert 1 == result.returncode
    assert result.stderr.startswith(f"error: cannot read {tmp_path / 'nope.log'}: No such file")
    assert "Traceback" not in result.stderr
