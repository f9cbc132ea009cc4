"""
Input limits for the webhook HTTP server: the numbers, the per-peer
bookkeeping, and the stable log codes of each refusal.

L{voicecalld.web.guard} applies them to live connections.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from attrs import frozen
from twisted.internet.interfaces import IReactorTime

# One stable code per refusal; each refusal logs exactly one event carrying it
# as ``log_code`` (plus ``peer`` and ``status``), never a body, URI or token.
BODY_TOO_LARGE = "webhook.body_too_large"
HEADER_TIMEOUT = "webhook.header_timeout"
BODY_TIMEOUT = "webhook.body_timeout"
RATE_LIMITED = "webhook.rate_limited"
TOO_MANY_IN_FLIGHT = "webhook.too_many_in_flight"
TOO_MANY_CONNECTIONS = "webhook.too_many_connections"
HEADER_TOO_LARGE = "webhook.header_too_large"
BAD_REQUEST = "webhook.bad_request"


@frozen(kw_only=True)
class WebLimits:
    """
    Limits for the webhook server.  The body cap and deadlines follow
    upstream (64 KiB and 5 s before authentication).  Upstream allows 8
    requests in flight per peer; we allow 32 by default, because a carrier
    sends every call's webhooks from a few addresses (docs/capacity.md).  The
    per-peer rate and the connection cap are our own.

    @ivar max_body_bytes: larger bodies are answered 413.
    @ivar header_timeout: seconds from connect (or the end of the previous
        response) to the end of the request headers; then 408.
    @ivar body_timeout: seconds from the end of the headers to the end of the
        body; then 408.
    @ivar rate: requests per second each peer may sustain...
    @ivar burst: ...and in a burst; beyond, 429 with C{Retry-After}.
    @ivar max_in_flight_per_peer: requests of one peer in flight at once:
        a request counts from the end of its headers until its answer is
        finished (or its connection is lost, or it becomes a WebSocket).
        This many are served; the next one is answered 429.
    @ivar max_connections: open connections (WebSockets included); beyond,
        503 and the connection is closed.
    @ivar linger: seconds to drain and discard a refused client's data before
        dropping the connection (so that it reads our answer rather than a
        reset).
    @ivar max_tracked_peers: memory bound on the per-peer rate table.
    """

    max_body_bytes: int = 64 * 1024
    header_timeout: float = 5.0
    body_timeout: float = 5.0
    # Carriers send a call's webhooks and media sockets from a few addresses,
    # so a burst of calls must fit under one peer's limits.
    rate: float = 100.0
    burst: int = 300
    max_in_flight_per_peer: int = 32
    max_connections: int = 256
    linger: float = 2.0
    max_tracked_peers: int = 10_000

    def __attrs_post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "header_timeout",
            "body_timeout",
            "rate",
            "burst",
            "max_in_flight_per_peer",
            "max_connections",
            "linger",
            "max_tracked_peers",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


class TokenBucket:
    """
    A token bucket per key: C{rate} tokens a second, at most C{burst} kept.

    The table holds at most C{max_keys} keys; past that the least recently
    used ones are forgotten (a forgotten key starts again with a full bucket).
    """

    def __init__(
        self, rate: float, burst: int, clock: IReactorTime, max_keys: int = 10_000
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take one token for C{key}: 0.0 if granted, else the seconds until one is due."""
        now = self._clock.seconds()
        tokens, then = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - then) * self._rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self._rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(wait: float) -> int:
    """Seconds for a C{Retry-After} header: C{wait} rounded up, at least 1."""
    return max(1, math.ceil(wait))


class InFlight:
    """How many requests each peer has in flight (see L{WebLimits.max_in_flight_per_peer})."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        """Take a slot for C{key}; False when it already holds C{limit}."""
        count = self._counts.get(key, 0)
        if count >= self._limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> None:
        """Give back one slot of C{key}."""
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def count(self, key: str) -> int:
        """Slots C{key} holds now."""
        return self._counts.get(key, 0)

    def total(self) -> int:
        """Slots held by everyone."""
        return sum(self._counts.values())
