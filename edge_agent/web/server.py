"""The local web view: one page, live values by server-sent events, PIN-guarded actions.

aiohttp on the daemon's own event loop. Every asset comes from ``web/static``, and
the page's Content-Security-Policy lets a browser load nothing from anywhere
else. What the page reads is what ``edge-agent status`` reads; its four actions
go through the local command path, queued with the CLI's and the platform's
commands, after a PIN check that is rate-limited per client address. No action
can change the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from edge_agent import i18n
from edge_agent.commands import RateLimit
from edge_agent.config.model import Web
from edge_agent.web import pin

log = structlog.get_logger(__name__)

STATIC = Path(__file__).parent / "static"
ACTIONS = ("ack-alarm", "entry-test", "entry-start", "entry-end")
LIVE_EVERY_S = 1.0
ATTEMPTS_PER_S, ATTEMPTS_BURST = 0.1, 5  # PIN tries per client address: 5, then one per 10 s
MAX_BODY = 16 * 1024
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

Snapshot = Callable[[], Awaitable[dict[str, Any]]]
TrendOf = Callable[[str], Awaitable[dict[str, Any] | None]]
Command = Callable[[str, bytes], Awaitable[dict[str, Any]]]


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": {"code": code, "message": message}},
                             status=status)


class WebView:
    """Serves the page on ``settings.bind``:``settings.port`` until ``close``."""

    def __init__(self, settings: Web, language: str | None, snapshot: Snapshot, trend: TrendOf,
                 command: Command) -> None:
        self.settings, self.language = settings, language
        self._snapshot, self._trend, self._command = snapshot, trend, command
        self._clients: set[asyncio.Queue[bytes | None]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._attempts: dict[str, RateLimit] = {}
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.on_response_prepare.append(_headers)
        app.add_routes([
            web.get("/", self._page), web.get("/api/i18n", self._i18n),
            web.get("/api/site", self._site), web.get("/api/trend", self._trend_of),
            web.get("/api/live", self._live), web.post("/api/action", self._act),
            web.static("/static", STATIC)])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        tls = None
        if self.settings.cert_file is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.settings.cert_file, self.settings.key_file)
        await web.TCPSite(self._runner, self.settings.bind, self.settings.port,
                          ssl_context=tls).start()
        log.info("web_view_listening", bind=self.settings.bind, port=self.settings.port,
                 https=tls is not None, actions=self.settings.pin_hash is not None)
        if tls is None and not _loopback(self.settings.bind):
            log.warning("web_view_without_https", bind=self.settings.bind,
                        note="the PIN crosses the network in clear; set web.cert_file and "
                        "web.key_file")

    async def close(self) -> None:
        for queue in self._clients:
            _offer(queue, None)  # each live page's stream ends; its browser reconnects
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._runner is not None:
            await self._runner.cleanup()

    # --- reading ----------------------------------------------------------------

    async def _page(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _i18n(self, request: web.Request) -> web.Response:
        lang = i18n.choose(request.query.get("lang"), self.language,
                           request.headers.get("Accept-Language"))
        return web.json_response({"lang": lang, "languages": i18n.LANGUAGES,
                                  "messages": i18n.messages(lang)})

    async def _site(self, _request: web.Request) -> web.Response:
        return web.json_response(await self._snapshot())

    async def _trend_of(self, request: web.Request) -> web.Response:
        found = await self._trend(request.query.get("ch", ""))
        if found is None:
            return _error(404, "not_found", "no such channel on this gateway")
        return web.json_response(found)

    async def _live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the site's snapshot every second, to at most
        ``max_clients`` pages at once.
        """
        if len(self._clients) >= self.settings.max_clients:
            return web.json_response(
                {"ok": False, "error": {"code": "busy", "message": "too many live pages open "
                                        "on this gateway; close one and reload"}},
                status=503, headers={"Retry-After": "10"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=2)
        self._clients.add(queue)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._pump_snapshots(), name="web-live")
        try:
            await response.write(b"retry: 2000\n\n")  # how soon a browser reconnects
            while (frame := await queue.get()) is not None:
                await response.write(frame)
        except ConnectionError:
            pass  # the page was closed
        finally:
            self._clients.discard(queue)
        return response

    async def _pump_snapshots(self) -> None:
        """One snapshot a second while a page is open, encoded once for all of them."""
        while self._clients:
            try:
                body = json.dumps(await self._snapshot(), separators=(",", ":"))
            except Exception:
                log.exception("web_snapshot_failed")
            else:
                frame = f"event: snapshot\ndata: {body}\n\n".encode()
                for queue in self._clients:
                    _offer(queue, frame)
            await asyncio.sleep(LIVE_EVERY_S)

    # --- acting -----------------------------------------------------------------

    async def _act(self, request: web.Request) -> web.Response:
        """One of ACTIONS with the PIN: {"action", "pin", "by", and the command's fields}."""
        peer = request.remote or "unknown"
        if (origin := request.headers.get("Origin")) and origin.split("://", 1)[-1] != \
                request.host:
            return _error(403, "refused", "an action must come from this gateway's own page")
        if self.settings.pin_hash is None:
            return _error(403, "refused", "actions are off: no PIN is set in the config "
                          "(web.pin_hash; see `edge-agent web hash-pin`)")
        if len(self._attempts) > 1000:
            self._attempts.clear()
        if not self._attempts.setdefault(peer, RateLimit(ATTEMPTS_PER_S, ATTEMPTS_BURST)).take():
            log.warning("web_action_rate_limited", peer=peer)
            return _error(429, "rate_limited", "too many attempts; wait a minute")
        try:
            fields = await request.json()
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            fields = {}
        name, code, by = fields.pop("action", None), fields.pop("pin", None), fields.pop("by", None)
        if not (name in ACTIONS and isinstance(code, str) and isinstance(by, str)
                and 0 < len(by.strip()) <= 48):
            return _error(400, "bad_request", f"send JSON with action (one of "
                          f"{', '.join(ACTIONS)}), pin and by (your name, up to 48 characters)")
        if not await asyncio.to_thread(pin.verify, code, self.settings.pin_hash):
            log.warning("web_action_refused", action=name, by=by, peer=peer, reason="wrong PIN")
            return _error(401, "wrong_pin", "wrong PIN")
        who = f"{by.strip()} (web)"
        reply = await self._command(name, json.dumps({**fields, "by": who}).encode())
        log.info("web_action", action=name, by=who, peer=peer, ok=reply["ok"],
                 error=reply.get("error", {}).get("code"))
        return web.json_response(reply, status=200 if reply["ok"] else 409)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _offer(queue: asyncio.Queue[bytes | None], frame: bytes | None) -> None:
    """Queue a frame for a page; a page that falls behind gets the newest ones only."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(frame)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
