"""The SQLite buffer: one transaction per cycle, durable numbering, quota, deletion."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge_agent.buffer import SCHEMA_VERSION, Buffer, BufferUnavailable, Trimmed, export, stats
from edge_agent.records import ActiveAlarm, Event, Quality, Sample


def samples(n: int, ts: int = 1000) -> list[Sample]:
    return [Sample(f"gas1.ch{i % 7}", ts, float(i), "ppm") for i in range(n)]


def alarm(key: str = "gas1.co:above:1", transition: str = "raised") -> Event:
    return Event(1000, "alarm", transition, "a1", key, {"value": 30.0})


def test_buffer_cycle_is_numbered_events_first(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db")
    assert 4 == buffer.commit_cycle(samples(3), [alarm()])
    assert [1] == [e.seq for e in buffer.events_after(0, 10)]
    rows = buffer.samples_after(0, 10)
    assert [2, 3, 4] == [r.seq for r in rows]
    assert ("gas1.ch0", "ppm", 0.0, Quality.GOOD) == (rows[0].channel, rows[0].unit,
                                                      rows[0].value, rows[0].quality)
    assert {"id": "a1", "ts": 1000, "class": "alarm", "transition": "raised",
            "key": "gas1.co:above:1", "value": 30.0} == buffer.events_after(0, 1)[0].body


def test_buffer_numbering_survives_reopen_and_deletion(tmp_path: Path) -> None:
    """Sequence numbers are never reused, even after rows were delivered and deleted."""
    buffer = Buffer(tmp_path / "b.db")
    buffer.commit_cycle(samples(5), [])
    buffer.delete("samples", [(1, 5)])
    buffer.close()
    reopened = Buffer(tmp_path / "b.db")
    assert 6 == reopened.commit_cycle(samples(1), [])
    assert {"events": 0, "samples": 1} == reopened.depth()


def test_buffer_failed_cycle_leaves_nothing(tmp_path: Path) -> None:
    """A cycle that fails part-way is rolled back whole, numbering included."""
    buffer = Buffer(tmp_path / "b.db")
    bad = [*samples(3), Sample("gas1.x", None, 1.0, "ppm")]  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        buffer.commit_cycle(bad, [alarm()])
    assert {"events": 0, "samples": 0} == buffer.depth()
    assert 0 == buffer.last_seq()
    assert 2 == buffer.commit_cycle(samples(1), [alarm()])
    assert "gas1.ch0" == buffer.samples_after(0, 1)[0].channel


def test_buffer_commit_is_visible_whole_to_another_connection(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db")
    reader = Buffer(tmp_path / "b.db")
    buffer.commit_cycle(samples(50), [alarm()])
    assert {"events": 1, "samples": 50} == reader.depth()


def test_buffer_active_alarms_follow_the_cycle(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db")
    raised = ActiveAlarm("gas1.co:above:1", "a1", "alarm", 1000)
    buffer.commit_cycle([], [alarm()], raised=[raised])
    assert {raised.key: raised} == Buffer(tmp_path / "b.db").active_alarms()
    buffer.commit_cycle([], [alarm(transition="returned_to_normal")], ended=[raised.key])
    assert {} == buffer.active_alarms()


def test_buffer_quota_evicts_oldest_telemetry_never_events(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db", max_bytes=2**20)
    for cycle in range(150):
        buffer.commit_cycle(samples(500, ts=cycle), [alarm(key=f"k{cycle}")])
    evicted = buffer.trim(now_ms=200).evicted
    assert evicted > 0
    assert buffer.used_bytes() <= 2**20
    assert {"events": 150, "samples": 150 * 500 - evicted} == buffer.depth()
    remaining = buffer.samples_after(0, 1)[0].seq
    assert remaining > evicted  # the oldest went first
    assert (evicted, 0) == (stats(buffer.path)["evicted"], stats(buffer.path)["expired"])


def test_buffer_retention_drops_old_telemetry_and_keeps_events(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db", retention_s=10)
    buffer.commit_cycle(samples(1500, ts=1_000), [alarm()])
    buffer.commit_cycle(samples(5, ts=20_000), [])
    assert Trimmed(evicted=0, expired=1500) == buffer.trim(now_ms=25_000)
    assert {"events": 1, "samples": 5} == buffer.depth()
    assert 0 == buffer.trim(now_ms=25_000).expired
    assert 1500 == stats(buffer.path)["expired"]


def test_buffer_purge_all_or_older(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db")
    buffer.commit_cycle(samples(3, ts=1_000), [alarm()])
    buffer.commit_cycle(samples(2, ts=5_000), [])
    assert 3 == buffer.purge("samples", before_ms=5_000)
    assert 1 == buffer.purge("events")
    assert {"events": 0, "samples": 2} == buffer.depth()


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE channels (id INTEGER PRIMARY KEY, name TEXT NOT NULL, unit TEXT NOT NULL);
CREATE UNIQUE INDEX idx_channels_name_unit ON channels (name, unit);
CREATE TABLE samples (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL,
                      channel INTEGER NOT NULL, value FLOAT, quality INTEGER NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE active_alarms (key TEXT PRIMARY KEY, alarm_id TEXT, cls TEXT, raised_ms INTEGER);
CREATE TABLE core_state (kernel TEXT PRIMARY KEY, keys TEXT, arrays BLOB, saved_ms INTEGER);
INSERT INTO meta VALUES ('schema_version', 1), ('next_seq', 3), ('epoch', 'e1');
INSERT INTO channels VALUES (1, 'gas1.co', 'ppm');
INSERT INTO samples VALUES (2, 1000, 1, 5.0, 0);
INSERT INTO events VALUES (1, 1000, '{"id": "a1", "class": "alarm"}');
"""


