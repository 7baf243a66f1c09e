"""Misbehaving network parts for fault tests: a broker that never acknowledges a
publish, and a TCP proxy whose link can be cut and restored."""

from __future__ import annotations

import contextlib
import socket
import threading

from edge_agent.demo.broker import free_port


class SilentBroker:
    """An MQTT server that accepts the CONNECT and answers pings, but never sends a
    PUBACK: every publish stays unacknowledged for as long as it runs."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.publishes = 0
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> SilentBroker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for client in self._clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            self._clients.append(client)
            threading.Thread(target=self._talk, args=(client,), daemon=True).start()

    def _talk(self, client: socket.socket) -> None:
        client.settimeout(0.2)
        pending = b""
        while not self._stop.is_set():
            try:
                data = client.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            pending += data
            while (packet := _packet(pending)) is not None:
                kind, body_at, length = packet
                body, pending = pending[body_at:length], pending[length:]
                if kind == 0x10:  # CONNECT -> CONNACK, session not present, accepted
                    client.sendall(b"\x20\x02\x00\x00")
                elif kind == 0xC0:  # PINGREQ -> PINGRESP: the link looks healthy
                    client.sendall(b"\xd0\x00")
                elif kind == 0x80:  # SUBSCRIBE -> SUBACK (its packet id), granting QoS 1
                    client.sendall(b"\x90\x03" + body[:2] + b"\x01")
                elif kind == 0x30:
                    self.publishes += 1


def _packet(data: bytes) -> tuple[int, int, int] | None:
    """(packet type, where its body starts, its total length) of the first complete MQTT
    packet in ``data``; None until it is complete."""
    if len(data) < 2:
        return None
    remaining, multiplier, i = 0, 1, 1
    while True:
        if i >= len(data):
            return None
        byte = data[i]
        remaining += (byte & 0x7F) * multiplier
        multiplier *= 128
        i += 1
        if not byte & 0x80:
            break
    total = i + remaining
    return (data[0] & 0xF0, i, total) if len(data) >= total else None


class Proxy:
    """127.0.0.1:port -> 127.0.0.1:target; ``cut()`` drops every connection and
    refuses new ones until ``restore()``: a 4G link that comes and goes."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._up = threading.Event()
        self._up.set()
        self._stop = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Proxy:
        self._listen()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(5)

    def _listen(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.1)

    def cut(self) -> None:
        self._up.clear()
        with self._lock:
            for a, b in self._pairs:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self._pairs.clear()
            if self._server is not None:
                self._server.close()  # refused, like an unreachable network
                self._server = None

    def restore(self) -> None:
        with self._lock:
            if self._server is None:
                self._listen()
        self._up.set()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._up.wait(0.1):
                continue
            server = self._server
            if server is None:
                continue
            try:
                client, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for s in (source, sink):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
