"""Token-bucket rate limits for remote teachers: requests per minute and tokens per minute.

The buckets live on one asyncio event loop. Each holds at most ``burst`` units (one second's
worth by default, so a limit smooths traffic instead of firing a minute's budget at once) and
refills continuously. Waiters are served in arrival order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """``rate_per_minute`` units per minute, at most ``burst`` at once.

    :meth:`acquire` waits until ``amount`` units are there and takes them; an amount larger than
    the bucket waits for a full bucket (so it cannot block forever). :meth:`adjust` charges or
    refunds units after the fact (a token estimate replaced by the real count); the level may
    go below zero, and later callers then wait longer.
    """

    def __init__(
        self,
        rate_per_minute: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate_per_minute > 0:
            raise ValueError(f"rate_per_minute must be > 0, got {rate_per_minute}")
        self.rate = rate_per_minute / 60.0  # units per second
        self.capacity = float(burst) if burst is not None else max(1.0, self.rate)
        if not self.capacity > 0:
            raise ValueError(f"burst must be > 0, got {burst}")
        self._clock = clock
        self._level = self.capacity
        self._stamp = clock()
        self._lock: asyncio.Lock | None = None

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    @property
    def level(self) -> float:
        """Units available now (negative after an overdraft)."""
        self._refill()
        return self._level

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` units (capped at the capacity) would be available."""
        self._refill()
        amount = min(amount, self.capacity)
        return max(0.0, (amount - self._level) / self.rate)

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until ``amount`` units are available, then take them."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # first come, first served
            while True:
                delay = self.wait_time(amount)
                if delay <= 0:
                    self._level -= min(amount, self.capacity)
                    return
                await asyncio.sleep(delay)

    def adjust(self, delta: float) -> None:
        """Take ``delta`` more units (give back when negative), without waiting."""
        self._refill()
        self._level = min(self.capacity, self._level - delta)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits together; either may be ``None``."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requests = (
            TokenBucket(requests_per_minute, clock=clock) if requests_per_minute else None
        )
        self.tokens = TokenBucket(tokens_per_minute, clock=clock) if tokens_per_minute else None

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    async def acquire(self, tokens: int) -> None:
        """Wait for one request and ``tokens`` (an estimate) of budget."""
        if self.requests is not None:
            await self.requests.acquire(1)
        if self.tokens is not None:
            await self.tokens.acquire(tokens)

    def settle(self, estimated: int, actual: int) -> None:
        """Replace a token estimate by the count the server reported."""
        if self.tokens is not None and actual != estimated:
            self.tokens.adjust(actual - min(estimated, self.tokens.capacity))


__all__ = ["RateLimiter", "TokenBucket"]
