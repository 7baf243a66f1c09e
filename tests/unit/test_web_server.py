"""The web view's guard on actions, on its own: a real server on loopback, a stand-in
for the agent's command path that records what reaches it."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from edge_agent.config import Web
from edge_agent.demo.broker import free_port
from edge_agent.web.pin import hash_pin
from edge_agent.web.server import WebView
from tests.pki import make_pki

PIN = "4711"


async def nothing(*_: Any) -> Any:
    return {}


async def serve_and_post(settings: Web, bodies: list[Any], headers: dict[str, str] | None = None
                         ) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[str, bytes]]]:
    """Post each body to /api/action; the replies and the commands that reached the agent."""
    reached: list[tuple[str, bytes]] = []

    async def command(name: str, payload: bytes) -> dict[str, Any]:
        reached.append((name, payload))
        return {"command": name, "ok": True, "result": {}}

    view = WebView(settings, None, nothing, nothing, command)
    await view.start()
    replies = []
    try:
        async with aiohttp.ClientSession() as session:
            for body in bodies:
                async with session.post(f"http://127.0.0.1:{settings.port}/api/action",
                                        data=json.dumps(body), headers=headers) as r:
                    replies.append((r.status, await r.json()))
    finally:
        await view.close()
    return replies, reached


def ack(pin: str | None = PIN, **extra: Any) -> dict[str, Any]:
    body = {"action": "ack-alarm", "by": "Wang Fang", "key": "gas1.co:above:1", **extra}
    return body if pin is None else {**body, "pin": pin}


def test_without_a_pin_in_the_config_no_action_is_possible() -> None:
    replies, reached = asyncio.run(serve_and_post(Web(enabled=True, port=free_port()),
                                                  [ack(), ack("0000")]))
    assert [(403, "refused")] * 2 == [(s, b["error"]["code"]) for s, b in replies]
    assert [] == reached


def test_only_the_right_pin_and_the_four_actions_reach_the_agent() -> None:
    settings = Web(enabled=True, port=free_port(), pin_hash=hash_pin(PIN))
    replies, reached = asyncio.run(serve_and_post(settings, [  # 5 tries, the limit
        ack(None), ack("0000"), {**ack(), "action": "set-config", "toml": "x"}, [1, 2],
        ack()]))
    assert [400, 401, 400, 400, 200] == [s for s, _ in replies]
    assert 1 == len(reached)
    name, payload = reached[0]
    assert ("ack-alarm", {"key": "gas1.co:above:1", "by": "Wang Fang (web)"}) == (
        name, json.loads(payload))  # the PIN never goes further


def test_tries_are_limited_per_address() -> None:
    settings = Web(enabled=True, port=free_port(), pin_hash=hash_pin(PIN))
    replies, reached = asyncio.run(serve_and_post(settings, [ack("0000")] * 5 + [ack()]))
    assert [401] * 5 + [429] == [s for s, _ in replies]  # even the right PIN, once over
    assert [] == reached


def test_an_action_from_another_origin_is_refused() -> None:
    settings = Web(enabled=True, port=free_port(), pin_hash=hash_pin(PIN))
    replies, reached = asyncio.run(serve_and_post(
        settings, [ack()], headers={"Origin": "http://elsewhere.example"}))
    assert [403] == [s for s, _ in replies]
    assert [] == reached


def test_https_serves_the_page_under_the_configured_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    settings = Web(enabled=True, port=free_port(), cert_file=pki.server_cert,
                   key_file=pki.server_key)

    async def fetch() -> tuple[int, str]:
        view = WebView(settings, None, nothing, nothing, nothing)
        await view.start()
        try:
            trusted = ssl.create_default_context(cafile=str(pki.ca))
            async with aiohttp.ClientSession() as session, session.get(
                    f"https://localhost:{settings.port}/", ssl=trusted) as r:
                return r.status, await r.text()
        finally:
            await view.close()

    status, page = asyncio.run(fetch())
    assert 200 == status
    assert '<script src="/static/app.js" defer></script>' in page


def test_a_taken_port_fails_the_start_and_leaves_nothing_running() -> None:
    async def start_on_taken_port() -> str:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            view = WebView(Web(enabled=True, port=taken.getsockname()[1]), None, nothing,
                           nothing, nothing)
            try:
                await view.start()
            except OSError as exc:
                await view.close()  # what the daemon does before it goes on without the view
                return str(exc)
            await view.close()
            return "started"

    assert "address already in use" in asyncio.run(start_on_taken_port()).lower()
