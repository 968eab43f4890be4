"""Token buckets per client: how many requests a token or an address may send, and how
much of the event loop's time it may spend parsing query texts never seen before.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a request
takes one (a new query text is charged the seconds its parsing took). An empty
bucket answers how long until enough has refilled: the ``Retry-After`` of the 429 the
request gets. Buckets are kept per key (a token's name, a client address) in a table
bounded by :data:`MAX_KEYS`: when it is full, the key seen least recently is forgotten,
which at worst gives a client it had been limiting a full bucket again; a flood of
distinct addresses cannot grow the table.

Hand-written rather than taken from a library: the well-kept rate-limit libraries for
Python offer fixed and moving windows (the moving one keeps a timestamp per request, a
hostile client's worth of memory), or throttle the caller's own calls (aiolimiter); a
token bucket is a few arithmetic operations per request on the hottest path.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

#: Buckets kept per limiter; a full bucket costs about 200 bytes.
MAX_KEYS = 65_536

_now = time.monotonic


@dataclass(frozen=True, slots=True)
class Rate:
    """``rate`` per second, up to ``burst`` at once. A rate of 0 means no limit."""

    rate: float
    burst: float

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The limits of one process (``[rate_limits]`` in the configuration)."""

    #: Requests per second a token may send (its name is the key).
    per_token: Rate = Rate(20_000, 40_000)
    #: Requests per second one client address may send, whatever its token.
    per_address: Rate = Rate(20_000, 40_000)
    #: Seconds per second of parsing and validating query texts not in the query cache
    #: that one client (its token, or its address when anonymous) may cause, in the
    #: event loop's CPU time: parsing the largest query allowed takes about 0.1 s, so this
    #: bounds the share of the loop one client can take with texts it never repeats (a
    #: fifth, after a burst of a second: ten of the largest). Clients that send the same
    #: few queries again (every real application) parse each once.
    parse_seconds: Rate = Rate(0.2, 1.0)

    @classmethod
    def off(cls) -> RateLimits:
        none = Rate(0, 0)
        return cls(none, none, none)


class Limiter:
    """Token buckets by key for one :class:`Rate`."""

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, limit: Rate, *, max_keys: int = MAX_KEYS) -> None:
        self.rate = limit.rate
        self.burst = limit.burst
        self.max_keys = max_keys
        #: key -> [tokens left, when last refilled]; least recently used first.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, amount: float = 1.0) -> float:
        """Take ``amount`` from ``key``'s bucket: 0.0 when it held that much, else the
        seconds until it will (and nothing is taken). More than a full bucket is never
        refused outright: it waits for a full bucket, then drives it below zero, so a
        large request is not refused forever but paid for by the waits after it."""
        buckets = self._buckets
        now = _now()
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
            bucket = buckets[key] = [self.burst, now]
        else:
            buckets.move_to_end(key)
            tokens = bucket[0] + (now - bucket[1]) * self.rate
            bucket[0] = tokens if tokens < self.burst else self.burst
            bucket[1] = now
        tokens = bucket[0]
        if tokens >= amount or (tokens >= self.burst and amount > self.burst):
            bucket[0] = tokens - amount
            return 0.0
        return (min(amount, self.burst) - tokens) / self.rate

    def charge(self, key: str, amount: float) -> None:
        """Take ``amount`` from ``key``'s bucket after the fact, below zero if need be:
        for work whose cost is known once done (the next :meth:`take` waits for it)."""
        self.take(key, 0.0)
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket[0] -= amount


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, rounded up, at least one."""
    return str(max(1, math.ceil(seconds)))
