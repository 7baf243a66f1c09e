"""The local store of samples and events: one SQLite file in WAL mode.

Everything a poll cycle produced is committed in one transaction, together with
the sequence counter and the active alarms, so a kill -9 or a power cut loses
nothing committed and never leaves half a cycle. Rows leave only when the uplink
has the broker's PUBACK for them. The buffer knows nothing of MQTT.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import sqlite_utils
import structlog

from edge_agent.errors import StartupError
from edge_agent.records import ActiveAlarm, CoreState, Event, Quality, Sample
from edge_agent.trend import Bucket

__all__ = ["SCHEMA_VERSION", "Buffer", "BufferUnavailable", "EventRow", "SampleRow", "Trimmed",
           "export", "stats", "trend"]

log = structlog.get_logger(__name__)
_QUALITIES = tuple(Quality)  # indexed by the stored integer (0, 1, ...): faster than Quality(q)


class SampleRow(NamedTuple):  # a tuple: the uplink makes hundreds of thousands in a drain
    seq: int
    ts_ms: int
    channel: str
    unit: str
    value: float | None
    quality: Quality


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Trimmed:
    """Telemetry dropped undelivered by one ``trim``: over the quota, or past retention."""

    evicted: int = 0
    expired: int = 0


def _pack(arrays: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)  # numpy's own format: no pickle, dtypes and shapes kept
    return out.getvalue()


def _unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


class BufferUnavailable(StartupError):
    """The buffer file cannot be opened or created."""


class Buffer:
    """One connection to the buffer file; use one instance per thread."""

    def __init__(self, path: Path, max_bytes: int = 256 * 2**20,
                 retention_s: float | None = None, sync: str = "FULL") -> None:
        self.path = Path(path)
        self._sync = sync
        self.max_bytes = max_bytes
        self.retention_s = retention_s
        self.moved_aside: Path | None = None  # where a corrupt file went, if one was found
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._open()
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    raise  # locked, read-only, no space: the file is not the problem
                self._move_aside(exc)
                self._open()
        except (OSError, sqlite3.Error) as exc:
            raise BufferUnavailable(f"cannot open the buffer {self.path}: {exc}") from exc
        self._channel_ids: dict[tuple[str, str], int] = {}

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        try:
            # WAL lets the uplink read while the poller writes; FULL makes every
            # committed cycle survive a power cut, at one fsync per cycle.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={self._sync}")
            created = self._create()
            migrate(self.db, self._writing, quiet=created)
        except BaseException:
            conn.close()
            raise

    def _move_aside(self, exc: sqlite3.DatabaseError) -> None:
        """Keep a corrupt file for inspection and start a new one (PEER_LESSONS 9)."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        self.moved_aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.rename(f"{self.moved_aside}{suffix}")
        log.error("buffer_corrupt_moved_aside", path=str(self.path),
                  moved_to=str(self.moved_aside), error=str(exc))

    def _create(self) -> bool:
        """Make the tables of schema version 1 in a new file; False if the file had them."""
        db = self.db
        if "meta" in db.table_names():
            return False  # an existing file: migrate() brings it up to date
        with self._writing():
            db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
            db["channels"].create({"id": int, "name": str, "unit": str}, pk="id",
                                  not_null={"name", "unit"}, if_not_exists=True)
            db["channels"].create_index(["name", "unit"], unique=True, if_not_exists=True)
            db["samples"].create(
                {"seq": int, "ts_ms": int, "channel": int, "value": float, "quality": int},
                pk="seq", not_null={"ts_ms", "channel", "quality"}, if_not_exists=True)
            db["events"].create({"seq": int, "ts_ms": int, "body": str}, pk="seq",
                                not_null={"ts_ms", "body"}, if_not_exists=True)
            db["active_alarms"].create(
                {"key": str, "alarm_id": str, "cls": str, "raised_ms": int}, pk="key",
                if_not_exists=True)
            # The alarm core's state arrays (exposure windows, timers), so a restart
            # does not reset them; rows of each array are keyed (by limit or channel).
            db["core_state"].create({"kernel": str, "keys": str, "arrays": bytes,
                                     "saved_ms": int}, pk="kernel", if_not_exists=True)
            # A new buffer file starts a new epoch: sequence numbers restart at 1, and
            # the platform de-duplicates by (gateway, epoch, seq), so numbers reused by
            # a recreated buffer are never mistaken for duplicates.
            db.execute("INSERT INTO meta VALUES ('schema_version', 1), ('next_seq', 1), "
                       "('epoch', ?)", [uuid.uuid4().hex])
        return True

    # --- writing (the daemon's poll path) ----------------------------------------

    def commit_cycle(self, samples: Sequence[Sample], events: Sequence[Event],
                     raised: Iterable[ActiveAlarm] = (), ended: Iterable[str] = (),
                     core_state: CoreState | None = None,
                     states: Mapping[str, dict[str, Any]] | None = None,
                     trend: Sequence[Bucket] = (), trend_after_ms: int = 0) -> int:
        """Store one cycle's samples and events in one transaction; return the last seq.

        ``raised`` and ``ended`` update the active alarms, and ``core_state`` and
        ``states`` (name -> document, e.g. entry sessions, alarm lifecycle) replace the
        saved state of the alarm core and of the others given, in the same
        transaction, so the state on disk always matches the events. ``trend``
        buckets are added, and those before ``trend_after_ms`` dropped.
        """
        try:
            return self._commit_cycle(samples, events, raised, ended, core_state or {},
                                      states or {}, trend, trend_after_ms)
        except BaseException:
            self._channel_ids.clear()  # ids cached inside a rolled-back transaction
            raise

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction, taking the write lock at its start.

        A plain BEGIN reads first and upgrades later; when the uplink's
        connection wrote in between, the upgrade fails at once with "database
        is locked" instead of waiting for the busy timeout.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.conn.in_transaction:
                self.db.conn.rollback()
            raise

    def _commit_cycle(self, samples: Sequence[Sample], events: Sequence[Event],
                      raised: Iterable[ActiveAlarm], ended: Iterable[str],
                      core_state: CoreState, states: Mapping[str, dict[str, Any]],
                      trend: Sequence[Bucket], trend_after_ms: int) -> int:
        with self._writing():
            if trend:
                # A bucket stored at a stop and filled on after the restart: merged.
                self.db.conn.executemany(
                    "INSERT INTO trend VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (channel, bucket_ms) DO UPDATE SET "
                    "lo = min(coalesce(excluded.lo, lo), coalesce(lo, excluded.lo)), "
                    "hi = max(coalesce(excluded.hi, hi), coalesce(hi, excluded.hi)), "
                    "last = coalesce(excluded.last, last), level = max(level, excluded.level)",
                    [(self._channel_id(b.channel, b.unit), b.bucket_ms, b.lo, b.hi, b.last,
                      b.level) for b in trend])
                self.db.execute("DELETE FROM trend WHERE bucket_ms < ?", [trend_after_ms])
            self.db.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                (f"state:{name}", json.dumps(doc, separators=(",", ":")))
                for name, doc in states.items()])
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO core_state VALUES (?, ?, ?, ?)",
                [(kernel, json.dumps(keys), _pack(arrays), int(time.time() * 1000))
                 for kernel, (keys, arrays) in core_state.items()])
            seq = self._meta("next_seq")
            if events:
                self.db.conn.executemany(
                    "INSERT INTO events(seq, ts_ms, body) VALUES (?, ?, ?)",
                    [(seq + i, e.ts_ms, json.dumps(e.body(), separators=(",", ":")))
                     for i, e in enumerate(events)])
                seq += len(events)
            if samples:
                self.db.conn.executemany(
                    "INSERT INTO samples(seq, ts_ms, channel, value, quality) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(seq + i, s.ts_ms, self._channel_id(s.channel, s.unit), s.value,
                      int(s.quality)) for i, s in enumerate(samples)])
                seq += len(samples)
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO active_alarms VALUES (?, ?, ?, ?)",
                [(a.key, a.alarm_id, a.cls, a.raised_ms) for a in raised])
            self.db.conn.executemany("DELETE FROM active_alarms WHERE key = ?",
                                     [(k,) for k in ended])
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", [seq])
        return seq - 1

    def _meta(self, key: str) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()[0])

    @property
    def epoch(self) -> str:
        """Random id of this buffer file, made when it was created."""
        return str(self.db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])

    def _channel_id(self, name: str, unit: str) -> int:
        key = (name, unit)
        if key not in self._channel_ids:
            self.db.execute("INSERT OR IGNORE INTO channels(name, unit) VALUES (?, ?)", key)
            self._channel_ids[key] = self.db.execute(
                "SELECT id FROM channels WHERE name = ? AND unit = ?", key).fetchone()[0]
        return self._channel_ids[key]

    def trim(self, now_ms: int) -> Trimmed:
        """Drop undelivered telemetry past retention, then the oldest while over quota.

        Events (alarms and faults) are never dropped to make room for telemetry.
        The counts are kept in the file, so `buffer stats` shows every loss.
        """
        expired = 0
        if self.retention_s is not None:
            cutoff = now_ms - int(self.retention_s * 1000)
            while gone := self._drop("SELECT seq FROM samples WHERE ts_ms < ? LIMIT 1000",
                                     [cutoff]):
                expired += gone
        evicted = 0
        while self.used_bytes() > self.max_bytes:
            if not (gone := self._drop("SELECT seq FROM samples ORDER BY seq LIMIT 1000", [])):
                break
            evicted += gone
        if evicted or expired:
            with self._writing():
                self.db.execute("INSERT INTO meta VALUES ('evicted', ?), ('expired', ?) "
                                "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                                [evicted, expired])
        return Trimmed(evicted, expired)

    def _drop(self, select: str, params: list[Any]) -> int:
        """Delete the samples ``select`` names in one short transaction; return the count."""
        with self._writing():
            return int(self.db.execute(f"DELETE FROM samples WHERE seq IN ({select})",
                                       params).rowcount)

    def used_bytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    # --- reading (the uplink, the CLI, restarts) ----------------------------------

    def active_alarms(self) -> dict[str, ActiveAlarm]:
        rows = self.db.execute("SELECT key, alarm_id, cls, raised_ms FROM active_alarms")
        return {row[0]: ActiveAlarm(*row) for row in rows}

    def state(self, name: str) -> dict[str, Any]:
        """A state document as last saved with ``commit_cycle``: {} before the first."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [f"state:{name}"]
                              ).fetchone()
        return json.loads(row[0]) if row else {}

    def core_state(self) -> CoreState:
        """The alarm core's state as last saved: kernel -> (keys, arrays)."""
        rows = self.db.execute("SELECT kernel, keys, arrays FROM core_state")
        return {kernel: (json.loads(keys), _unpack(blob)) for kernel, keys, blob in rows}

    def last_seq(self) -> int:
        return self._meta("next_seq") - 1

    def events_after(self, seq: int, limit: int) -> list[EventRow]:
        rows = self.db.execute(
            "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", [seq, limit])
        return [EventRow(s, json.loads(body)) for s, body in rows]

    def samples_after(self, seq: int, limit: int) -> list[SampleRow]:
        rows = self.db.execute(
            "SELECT s.seq, s.ts_ms, c.name, c.unit, s.value, s.quality FROM samples s "
            "JOIN channels c ON c.id = s.channel WHERE s.seq > ? ORDER BY s.seq LIMIT ?",
            [seq, limit])
        return [SampleRow(s, ts, name, unit, value, _QUALITIES[q])
                for s, ts, name, unit, value, q in rows]

    def delete(self, table: str, ranges: Iterable[tuple[int, int]]) -> None:
        """Remove delivered rows of ``events`` or ``samples``: each (first, last) seq range."""
        if table not in ("events", "samples"):
            raise ValueError(f"no table {table!r} to delete from")
        with self._writing():
            self.db.conn.executemany(f"DELETE FROM {table} WHERE seq BETWEEN ? AND ?", ranges)

    def oldest_ms(self) -> int | None:
        """Time of the oldest row waiting for delivery (samples by their time index)."""
        row = self.db.execute("SELECT min(t) FROM (SELECT min(ts_ms) AS t FROM samples "
                              "UNION ALL SELECT min(ts_ms) FROM events)").fetchone()
        return row[0]

    def depth(self) -> dict[str, int]:
        """Rows waiting for delivery, per table."""
        return {t: self.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("events", "samples")}

    def shift_times(self, first_seq: int, last_seq: int, delta_ms: int) -> int:
        """Move the times of the rows ``first_seq`` .. ``last_seq`` still here by
        ``delta_ms`` (a clock corrected by NTP); return how many rows moved.
        """
        with self._writing():
            moved = self.db.execute(
                "UPDATE samples SET ts_ms = ts_ms + ? WHERE seq BETWEEN ? AND ?",
                [delta_ms, first_seq, last_seq]).rowcount
            moved += self.db.execute(
                "UPDATE events SET ts_ms = ts_ms + ?1, body = json_set(body, '$.ts', "
                "json_extract(body, '$.ts') + ?1) WHERE seq BETWEEN ?2 AND ?3",
                [delta_ms, first_seq, last_seq]).rowcount
        return int(moved)

    def purge(self, table: str, before_ms: int | None = None) -> int:
        """A technician's deletion of undelivered rows (all, or older than ``before_ms``)."""
        if table not in ("events", "samples"):
            raise ValueError(f"no table {table!r} to purge")
        where, params = ("WHERE ts_ms < ?", [before_ms]) if before_ms is not None else ("", [])
        with self._writing():
            return int(self.db.execute(f"DELETE FROM {table} {where}", params).rowcount)

    def close(self) -> None:
        self.db.close()


# --- schema versions -------------------------------------------------------------
# Version 1 is what _create makes. Each migration takes a file from version n - 1 to
# n in one transaction, so an agent upgrade keeps what the old version buffered.

def _v2_sample_time_index(db: sqlite_utils.Database) -> None:
    db["samples"].create_index(["ts_ms"], if_not_exists=True)  # retention deletes by time


def _v3_trend(db: sqlite_utils.Database) -> None:
    """The last hour of each channel in 10-s buckets (edge_agent/trend.py)."""
    db.execute("CREATE TABLE IF NOT EXISTS trend (channel INTEGER NOT NULL, "
               "bucket_ms INTEGER NOT NULL, lo REAL, hi REAL, last REAL, "
               "level INTEGER NOT NULL, PRIMARY KEY (channel, bucket_ms)) WITHOUT ROWID")


MIGRATIONS = (_v2_sample_time_index, _v3_trend)
SCHEMA_VERSION = 1 + len(MIGRATIONS)


def migrate(db: sqlite_utils.Database,
            writing: Callable[[], contextlib.AbstractContextManager[None]],
            quiet: bool = False) -> None:
    version = int(db.execute("SELECT value FROM meta WHERE key = 'schema_version'")
                  .fetchone()[0])
    if version > SCHEMA_VERSION:
        raise BufferUnavailable(
            f"schema version {version} was written by a newer edge-agent (this one knows "
            f"up to {SCHEMA_VERSION}); upgrade the agent, or move the file aside")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        with writing():
            MIGRATIONS[target - 2](db)
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [target])
        if not quiet:
            log.info("buffer_migrated", schema_version=target)