def test_buffer_of_version_1_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    """A buffer written by the first release (schema 1) opens in this one, rows intact."""
    path = tmp_path / "b.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SCHEMA)
    buffer = Buffer(path)
    assert (SCHEMA_VERSION, "e1", 2) == (stats(path)["schema_version"], buffer.epoch,
                                         buffer.last_seq())
    assert [(2, "gas1.co", 5.0)] == [(r.seq, r.channel, r.value)
                                     for r in buffer.samples_after(0, 10)]
    assert [1] == [e.seq for e in buffer.events_after(0, 10)]
    assert 3 == buffer.commit_cycle(samples(1), [])
    fresh = Buffer(tmp_path / "fresh.db")  # made at version 1 and migrated: same schema
    schema = "SELECT type, tbl_name, name FROM sqlite_master ORDER BY name"
    assert list(fresh.db.execute(schema)) == list(buffer.db.execute(schema))


def test_buffer_from_a_newer_agent_is_refused_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    newer = Buffer(path)
    newer.db.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    newer.close()  # the last connection: its WAL is checkpointed into the file now
    before = path.read_bytes()
    with pytest.raises(BufferUnavailable, match="schema version 99 was written by a newer"):
        Buffer(path)
    assert before == path.read_bytes()


def test_corrupt_buffer_is_moved_aside_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    path.write_bytes(b"this is not an SQLite file" * 100)
    buffer = Buffer(path)
    assert buffer.moved_aside is not None
    assert buffer.moved_aside.read_bytes().startswith(b"this is not an SQLite file")
    assert 1 == buffer.commit_cycle(samples(1), [])


def test_export_gives_events_then_samples(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db")
    buffer.commit_cycle(samples(2), [alarm()])
    rows = list(export(buffer.path))
    assert ["event", "sample", "sample"] == [r["type"] for r in rows]
    assert {"type": "sample", "seq": 2, "ts": 1000, "ch": "gas1.ch0", "v": 0.0, "u": "ppm",
            "q": "good"} == rows[1]


def test_buffer_delete_refuses_other_tables(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no table 'meta'"):
        Buffer(tmp_path / "b.db").delete("meta", [(1, 1)])


def test_buffer_core_state_round_trip(tmp_path: Path) -> None:
    """The alarm core's arrays come back exactly, saved with the cycle that changed them."""
    import numpy as np

    buffer = Buffer(tmp_path / "b.db")
    state = {"threshold": (["gas1.co:above:1"], {"since": np.array([12.5]),
                                                 "active": np.array([True])})}
    buffer.commit_cycle([], [alarm()], core_state=state)
    keys, arrays = Buffer(tmp_path / "b.db").core_state()["threshold"]
    assert ["gas1.co:above:1"] == keys
    assert 12.5 == arrays["since"][0]
    assert arrays["active"].dtype == np.bool_


def test_shift_times_moves_rows_of_a_range_and_event_bodies(tmp_path: Path) -> None:
    """An NTP step corrects the times of rows taken before it, in the columns and in
    the events' published bodies alike; rows outside the range stay."""
    buffer = Buffer(tmp_path / "b.db")
    buffer.commit_cycle(samples(2, ts=1_000), [alarm()])  # seq 1 (event), 2, 3
    buffer.commit_cycle(samples(1, ts=9_000), [])  # seq 4: after the step
    assert 3 == buffer.shift_times(1, 3, 7_200_000)
    assert [7_201_000, 7_201_000, 9_000] == [r.ts_ms for r in buffer.samples_after(0, 10)]
    assert 7_201_000 == buffer.events_after(0, 1)[0].body["ts"]
