"""The trend summary: 10-s buckets of low, high, last and alarm level, kept in the buffer."""

from __future__ import annotations

from pathlib import Path

from edge_agent.buffer import Buffer, trend
from edge_agent.records import Quality, Sample
from edge_agent.trend import BUCKET_MS, Bucket, Trend


def co(ts_ms: int, value: float | None, quality: Quality = Quality.GOOD) -> Sample:
    return Sample("gas1.co", ts_ms, value, "ppm", quality)


def test_a_bucket_closes_when_the_next_begins_with_low_high_last_and_worst_level() -> None:
    t = Trend()
    t.follow([co(0, 5.0)], {})
    t.follow([co(3000, 40.0)], {"gas1.co": 2})
    t.follow([co(6000, 12.0)], {"gas1.co": 1})
    t.follow([co(9000, None, Quality.COMM_LOST)], {})
    assert [] == t.take_closed()
    t.follow([co(BUCKET_MS, 11.0)], {})
    assert [Bucket("gas1.co", "ppm", 0, 5.0, 40.0, 12.0, 2)] == t.take_closed()
    assert [] == t.take_closed()
    assert Bucket("gas1.co", "ppm", BUCKET_MS, 11.0, 11.0, 11.0, 0) == t.filling("gas1.co")


def test_a_bucket_without_a_fresh_value_is_a_gap() -> None:
    t = Trend()
    t.follow([co(0, 3.0, Quality.BAD), co(1000, float("nan"))], {"gas1.co": 1})
    t.follow([co(BUCKET_MS, 1.0)], {})
    assert [Bucket("gas1.co", "ppm", 0, None, None, None, 1)] == t.take_closed()


def test_buckets_are_stored_with_a_cycle_and_the_old_ones_dropped(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db")
    old = Bucket("gas1.co", "ppm", 0, 1.0, 2.0, 2.0, 0)
    buffer.commit_cycle([co(1, 1.0)], [], trend=[old], trend_after_ms=0)
    assert [(0, 1.0, 2.0, 2.0, 0)] == trend(buffer.path, "gas1.co", 0)
    new = Bucket("gas1.co", "ppm", 20_000, 30.0, 45.0, 31.0, 2)
    buffer.commit_cycle([], [], trend=[new], trend_after_ms=10_000)
    assert [(20_000, 30.0, 45.0, 31.0, 2)] == trend(buffer.path, "gas1.co", 0)
    assert [] == trend(buffer.path, "gas1.co", 30_000)
    assert [] == trend(buffer.path, "gas1.o2", 0)


def test_a_bucket_stored_at_a_stop_merges_with_its_rest_after_the_restart(
        tmp_path: Path) -> None:
    before = Trend()
    before.follow([co(1000, 5.0), co(2000, 40.0)], {"gas1.co": 2})
    assert [] == before.take_closed()
    stored = before.take_closed(everything=True)  # the agent stops mid-bucket
    assert [Bucket("gas1.co", "ppm", 0, 5.0, 40.0, 40.0, 2)] == stored
    buffer = Buffer(tmp_path / "b.db")
    buffer.commit_cycle([], [], trend=stored)
    after = Trend()
    after.follow([co(7000, 3.0), co(BUCKET_MS, 3.0)], {})
    buffer.commit_cycle([], [], trend=after.take_closed())
    assert [(0, 3.0, 40.0, 3.0, 2)] == trend(buffer.path, "gas1.co", 0)
