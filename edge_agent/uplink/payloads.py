"""Topics and payloads of the platform link, schema version 1 (docs/payloads.md).

Every payload is a JSON object with ``"v": 1`` and the gateway and site ids, so
a message is understood without its topic. Each sample and event carries the
gateway's sequence number: delivery is at least once, and the platform drops
duplicates by (gateway, seq).
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


def envelope(site: str, gateway: str, **fields: Any) -> dict[str, Any]:
    return {"v": SCHEMA_VERSION, "site": site, "gateway": gateway, **fields}


def telemetry(site: str, gateway: str, rows: Sequence[SampleRow]) -> bytes:
    return encode(envelope(site, gateway, samples=[
        {"seq": r.seq, "ts": r.ts_ms, "ch": r.channel, "v": r.value, "u": r.unit,
         "q": r.quality.label} for r in rows]))


def alarm(site: str, gateway: str, row: EventRow) -> bytes:
    return encode(envelope(site, gateway, seq=row.seq, **row.body))
