"""Site config loading: every error names the file, the key path, the line and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent._shipped import shipped_dir
from edge_agent.config import FileError, load_config
from tests.support import REPO

CASES = sorted((REPO / "tests" / "cases").glob("*/site.toml"))


@pytest.mark.parametrize("site", CASES, ids=[p.parent.name for p in CASES])
def test_config_case_reports_each_expected_error(site: Path) -> None:
    """Each line of error.txt starts one reported problem, and nothing else is reported."""
    expected = (site.parent / "error.txt").read_text().splitlines()
    with pytest.raises(FileError) as caught:
        load_config(site)
    problems = caught.value.problems
    assert len(expected) == len(problems), "\n".join(problems)
    for want, got in zip(expected, problems, strict=True):
        assert got.startswith(want), f"expected {want!r}, got {got!r}"
    assert str(site) in str(caught.value)


@pytest.mark.parametrize("site", sorted(shipped_dir("config").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_config_examples_validate(site: Path) -> None:
    """The example configs shipped in config/ (and the installer's skeleton) stay valid,
    with alarm limits in force (their own, or the defaults)."""
    loaded = load_config(site)
    assert loaded.site.devices
    assert any(rules.limits for rules in loaded.channels())


def test_config_hash_ignores_comments_and_order(tmp_path: Path) -> None:
    """Comments and key order do not change the hash; a changed limit does."""
    original = (shipped_dir("config") / "confined_space.toml").read_text()
    reordered = tmp_path / "a.toml"
    lines = original.splitlines()
    gateway = next(i for i, line in enumerate(lines) if line.startswith("gateway_id"))
    site = next(i for i, line in enumerate(lines) if line.startswith("site_id"))
    lines[gateway], lines[site] = lines[site], lines[gateway]
    reordered.write_text("# a comment\n" + "\n".join(lines))
    changed = tmp_path / "b.toml"
    changed.write_text(original.replace("above = 7.1,", "above = 7.0,", 1))
    base = load_config(shipped_dir("config") / "confined_space.toml").hash
    assert base == load_config(reordered).hash
    assert base != load_config(changed).hash


def test_config_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    source = (shipped_dir("config") / "plating_shop.toml").read_text()
    path = tmp_path / "site.toml"
    path.write_text(source.replace('"/var/lib/edge-agent/buffer.db"', '"state/buffer.db"'))
    assert tmp_path / "state" / "buffer.db" == load_config(path).site.buffer.path


def test_config_defaults_are_secure() -> None:
    """TLS with verification is on unless the config turns it off."""
    mqtt = load_config(shipped_dir("config") / "lithium_warehouse.toml").site.mqtt
    assert ("on", 8883) == (mqtt.tls, mqtt.effective_port)


def test_broker_endpoints_in_order_with_the_shared_port() -> None:
    from edge_agent.config import Mqtt

    cluster = Mqtt(endpoints=[{"host": "mq1"}, {"host": "mq2", "port": 8884}], port=8885)
    assert [("mq1", 8885), ("mq2", 8884)] == cluster.brokers
    assert [("broker", 8883)] == Mqtt(host="broker").brokers


def test_config_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileError) as caught:
        load_config(tmp_path / "nope.toml")
    assert [f"{tmp_path / 'nope.toml'}: file not found"] == caught.value.report().splitlines()


def site_with(tmp_path: Path, channels: str, scheme: str | None = None) -> Path:
    defaults = f'[alarm_defaults]\nscheme = "{scheme}"\n' if scheme else ""
    path = tmp_path / "site.toml"
    path.write_text(f'''gateway_id = "gw-1"
site_id = "site-1"
{defaults}
[[buses]]
name = "field"
type = "modbus-tcp"
host = "10.0.0.5"

[[devices]]
name = "gas1"
bus = "field"
unit_id = 1
profile = "generic_4gas"
{channels}
[mqtt]
host = "127.0.0.1"
tls = "off"
''')
    return path


def limits_of(path: Path) -> dict[str, list[tuple]]:
    return {r.channel: [(lim.level, lim.direction, lim.setpoint) for lim in r.limits]
            for r in load_config(path).channels() if r.limits}


def test_config_channels_without_limits_get_the_gas_defaults(tmp_path: Path) -> None:
    """GB/T 50493-2019 by default: O2 19.5/23.5 %VOL, EX 25/50 %LEL, toxics at 100 % and
    200 % of the GBZ 2.1 OEL converted to ppm at 20 °C (H2S MAC 10 mg/m3 = 7.06 ppm)."""
    assert {"gas1.o2": [(1, "below", 19.5), (1, "above", 23.5)],
            "gas1.co": [(1, "above", 17.17), (2, "above", 34.34)],
            "gas1.h2s": [(1, "above", 7.06), (2, "above", 14.11)],
            "gas1.lel": [(1, "above", 25.0), (2, "above", 50.0)]} == limits_of(
        site_with(tmp_path, ""))


def test_config_own_limits_replace_defaults_and_empty_turns_them_off(tmp_path: Path) -> None:
    channels = ('[devices.channels.co]\nlimits = [{ level = 1, above = 30 }]\n'
                '[devices.channels.h2s]\nlimits = []\n')
    limits = limits_of(site_with(tmp_path, channels))
    assert [(1, "above", 30.0)] == limits["gas1.co"]
    assert "gas1.h2s" not in limits


def test_config_gbzt223_scheme_and_none(tmp_path: Path) -> None:
    """GBZ/T 223-2009: 预报 ½ and 警报 1 × the MAC or PC-STEL (CO STEL 30 mg/m3 = 25.76 ppm)."""
    limits = limits_of(site_with(tmp_path, "", scheme="gbzt223"))
    assert [(1, "above", 12.88), (2, "above", 25.76)] == limits["gas1.co"]
    assert [(1, "above", 3.53), (2, "above", 7.06)] == limits["gas1.h2s"]
    assert {} == limits_of(site_with(tmp_path, "", scheme="none"))
