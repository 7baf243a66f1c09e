"""The technicians' PIN: hashed with scrypt for the config, checked in constant time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import FileError, Web, load_config
from edge_agent.web.pin import PATTERN, hash_pin, verify

REPO = Path(__file__).resolve().parents[2]


def test_a_hash_verifies_its_pin_only() -> None:
    stored = hash_pin("4711")
    assert re.fullmatch(PATTERN, stored)
    assert verify("4711", stored)
    assert not verify("4712", stored)
    assert not verify("", stored)
    assert not verify("4711", stored.replace("scrypt:", "md5:"))
    assert hash_pin("4711") != stored  # salted


def test_a_short_pin_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        hash_pin("123")


def test_the_cli_prints_a_line_the_config_accepts() -> None:
    done = subprocess.run([sys.executable, "-m", "edge_agent", "web", "hash-pin", "--stdin"],
                          input="2468\n", capture_output=True, text=True, check=True)
    line = done.stdout.strip()
    assert line.startswith('pin_hash = "scrypt:')
    assert "2468" not in done.stdout + done.stderr
    assert verify("2468", Web(pin_hash=line.split('"')[1]).pin_hash)


def test_the_config_refuses_a_pin_in_place_of_its_hash_without_repeating_it(
        tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text((REPO / "config" / "skeleton.toml").read_text()
                    + '\n[web]\nenabled = true\npin_hash = "246813"\n')
    with pytest.raises(FileError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert "web.pin_hash (line" in problem
    assert "is not a PIN hash" in problem
    assert "246813" not in problem
