"""The local control socket: how `edge-agent status`, `alarms` and `config apply` reach
the running agent without opening its buses or its broker connection.

A unix socket next to the buffer (``buffer.db.sock``), readable and writable by
the agent's user and group only. One request per connection: a JSON object with
``command`` and that command's fields, on one line; one JSON line back, the same
reply body as on MQTT (docs/payloads.md). The commands run through the same code
as the platform's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

MAX_REQUEST_BYTES = 2 << 20  # a whole config for `config apply`, with room to spare


def socket_path(buffer_path: Path) -> Path:
    return buffer_path.with_name(buffer_path.name + ".sock")


class Unreachable(Exception):
    """No agent answers on the socket; the message says why and what to check."""


async def serve(path: Path, answer: Callable[[str, bytes], Awaitable[dict[str, Any]]]
                ) -> asyncio.Server:
    """Listen on ``path`` (a stale socket left by a killed agent is replaced)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.closing(writer):
            try:
                line = await reader.readuntil(b"\n")
                request = json.loads(line)
                name = str(request.pop("command"))
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                    KeyError, AttributeError, TypeError):
                reply: dict[str, Any] = {"ok": False, "error": {
                    "code": "bad_request", "message": "send one JSON object with a "
                    "\"command\" key, on one line"}}
            else:
                reply = await answer(name, json.dumps(request).encode())
            writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    path.unlink(missing_ok=True)  # the caller holds the run lock: any socket here is stale
    old_umask = os.umask(0o117)  # srw-rw----: the agent's user and group only
    try:
        return await asyncio.start_unix_server(handle, path, limit=MAX_REQUEST_BYTES)
    finally:
        os.umask(old_umask)


def request(path: Path, command: str, timeout_s: float = 10.0, **fields: Any) -> dict[str, Any]:
    """Send one command to the agent on ``path``; its reply body (blocking, for the CLI)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise Unreachable(f"no agent is running with this config (no socket {path})"
                              ) from None
        except ConnectionRefusedError:
            raise Unreachable(f"no agent answers on {path}: it has stopped or was killed"
                              ) from None
        except PermissionError:
            raise Unreachable(f"no permission to use {path}; run as the agent's user or a "
                              "member of its group (sudo -u edge-agent ...)") from None
        except OSError as exc:  # e.g. a path longer than a unix socket may have
            raise Unreachable(f"cannot reach the agent at {path}: {exc}") from None
        sock.sendall(json.dumps({"command": command, **fields}).encode() + b"\n")
        data = bytearray()
        try:
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise Unreachable(f"the agent did not answer within {timeout_s:g} s") from None
    if not data:
        raise Unreachable("the agent closed the connection without an answer")
    return json.loads(data)
