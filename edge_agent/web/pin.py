"""The technicians' PIN: stored as an scrypt hash in the config, checked slowly.

``edge-agent web hash-pin`` makes the hash; the config keeps only that. A check
costs tens of milliseconds of scrypt, and the web view limits how often anyone
may try (web/server.py), so a short PIN is not guessed by trying them all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

N, R, P = 2**14, 8, 1  # ~16 MB and ~50 ms on a Pi 4's core
PATTERN = r"^scrypt:(\d+):(\d+):(\d+):([0-9a-f]{32}):([0-9a-f]{64})$"
MIN_LENGTH = 4


def _scrypt(pin: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 2**20, dklen=32)


def hash_pin(pin: str) -> str:
    if len(pin) < MIN_LENGTH:
        raise ValueError(f"a PIN has at least {MIN_LENGTH} characters")
    salt = secrets.token_bytes(16)
    return f"scrypt:{N}:{R}:{P}:{salt.hex()}:{_scrypt(pin, salt, N, R, P).hex()}"


def verify(pin: str, stored: str) -> bool:
    match = re.match(PATTERN, stored)
    if match is None or not pin:
        return False
    n, r, p = (int(g) for g in match.groups()[:3])
    return hmac.compare_digest(_scrypt(pin, bytes.fromhex(match[4]), n, r, p).hex(), match[5])
