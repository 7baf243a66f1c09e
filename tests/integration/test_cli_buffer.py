"""``edge-agent buffer stats|export|purge`` on a real buffer file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.buffer import Buffer
from edge_agent.records import Event, Sample
from tests.integration.test_cli import edge_agent
from tests.support import REPO


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The plating-shop example with a buffer holding one alarm and three samples."""
    path = tmp_path / "site.toml"
    path.write_text((REPO / "config" / "plating_shop.toml").read_text().replace(
        "/var/lib/edge-agent/buffer.db", str(tmp_path / "buffer.db")))
    buffer = Buffer(tmp_path / "buffer.db")
    buffer.commit_cycle([Sample("gas1.co", ts, 2.0, "ppm") for ts in (1000, 2000, 3000)],
                        [Event(1000, "alarm", "raised", "a1", "gas1.co:above:1", {})])
    buffer.close()
    return path


def test_buffer_stats_json(config: Path) -> None:
    result = edge_agent("buffer", "stats", "-c", str(config), "--json")
    assert 0 == result.returncode, result.stderr
    figures = json.loads(result.stdout)
    assert ({"rows": 1, "oldest_ms": 1000, "newest_ms": 1000},
            {"rows": 3, "oldest_ms": 1000, "newest_ms": 3000},
            4, 0, 0) == (figures["events"], figures["samples"], figures["last_seq"],
                         figures["evicted"], figures["expired"])


def test_buffer_export_writes_json_lines(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    result = edge_agent("buffer", "export", "-c", str(config), "-o", str(out))
    assert 0 == result.returncode, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [("event", 1), ("sample", 2), ("sample", 3), ("sample", 4)] == [
        (r["type"], r["seq"]) for r in rows]
    assert "4 rows" in result.stderr


def test_buffer_purge_asks_then_deletes_only_what_was_asked(config: Path) -> None:
    refused = edge_agent("buffer", "purge", "-c", str(config), "--table", "all", stdin="n\n")
    assert (1, "nothing deleted") == (refused.returncode, refused.stderr.strip())
    assert "Delete all undelivered samples and events" in refused.stdout
    result = edge_agent("buffer", "purge", "-c", str(config), "--before", "1970-01-02",
                        "--yes")
    assert 0 == result.returncode, result.stderr
    assert "deleted 3 samples" == result.stdout.strip()
    figures = json.loads(edge_agent("buffer", "stats", "-c", str(config), "--json").stdout)
    assert (1, 0) == (figures["events"]["rows"], figures["samples"]["rows"])


def test_buffer_commands_without_a_buffer_say_what_to_check(tmp_path: Path) -> None:
    result = edge_agent("buffer", "stats", "-c", str(REPO / "config" / "plating_shop.toml"))
    assert 1 == result.returncode
    assert result.stderr.startswith("error: no buffer at /var/lib/edge-agent/buffer.db")
    assert "Traceback" not in result.stderr
