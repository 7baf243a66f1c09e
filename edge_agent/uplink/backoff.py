"""Reconnect delays: exponential backoff with full jitter.

After a broker restart, thousands of gateways that all wait 1, 2, 4 ... s come
back in the same second and knock it over again. With full jitter each waits a
random time between 0 and the exponential bound, which spreads them evenly
(AWS Architecture Blog, "Exponential Backoff And Jitter", 2015). paho's own
reconnect delay has no jitter, so the uplink uses this one.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays uniform in [0, min(cap, base * 2**attempt)]; ``reset`` after a good link.

    >>> b = Backoff(base_s=1, cap_s=8, rng=random.Random(7))
    >>> [round(b.next(), 2) for _ in range(6)]
    [0.32, 0.3, 2.6, 0.58, 4.29, 2.93]
    >>> b.bound_s
    8
    """

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng or random.SystemRandom()  # not seeded alike on every gateway

    @property
    def bound_s(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap_s, self.base_s * 2 ** self.attempt)

    def next(self) -> float:
        delay = self._rng.uniform(0, self.bound_s)
        self.attempt = min(self.attempt + 1, 32)
        return delay

    def reset(self) -> None:
        self.attempt = 0
