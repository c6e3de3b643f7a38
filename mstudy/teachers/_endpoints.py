"""The servers one :class:`~mstudy.teachers.remote.RemoteTeacher` spreads requests over.

:class:`Server` is one endpoint's runtime state: its window (fixed or adaptive), the
requests outstanding there, its health and its counts. :class:`Dispatcher` hands each attempt
the server with the fewest outstanding requests that has room in its window, waiting (first
come, first served) when none has; it runs on the teacher's event loop and nothing in it
blocks.

Health: an attempt that fails in a way that says the server, not the request, is at fault (it
could not be reached, timed out, answered 5xx other than 429, or 401/403/404) counts against
it; ``threshold`` of those in a row, or one connection failure to a server never reached,
takes it out of the rotation (``down``) for a cool-off that doubles each time, after which it
gets one request at a time (a probe) until one succeeds. While no server is up, every server
takes requests as if all were up: one server behaves exactly as before, and a teacher whose
servers are all down fails its requests (and trips its breaker) instead of waiting.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

from mstudy.report import EndpointStats
from mstudy.teachers._window import AdaptiveWindow, FixedWindow, WindowTrace

__all__ = ["Dispatcher", "Server"]

LATENCIES_KEPT = 10_000
"""Latencies a server keeps for its p95 (the most recent)."""


class Server:
    """One endpoint: where requests go, its window, health and counts (loop thread only)."""

    def __init__(
        self,
        index: int,
        url: str | None,
        shown: str,
        headers: dict[str, str],
        window: FixedWindow | AdaptiveWindow,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.index = index
        self.url = url
        """Where requests go (no userinfo; None for an HF provider)."""
        self.shown = shown
        self.headers = headers
        self.window = window
        self.clock = clock
        self.outstanding = 0
        self.down = False
        self.down_until = 0.0
        self.reached = False
        self.failures_in_row = 0
        self.cooldown_until = 0.0
        """A Retry-After from this server: no request goes out to it before then."""
        self._cooloffs = 0  # trips since the last success (the cool-off doubles with each)
        self._area = 0.0  # integral of ``outstanding`` over time, up to ``_last``
        self._last = clock()
        self.reset_counts()

    def reset_counts(self) -> None:
        self.sent = self.answered_count = self.errors = self.trips = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.latency_total = 0.0
        self.latencies: collections.deque[float] = collections.deque(maxlen=LATENCIES_KEPT)
        self.last_error = ""
        self.window.trace = WindowTrace(self.clock(), self.window.limit)

    # -- load ---------------------------------------------------------------------------
    def area(self) -> float:
        """The integral of requests outstanding here over time, now."""
        now = self.clock()
        return self._area + self.outstanding * (now - self._last)

    def _move(self, step: int) -> None:
        now = self.clock()
        self._area += self.outstanding * (now - self._last)
        self._last = now
        self.outstanding += step

    def room(self, all_down: bool) -> bool:
        """Whether one more request may go out here now."""
        if self.down and not all_down:
            return self.outstanding == 0 and self.clock() >= self.down_until  # a probe
        return self.outstanding < self.window.limit

    # -- outcomes -----------------------------------------------------------------------
    def succeeded(self, latency: float, prompt_tokens: int, completion_tokens: int) -> None:
        self.reached = True
        self.failures_in_row = 0
        self._cooloffs = 0
        self.down = False
        self.answered_count += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.latency_total += latency
        self.latencies.append(latency)

    def failed(
        self, reason: str, *, reached: bool, server_fault: bool, threshold: int, cooloff: float
    ) -> None:
        """One failed attempt; ``cooloff``: seconds out of the rotation if this trips it."""
        self.errors += 1
        self.last_error = reason
        if reached:
            self.reached = True
        if not server_fault:
            self.failures_in_row = 0
            return
        self.failures_in_row += 1
        never = not self.reached
        if self.down or never or self.failures_in_row >= threshold:
            if not self.down:
                self.trips += 1
            self.down = True
            self.down_until = self.clock() + cooloff * 2 ** min(self._cooloffs, 16)
            self._cooloffs += 1

    # -- report -------------------------------------------------------------------------
    def stats(self) -> EndpointStats:
        latencies = sorted(self.latencies)
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else 0.0
        window: dict[str, Any] = {"mode": self.window.mode}
        window.update(self.window.trace.summary(self.clock()))
        return EndpointStats(
            url=self.shown,
            state="down" if self.down else "up",
            requests=self.sent,
            answered=self.answered_count,
            errors=self.errors,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_mean_s=round(self.latency_total / self.answered_count, 4)
            if self.answered_count
            else 0.0,
            latency_p95_s=round(p95, 4),
            trips=self.trips,
            last_error=self.last_error,
            window=window,
        )


class Dispatcher:
    """Gives each attempt a server: fewest outstanding among those with room; else waits."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self._waiters: collections.deque[tuple[asyncio.Future[Server], Server | None]] = (
            collections.deque()
        )
        self._timer: asyncio.TimerHandle | None = None

    def all_down(self) -> bool:
        return all(s.down for s in self.servers)

    def any_up_but(self, server: Server) -> bool:
        return any(not s.down for s in self.servers if s is not server)

    def capacity(self) -> int:
        """Requests the servers take at once now (their windows; at least 1)."""
        return max(1, sum(s.window.limit for s in self.servers if not s.down) or 1)

    def _pick(self, avoid: Server | None) -> Server | None:
        all_down = self.all_down()
        best: Server | None = None
        for server in self.servers:
            if server is avoid or not server.room(all_down):
                continue
            if best is None or server.outstanding < best.outstanding:
                best = server
        if (
            best is None
            and avoid is not None
            and avoid.room(all_down)
            and not self.any_up_but(avoid)  # no other server could take it: try it again
        ):
            best = avoid
        return best

    def _take(self, server: Server) -> Server:
        server._move(1)
        server.sent += 1
        return server

    async def acquire(self, avoid: Server | None = None) -> Server:
        """A server for one attempt (a slot taken there); prefers one other than ``avoid``."""
        if not self._waiters:
            server = self._pick(avoid)
            if server is not None:
                return self._take(server)
        future: asyncio.Future[Server] = asyncio.get_running_loop().create_future()
        entry = (future, avoid)
        self._waiters.append(entry)
        self._arm()
        try:
            return await future
        except asyncio.CancelledError:
            if entry in self._waiters:
                self._waiters.remove(entry)
            elif future.done() and not future.cancelled():
                self.release(future.result())  # handed a slot just as it was cancelled
            raise

    def release(self, server: Server) -> None:
        server._move(-1)
        self.wake()

    def wake(self) -> None:
        """Hand free slots to the waiters, oldest first (one that fits nothing keeps its turn
        only for servers it can use)."""
        # Waiters that avoid the same server fit the same servers: once one of them found
        # none, the others are not asked again (a wake costs O(servers), not O(waiters)).
        full: set[Server] = set()
        for entry in list(self._waiters):
            future, avoid = entry
            if future.done():
                self._waiters.remove(entry)
                continue
            if avoid in full:
                continue
            server = self._pick(avoid)
            if server is None:
                if avoid is None:
                    break  # no server has room at all (room does not depend on ``avoid``)
                full.add(avoid)
                continue
            self._waiters.remove(entry)
            future.set_result(self._take(server))
        self._arm()

    def _arm(self) -> None:
        """Wake waiters when the next down server's cool-off ends (its probe may go out)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiters:
            return
        now = self.servers[0].clock()
        ends = [s.down_until for s in self.servers if s.down and s.down_until > now]
        if ends:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(min(ends) - now + 0.001, self.wake)
