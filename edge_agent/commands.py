"""Commands from the platform: checked before anything runs, limited, always answered.

A command arrives on ``<prefix>/cmd/<name>`` with a JSON object (or nothing) as its
payload; ``id`` in it, if given, comes back in the reply. Each command's fields
are a pydantic model that forbids unknown keys, so a typo is an error reply, not
a silently ignored field. Unknown commands, oversize or malformed payloads and
commands over the rate limit get an error reply and change nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_PAYLOAD_BYTES = 1 << 20  # a whole site config fits many times over
RATE_PER_S = 5.0
RATE_BURST = 20
QUEUE_MAX = 32  # commands waiting for the ones before them; more are refused as busy

ErrorCode = Literal["unknown_command", "bad_request", "not_found", "rate_limited", "busy",
                    "refused", "rolled_back", "failed"]


class CommandError(Exception):
    """A command that cannot be carried out; the reply says ``code`` and why."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


RequestId = Annotated[str, Field(max_length=128)] | int | None


class Args(BaseModel):
    """What every command may carry: the platform's request id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: RequestId = None


Who = Annotated[str, Field(min_length=1, max_length=64, description="who: recorded with it")]
Text = Annotated[str, Field(min_length=1, max_length=500)]
Minutes = Annotated[float, Field(gt=0, le=1440, description="how long, minutes")]
AlarmKey = Annotated[str, Field(min_length=1, max_length=200,
                                description="the alarm's key, e.g. gas1.co:above:1")]


class AlarmRef(Args):
    """One alarm, by its key (its newest episode) or by its id."""

    key: AlarmKey | None = None
    alarm: str | None = Field(None, min_length=1, max_length=64,
                              description="or the alarm's id, from its raised event")
    by: Who


class AckAlarm(AlarmRef):
    note: Text | None = None


class HandleAlarm(AlarmRef):
    cause: Text = Field(description="what caused it")
    action: Text = Field(description="what was done about it")


class ShelveAlarm(Args):
    key: AlarmKey
    by: Who
    reason: Text
    minutes: Minutes = 60.0


class Unshelve(Args):
    key: AlarmKey
    by: Who


class OutOfService(Args):
    channel: str = Field(min_length=1, max_length=128, description="e.g. gas1.co")
    by: Who
    reason: Text
    minutes: Minutes = 60.0


class ReturnToService(Args):
    channel: str = Field(min_length=1, max_length=128)
    by: Who


class ReadNow(Args):
    device: str | None = Field(None, min_length=1, max_length=64,
                               description="one device; default every device")


class EntryTest(Args):
    space: str = Field(min_length=1, max_length=64, description="a space of the site config")
    by: str = Field(min_length=1, max_length=64, description="who tests: recorded with it")


class EntrySession(Args):
    space: str = Field(min_length=1, max_length=64, description="a space of the site config")
    by: str = Field(min_length=1, max_length=64, description="who starts or ends the entry")


class SetConfig(Args):
    toml: str = Field(min_length=1, max_length=MAX_PAYLOAD_BYTES,
                      description="the complete new site config")


ARGS: dict[str, type[Args]] = {"ping": Args, "ack-alarm": AckAlarm, "read-now": ReadNow,
                               "get-config": Args, "set-config": SetConfig,
                               "buffer-stats": Args, "status": Args, "alarms": Args,
                               "entry-test": EntryTest, "entry-start": EntrySession,
                               "entry-end": EntrySession, "entry-status": Args,
                               "reset-alarm": AlarmRef, "handle-alarm": HandleAlarm,
                               "shelve-alarm": ShelveAlarm, "unshelve-alarm": Unshelve,
                               "out-of-service": OutOfService,
                               "return-to-service": ReturnToService}


def parse(name: str, payload: bytes) -> tuple[RequestId, Args]:
    """The request id (when one can be found) and the checked arguments.

    Raises CommandError; its ``details`` carry the id so the error reply has it.
    """
    request_id: RequestId = None
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandError("bad_request", f"payload of {len(payload)} bytes; the limit is "
                           f"{MAX_PAYLOAD_BYTES}")
    try:
        document = json.loads(payload) if payload.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError("bad_request", f"the payload is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CommandError("bad_request", "the payload must be a JSON object")
    if isinstance(document.get("id"), str | int) and len(str(document["id"])) <= 128:
        request_id = document["id"]
    if name not in ARGS:
        raise CommandError("unknown_command", f"no command {name!r}; commands are "
                           f"{', '.join(ARGS)}", id=request_id)
    try:
        args = ARGS[name].model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}"
                             for e in exc.errors())
        raise CommandError("bad_request", problems, id=request_id) from None
    if isinstance(args, AlarmRef) and (args.key is None) == (args.alarm is None):
        raise CommandError("bad_request", "give the alarm's key or its id (alarm), one of them",
                           id=request_id)
    return request_id, args


class RateLimit:
    """A token bucket: ``burst`` commands at once, then ``per_s`` a second (thread-safe)."""

    def __init__(self, per_s: float = RATE_PER_S, burst: int = RATE_BURST) -> None:
        self.per_s, self.burst = per_s, burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


Handler = Callable[[Args], Awaitable[dict[str, Any]]]


async def answer(name: str, payload: bytes, handlers: dict[str, Handler]) -> dict[str, Any]:
    """Run one command and make its reply body (without the envelope)."""
    request_id: RequestId = None
    try:
        request_id, args = parse(name, payload)
        result = await handlers[name](args)
    except CommandError as exc:
        request_id = exc.details.pop("id", request_id)
        return failure(name, request_id, exc)
    return {"command": name, "id": request_id, "ok": True, "result": result}


def failure(name: str, request_id: RequestId, exc: CommandError) -> dict[str, Any]:
    return {"command": name, "id": request_id, "ok": False,
            "error": {"code": exc.code, "message": str(exc), **exc.details}}
