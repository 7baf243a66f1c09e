"""Topics and payloads of the platform link, schema version 1 (docs/payloads.md).

Every payload is a JSON object with ``"v": 1``, the site and gateway ids and the
buffer's epoch, so a message is understood without its topic. Each sample and
event carries the gateway's sequence number: delivery is at least once, and the
platform drops duplicates by (gateway, epoch, seq). The epoch changes only when
the gateway's buffer file is created anew, which restarts the numbering.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.buffer import EventRow, SampleRow

SCHEMA_VERSION = 1


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
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def health(self) -> str:
        return f"{self.prefix}/health"


def encode(document: dict[str, Any]) -> bytes:
    # allow_nan=False: a NaN in a payload is a bug upstream, never valid JSON to send.
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class Origin:
    """Who sends: the fields every payload starts with."""

    site: str
    gateway: str
    epoch: str

    def envelope(self, **fields: Any) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "site": self.site, "gateway": self.gateway,
                "epoch": self.epoch, **fields}

    def telemetry(self, rows: Sequence[SampleRow]) -> bytes:
        return encode(self.envelope(samples=[
            {"seq": r.seq, "ts": r.ts_ms, "ch": r.channel, "v": r.value, "u": r.unit,
             "q": r.quality.label} for r in rows]))

    def alarm(self, row: EventRow) -> bytes:
        return encode(self.envelope(seq=row.seq, **row.body))
