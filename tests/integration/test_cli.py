"""The edge-agent command as a technician runs it: exit codes, messages, the demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def edge_agent(*args: str, timeout: float = 60, stdin: str = "",
               lang: str = "C.UTF-8") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": "", "LANG": lang}
    return subprocess.run([sys.executable, "-m", "edge_agent", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False, env=env)


def test_cli_validate_ok_prints_one_summary_line() -> None:
    result = edge_agent("config", "validate", "config/confined_space.toml")
    assert 0 == result.returncode, result.stderr
    lines = result.stdout.splitlines()
    assert 1 == len(lines)
    assert lines[0].startswith("OK config/confined_space.toml: gateway gw-cs-0001, site "
                               "sz-sewer-north-12, 2 bus(es), 3 device(s), 15 channels, "
                               "18 alarm limits, config hash ")


def test_the_cli_speaks_the_language_of_the_locale_or_of_the_config(tmp_path: Path) -> None:
    result = edge_agent("config", "validate", "config/confined_space.toml", lang="zh_CN.UTF-8")
    assert result.stdout.startswith("通过 config/confined_space.toml：网关 gw-cs-0001")
    site = tmp_path / "site.toml"  # the site's language goes over an English locale
    site.write_text('language = "zh_CN"\n' + (REPO / "config" / "confined_space.toml")
                    .read_text())
    site.chmod(0o640)
    result = edge_agent("config", "validate", str(site), lang="en_GB.UTF-8")
    assert 0 == result.returncode, result.stderr
    assert result.stdout.startswith(f"通过 {site}：网关 gw-cs-0001")


def test_cli_validate_lists_every_problem_and_exits_1() -> None:
    """The issue's case: a typo'd key, a wrong type and a missing profile, all at once."""
    case = "tests/cases/typo_type_and_missing_profile/site.toml"
    result = edge_agent("config", "validate", case)
    assert 1 == result.returncode
    assert "" == result.stdout
    lines = result.stderr.splitlines()
    assert f"{case}: invalid config, 3 problems:" == lines[0]
    assert lines[1].startswith('  - devices[0].pol_interval_s (line 16): unknown key')
    assert lines[2].startswith("  - devices[1].unit_id (line 21): should be a valid integer")
    assert lines[3].startswith('  - devices[2].profile (line 28): no profile "acme_9000"')
    assert "Traceback" not in result.stderr


def test_cli_run_with_a_missing_config_says_so_without_a_traceback(tmp_path: Path) -> None:
    result = edge_agent("run", "--config", str(tmp_path / "site.toml"))
    assert 1 == result.returncode
    assert [f"{tmp_path / 'site.toml'}: invalid config, 1 problem:", "  - file not found"
            ] == result.stderr.splitlines()
    assert "Traceback" not in result.stderr


def test_cli_run_with_an_unwritable_buffer_says_what_to_check(tmp_path: Path) -> None:
    source = (REPO / "config" / "plating_shop.toml").read_text()
    config = tmp_path / "site.toml"
    config.write_text(source.replace('"/var/lib/edge-agent/buffer.db"',
                                     '"/proc/edge-agent/buffer.db"'))
    result = edge_agent("run", "--config", str(config))
    assert 1 == result.returncode
    assert "cannot open the buffer /proc/edge-agent/buffer.db" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_demo_shows_alarms_and_delivers_every_sample() -> None:
    """The README's demo, short: live values, an injected hazard, a complete summary."""
    result = edge_agent("demo", "--seconds", "12", timeout=90)
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "confined_space: alarm raised bottom.h2s" in result.stdout
    # the platform's ack-alarm command reached the agent and came back as an event
    assert "confined_space: alarm acknowledged bottom.h2s:above:1 by platform operator" in (
        result.stdout)
    assert "confined_space: alarm handled bottom.h2s:above:1 by safety officer" in (
        result.stdout)
    assert "every polled sample reached the broker; the buffers are empty." in result.stdout
    assert "Traceback" not in result.stderr
