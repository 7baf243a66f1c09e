"""Offline replay of a recorded series through the agent's own kernels, for engineers who
tune rules on recorded data (`edge-agent detect`).

Input: a CSV with a header; the first column is the time (``YYYY-MM-DD HH:MM:SS``,
ISO 8601, or seconds since 1970), each further column a series of readings (empty or
``nan``: no reading). Rows are replayed in file order; a time that goes back is a
clock jump, which the kernels handle as they do on a gateway. Without a site config
every column gets the anomaly detector only. With one, each column is a channel of
the site (named ``device.value``, or given by ``channel`` for a single column) and is
judged by every rule the site has for it (limits with delays, rates, exposure,
sensor faults, anomaly, and the combined rules whose channels are all in the file),
through the same AlarmEngine as the daemon.

Output, per row: the time, and per channel the reading, the anomaly score, whether
the channel is flagged anomalous, the highest alarm level in force (0, 1 or 2) and
the faults in force; then the events of that row (``key transition``, ``;``-separated).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge_agent.alarms import AlarmEngine, SiteSpec
from edge_agent.config import LoadedConfig
from edge_agent.core import AnomalyBank
from edge_agent.site_rules import site_spec


class InputError(Exception):
    """The input file cannot be replayed; the message says where and why."""


@dataclass
class Series:
    """A recorded series: times (s) and one column of readings per channel."""

    t: np.ndarray
    columns: dict[str, np.ndarray]
    time_text: list[str]  # the times as the file wrote them


def read_series(path: Path) -> Series:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    if len(rows) < 2 or len(rows[0]) < 2:
        raise InputError(f"{path}: need a header and rows of a time and at least one value")
    header, body = rows[0], rows[1:]
    times = np.empty(len(body))
    values = np.full((len(body), len(header) - 1), np.nan)
    for n, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise InputError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
        times[n - 2] = _seconds(row[0], path, n)
        for j, text in enumerate(row[1:]):
            try:
                values[n - 2, j] = float(text) if text.strip() else math.nan
            except ValueError:
                raise InputError(f"{path}:{n}: {header[j + 1]} = {text!r} is not a "
                                 "number") from None
    return Series(times, {name.strip(): values[:, j] for j, name in enumerate(header[1:])},
                  [row[0] for row in body])


def _seconds(text: str, path: Path, line: int) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{path}:{line}: {text!r} is not a time (YYYY-MM-DD HH:MM:SS, ISO "
                         "8601, or seconds since 1970)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def anomaly_scores(series: Series) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Scores and flags of every column, one compiled call per column (no rules)."""
    out = {}
    for name, x in series.columns.items():
        bank = AnomalyBank(1)
        scores = bank.run(x[:, None], series.t)[:, 0]
        out[name] = (scores, scores >= bank.params.flag)
    return out


def replay(series: Series, loaded: LoadedConfig | None = None,
           channel: str | None = None) -> Iterator[dict[str, object]]:
    """One output row per input row (see the module's docstring)."""
    if loaded is None:
        flagged = anomaly_scores(series)
        for k in range(len(series.t)):
            row: dict[str, object] = {"time": series.time_text[k]}
            for name, (scores, flags) in flagged.items():
                row |= {name: series.columns[name][k], f"{name}.score": round(scores[k], 6),
                        f"{name}.anomaly": int(flags[k])}
            yield row
        return
    columns = _channels(series, loaded, channel)
    spec = _subset(site_spec(loaded), set(columns.values()))
    engine = AlarmEngine(spec)
    for k, t in enumerate(series.t):
        readings = {columns[col]: x[k] for col, x in series.columns.items()}
        out = engine.judge(readings, round(t * 1000))
        row = {"time": series.time_text[k]}
        for col, name in columns.items():
            active = [key for key in engine.active if key.split(":", 1)[0] == name]
            row |= {name: series.columns[col][k], f"{name}.score": round(engine.score(name), 6),
                    f"{name}.anomaly": int(f"{name}:anomaly" in engine.active),
                    f"{name}.level": max((engine.level_of(key) for key in active), default=0),
                    f"{name}.faults": " ".join(sorted(
                        key.rsplit(":", 1)[1] for key in active
                        if engine.active[key].cls == "fault"))}
        row["events"] = "; ".join(f"{e.key} {e.transition}" for e in out.events)
        yield row


def _channels(series: Series, loaded: LoadedConfig, channel: str | None) -> dict[str, str]:
    """Input column -> the site channel it is."""
    known = [r.channel for r in loaded.channels()]
    if channel is not None:
        if len(series.columns) != 1:
            raise InputError(f"--channel {channel} names one series, the file has "
                             f"{len(series.columns)}: name the columns after the channels")
        if channel not in known:
            raise InputError(f"--channel {channel}: no such channel in {loaded.path}; "
                             f"channels are {', '.join(known)}")
        return {next(iter(series.columns)): channel}
    unknown = [c for c in series.columns if c not in known]
    if unknown:
        raise InputError(f"columns {', '.join(unknown)} are not channels of {loaded.path} "
                         "(device.value); name them so, or give --channel for one column")
    return {c: c for c in series.columns}


def _subset(spec: SiteSpec, names: set[str]) -> SiteSpec:
    """The site's rules for the replayed channels; every one gets an anomaly score."""
    channels = tuple(replace(c, anomaly=True) for c in spec.channels if c.name in names)
    return SiteSpec(
        channels, tuple(r for r in spec.rules if {t.channel for t in r.terms} <= names),
        tuple(p for p in spec.pairs if {p.a, p.b} <= names),
        tuple(k for k in spec.fault_keys if k.split(":", 1)[0] in names))


def write_rows(rows: Iterator[dict[str, object]], path: Path) -> int:
    """Write the rows as CSV; return how many."""
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer: csv.DictWriter | None = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(f, fieldnames=list(row))
                writer.writeheader()
            writer.writerow({k: _text(v) for k, v in row.items()})
            n += 1
    return n


def _text(value: object) -> object:
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else f"{float(value):.6g}"
    return value


__all__ = ["InputError", "Series", "anomaly_scores", "read_series", "replay", "write_rows"]
