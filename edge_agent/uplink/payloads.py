"""Topics and payloads of the platform link, schema version 1 (docs/payloads.md).

Every payload is a JSON object with ``"v": 1``, the site and gateway ids and the
buffer's epoch, so a message is understood without its topic. Each sample and
event carries the gateway's sequence number: delivery is at least once, and the
platform drops duplicates by (gateway, epoch, seq). The epoch changes only when
the gateway's buffer file is created anew, which restarts the numbering.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.buffer import EventRow, SampleRow
from edge_agent.records import Quality

SCHEMA_VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"
_LABELS = {q: q.label for q in Quality}


@dataclass(frozen=True)
class Topics:
    prefix: str

    @classmethod
    def for_site(cls, template: str, site: str, gateway: str) -> Topics:
        return cls(template.format(site=site, gateway=gateway))

    @property
    def telemetry(self) -> str:
        return f"{self.prefix}/telemetry"

    @property
    def alarm(self) -> str:
        return f"{self.prefix}/alarm"

    @property
    def entry(self) -> str:
        """Confined-space entry events: tests, sessions, records, evacuations."""
        return f"{self.prefix}/entry"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def health(self) -> str:
        return f"{self.prefix}/health"

    @property
    def commands(self) -> str:
        """The filter of this gateway's own command topics, and nothing else."""
        return f"{self.prefix}/cmd/+"

    def command_name(self, topic: str) -> str | None:
        """``ping`` for ``<prefix>/cmd/ping``; None for any other topic."""
        head, _, name = topic.rpartition("/")
        return name if head == f"{self.prefix}/cmd" and name else None

    def reply(self, name: str) -> str:
        return f"{self.prefix}/cmd/{name}/reply"


def encode(document: dict[str, Any]) -> bytes:
    # allow_nan=False: a NaN in a payload is a bug upstream, never valid JSON to send.
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def decode(payload: bytes) -> Any:
    """A payload as the platform reads it: JSON, or gzipped JSON."""
    if payload[:2] == GZIP_MAGIC:
        payload = gzip.decompress(payload)
    return json.loads(payload)


@dataclass(frozen=True)
class Origin:
    """Who sends: the fields every payload starts with."""

    site: str
    gateway: str
    epoch: str

    def envelope(self, **fields: Any) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "site": self.site, "gateway": self.gateway,
                "epoch": self.epoch, **fields}

    def telemetry(self, rows: Sequence[SampleRow], max_bytes: int | None = None,
                  compress: bool = False, **fields: Any) -> tuple[bytes, int]:
        """A telemetry payload of the first rows that fit in ``max_bytes``, and their count.

        ``compress`` gzips the JSON; the platform tells the two apart by gzip's
        first bytes (1f 8b), which no JSON text starts with. ``fields`` go in the
        envelope.
        """
        n = len(rows)
        while True:
            payload = encode(self.envelope(**fields, samples=[
                {"seq": r.seq, "ts": r.ts_ms, "ch": r.channel, "v": r.value, "u": r.unit,
                 "q": _LABELS[r.quality]} for r in rows[:n]]))
            if compress:
                payload = gzip.compress(payload, compresslevel=6, mtime=0)
            if max_bytes is None or len(payload) <= max_bytes or n == 1:
                return payload, n
            n = max(1, min(n - 1, int(n * max_bytes / len(payload) * 0.95)))

    def alarm(self, row: EventRow, **fields: Any) -> bytes:
        return encode(self.envelope(**fields, seq=row.seq, **row.body))
