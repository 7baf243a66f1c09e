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
    """The example configs shipped in config/ stay valid."""
    loaded = load_config(site)
    assert loaded.site.devices
    assert any(d.channels for d in loaded.site.devices)


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


def test_config_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileError) as caught:
        load_config(tmp_path / "nope.toml")
    assert [f"{tmp_path / 'nope.toml'}: file not found"] == caught.value.report().splitlines()
