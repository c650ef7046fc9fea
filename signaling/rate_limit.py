"""Requests per minute on /api/v1, per user and per client IP: a token bucket per key, in bounded memory."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from signaling.auth import bearer_token, verify_once
from signaling.errors import ApiError, error_response

API_PREFIX = "/api/v1"
MAX_KEYS = 100_000


class _Bucket:
    __slots__ = ("tokens", "touched")

    def __init__(self, tokens: float, touched: float) -> None:
        self.tokens = tokens
        self.touched = touched


class RateLimiter:
    """`per_minute` requests a minute per key, with bursts of up to `per_minute`; O(1) per request.

    Keys are kept in order of their last request. A bucket left alone for a minute has refilled, so it is
    the same as no bucket and is dropped; past `max_keys` the longest idle one goes first.
    """

    def __init__(
        self, per_minute: int, *, max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_minute <= 0 or max_keys <= 0:
            raise ValueError("per_minute and max_keys must be > 0")
        self._capacity = float(per_minute)
        self._per_second = per_minute / 60.0
        self._refill_s = 60.0
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, keys: Sequence[str]) -> float:
        """Spend one request from every key's bucket: 0.0 if allowed, else seconds until it would be."""
        now = self._clock()
        self._drop_idle(now)
        buckets = [self._bucket(key, now) for key in keys]
        wait = max((self._wait(b) for b in buckets), default=0.0)
        if wait > 0.0:
            return wait  # refused: nothing is spent, so a refused request does not push the wait further out
        for bucket in buckets:
            bucket.tokens -= 1.0
        return 0.0

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            while len(self._buckets) >= self._max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = _Bucket(self._capacity, now)
            return bucket
        bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.touched) * self._per_second)
        bucket.touched = now
        self._buckets.move_to_end(key)
        return bucket

    def _wait(self, bucket: _Bucket) -> float:
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self._per_second

    def _drop_idle(self, now: float) -> None:
        # Oldest first: each bucket is dropped at most once, so this is O(1) per request on average.
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if now - oldest.touched < self._refill_s:
                return
            self._buckets.popitem(last=False)


def _keys(request: web.Request) -> list[str]:
    keys = []
    if request.remote:
        keys.append(f"ip:{request.remote}")
    token = bearer_token(request)
    if token:
        try:
            keys.append(f"user:{verify_once(request, token).user_id}")
        except ApiError:
            pass  # an invalid token is the handler's 401; the request still counts against its IP
    return keys


def rate_limit(per_minute: int, *, max_keys: int = MAX_KEYS) -> Middleware:
    """The middleware for `RATE_LIMIT_REQUESTS_PER_MINUTE` (0 = unlimited); put it after error_middleware."""
    limiter = RateLimiter(per_minute, max_keys=max_keys) if per_minute > 0 else None

    @web.middleware
    async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if limiter is None or not (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
            return await handler(request)
        wait = limiter.take(_keys(request))
        if wait > 0.0:
            message = f"too many requests; at most {per_minute} a minute"
            return error_response(429, "rate_limited", message, retry_after_s=max(1, math.ceil(wait)))
        return await handler(request)

    return rate_limit_middleware