# --- reading from outside the agent ----------------------------------------------

def _read_only(path: Path) -> contextlib.closing[sqlite3.Connection]:
    """A connection that cannot write: safe next to a running agent."""
    return contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10))


def stats(path: Path) -> dict[str, Any]:
    """What a buffer file holds, read without writing (the agent may be running)."""
    with _read_only(path) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        result: dict[str, Any] = {
            "path": str(path), "schema_version": int(meta["schema_version"]),
            "epoch": meta["epoch"], "last_seq": int(meta["next_seq"]) - 1,
            "evicted": int(meta.get("evicted", 0)), "expired": int(meta.get("expired", 0)),
            "bytes": sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal")
                         if Path(f"{path}{s}").exists())}
        for table in ("events", "samples"):
            count, oldest, newest = conn.execute(
                f"SELECT count(*), min(ts_ms), max(ts_ms) FROM {table}").fetchone()
            result[table] = {"rows": count, "oldest_ms": oldest, "newest_ms": newest}
        result["active_alarms"] = conn.execute("SELECT count(*) FROM active_alarms"
                                               ).fetchone()[0]
    return result


def trend(path: Path, channel: str, since_ms: int) -> list[tuple[Any, ...]]:
    """A channel's trend buckets from ``since_ms`` on: (start, low, high, last, alarm level)."""
    with _read_only(path) as conn:
        return conn.execute(
            "SELECT t.bucket_ms, t.lo, t.hi, t.last, t.level FROM trend t JOIN channels c "
            "ON c.id = t.channel WHERE c.name = ? AND t.bucket_ms >= ? ORDER BY t.bucket_ms",
            [channel, since_ms]).fetchall()


def export(path: Path) -> Iterator[dict[str, Any]]:
    """Every undelivered row, events first, as the dicts the uplink would publish."""
    with _read_only(path) as conn:
        for seq, body in conn.execute("SELECT seq, body FROM events ORDER BY seq"):
            yield {"type": "event", "seq": seq, **json.loads(body)}
        for seq, ts, name, unit, value, q in conn.execute(
                "SELECT s.seq, s.ts_ms, c.name, c.unit, s.value, s.quality FROM samples s "
                "JOIN channels c ON c.id = s.channel ORDER BY s.seq"):
            yield {"type": "sample", "seq": seq, "ts": ts, "ch": name, "v": value, "u": unit,
                   "q": Quality(q).label}
