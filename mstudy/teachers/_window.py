"""How many requests one server gets at once: a fixed window, or one that adapts.

:class:`AdaptiveWindow` is the control law (pure: no I/O, the clock passed in), in two phases:

1. **Slow start.** From a small window, double it once per epoch while the server's
   throughput keeps rising with it: the *elasticity* ``d ln(throughput) / d ln(in flight)``
   stays at or above :data:`MIN_ELASTICITY`. A batching server (vLLM) scales almost linearly
   at first (elasticity near 1: its per-token latency stays flat) and not at all past its knee
   (elasticity near 0: each request just waits longer). After the first doubling that does
   not pay, the window goes to the geometric middle of the last two (the knee lies between
   them), and the per-token latency of the smaller one, plus :data:`LATENCY_TOLERANCE`,
   becomes the latency target.
2. **Steady state (AIMD on latency, with a throughput check).** Each epoch the window grows
   by 10% (at least 1) while per-token latency stays under the target. When latency climbs
   above it, the law asks whether the climb paid: if the window holds at least 20% more in
   flight than the epoch the target came from, and throughput grew with it at elasticity
   :data:`PROBE_ELASTICITY` or more, the climb is ours and worth it (a server that scales
   sublinearly, such as a CPU engine whose per-token latency grows with every batch): the
   target is re-based there and the window keeps growing. Otherwise (past the knee, or
   another client loads the server: our throughput did not rise) it shrinks by 20%. When
   three cuts in a row did not bring latency down, the climb is not ours: the target is
   re-based on the latency now. Without the check, one noisy slow-start epoch (or an early
   overload) left the target at a small window's latency and held the window below the
   knee for good.

At any time a 429/503/529 or a timeout halves the window at once (at most once per epoch).

An epoch is ``max(MIN_SAMPLES, window / 2)`` answers to requests sent after the window last
changed (about half a round trip: each request's own mean in flight is measured, so half a
round is enough, and slow start reaches a large knee in half the requests), so each
measurement sees one window. Per request: latency
per output token, and the mean number in flight over its life; the epoch's throughput
estimate is Little's law, ``in flight / latency per token``. Latency per token, not per
request, so that a run whose replies vary in length (one word next to a story) reads the
server's load and not the mix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "LATENCY_TOLERANCE",
    "MIN_ELASTICITY",
    "MIN_SAMPLES",
    "AdaptiveWindow",
    "FixedWindow",
    "WindowTrace",
]

MIN_ELASTICITY = 0.25
"""Slow start goes on while throughput grows at least this fast with the window (log-log)."""
LATENCY_TOLERANCE = 0.25
"""The steady-state latency target: the knee's latency per token times ``1 +`` this."""
MIN_SAMPLES = 8
"""Answers an epoch needs at least, whatever the window."""
GROW = 0.10
SHRINK = 0.80
OVERLOAD = 0.50
STALE_CUTS = 3
PROBE_STEP = math.log(1.2)
"""In flight must have grown this much (log) over the target's epoch to judge a latency rise."""
PROBE_ELASTICITY = 0.15
"""A latency rise past the target is kept (the target re-based) while throughput grows at
least this fast with the window: a doubling buys >= 11% more."""
MAX_POINTS = 256
"""Window changes kept in a trace's series (older ones are thinned out)."""


class WindowTrace:
    """The window over time: a compact series and its time-weighted summary."""

    def __init__(self, start: float, value: int) -> None:
        self.start = start
        self.points: list[tuple[float, int]] = [(0.0, value)]
        self.low = self.high = value
        self._area = 0.0  # integral of the window over time, up to ``_last``
        self._last = start
        self._value = value

    def record(self, now: float, value: int) -> None:
        if value == self._value:
            return
        self._area += self._value * max(0.0, now - self._last)
        self._last, self._value = now, value
        self.low, self.high = min(self.low, value), max(self.high, value)
        self.points.append((round(now - self.start, 3), value))
        if len(self.points) > MAX_POINTS:  # keep the first and last, every other one between
            self.points = [self.points[0], *self.points[1:-1:2], self.points[-1]]

    def summary(self, now: float) -> dict[str, float | int | list[list[float]]]:
        """``min``, ``max``, ``final``, time-weighted ``mean``, ``seconds`` and ``series``."""
        seconds = max(0.0, now - self.start)
        area = self._area + self._value * max(0.0, now - self._last)
        mean = area / seconds if seconds > 0 else float(self._value)
        return {
            "min": self.low,
            "max": self.high,
            "final": self._value,
            "mean": round(mean, 3),
            "seconds": round(seconds, 3),
            "series": [[t, v] for t, v in self.points],
        }


class FixedWindow:
    """A window that stays at ``size``; the adaptive window's interface, doing nothing."""

    mode = "fixed"

    def __init__(self, size: int, clock: Callable[[], float]) -> None:
        self.limit = size
        self.trace = WindowTrace(clock(), size)
        self.epoch = 0

    def sent(self) -> int:
        return 0

    def answered(self, epoch: int, latency: float, tokens: int, in_flight: float) -> bool:
        return False

    def overloaded(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class _Epoch:
    in_flight: float
    latency: float
    """Seconds per output token."""

    @property
    def throughput(self) -> float:
        return self.in_flight / self.latency


class AdaptiveWindow:
    """The control law above, between ``low`` and ``high`` (inclusive), from ``start``.

    The owner calls :meth:`sent` when it sends a request (it returns the epoch to hand back),
    :meth:`answered` with each answer's latency, output tokens and mean number in flight,
    and :meth:`overloaded` on a 429/503/529 or a timeout; it reads :attr:`limit`. Those
    calls return whether the limit changed.
    """

    mode = "adaptive"

    def __init__(
        self, low: int, high: int, clock: Callable[[], float], start: int | None = None
    ) -> None:
        if not 1 <= low <= high:
            raise ValueError(f"need 1 <= low <= high, got {low}, {high}")
        self.low, self.high = low, high
        self._clock = clock
        self._size = float(min(high, max(low, start if start is not None else min(4, high))))
        self.limit = int(self._size)
        self.trace = WindowTrace(clock(), self.limit)
        self.epoch = 0
        self.slow_start = True
        self.target: float | None = None
        """Seconds per output token the steady state keeps under (None in slow start)."""
        self._samples: list[tuple[float, int, float]] = []
        self._previous: _Epoch | None = None
        self._reference: _Epoch | None = None  # the epoch the latency target was taken from
        self._cuts: list[_Epoch] = []  # epochs that ended in a latency cut, in a row
        self._cut_this_epoch = False

    # -- events ---------------------------------------------------------------------------
    def sent(self) -> int:
        return self.epoch

    def answered(self, epoch: int, latency: float, tokens: int, in_flight: float) -> bool:
        """Count one answer of a request sent in ``epoch``; True when the window changed."""
        if epoch != self.epoch or not (latency > 0 and math.isfinite(latency)):
            return False
        self._samples.append((latency, max(1, tokens), max(1.0, in_flight)))
        if len(self._samples) < max(MIN_SAMPLES, (self.limit + 1) // 2):
            return False
        samples, self._samples = self._samples, []
        total_latency = sum(s[0] for s in samples)
        per_token = total_latency / sum(s[1] for s in samples)
        in_flight = sum(s[0] * s[2] for s in samples) / total_latency  # time-weighted
        return self._decide(_Epoch(in_flight, per_token))

    def overloaded(self) -> bool:
        """A 429/503/529 or a timeout: halve the window (once per epoch)."""
        if self._cut_this_epoch:
            return False
        self.slow_start = False
        changed = self._set(self._size * OVERLOAD)
        self._cut_this_epoch = True
        return changed

    # -- the law --------------------------------------------------------------------------
    def _decide(self, now: _Epoch) -> bool:
        previous, self._previous = self._previous, now
        app_limited = now.in_flight < 0.5 * self.limit
        if self.slow_start:
            if app_limited:
                return False
            if previous is None:
                return self._set(self._size * 2)
            step = math.log(now.in_flight / previous.in_flight)
            if step < 0.1:  # in flight did not grow: at the upper bound, or measure again
                if self.limit >= self.high:
                    self.slow_start = False
                    self._rebase(now)
                return False
            elasticity = math.log(now.throughput / previous.throughput) / step
            if elasticity >= MIN_ELASTICITY:
                return self._set(self._size * 2)
            # The last doubling did not pay: the knee lies between the two windows. Go to
            # their geometric middle; the steady state explores from there.
            self.slow_start = False
            self._rebase(previous)
            return self._set(self._size / math.sqrt(2))
        if self._reference is None:  # left slow start on an overload: the first steady epoch
            self._rebase(now)
        assert self._reference is not None and self.target is not None
        if now.latency > self.target:
            if self._paid(now, self._reference):
                # Latency rose with our own window and bought throughput for it: the knee is
                # further up (a server that scales sublinearly). Measure from here.
                self._rebase(now)
                self._cuts.clear()
                return False if app_limited else self._grow()
            self._cuts.append(now)
            if len(self._cuts) > STALE_CUTS and now.latency >= 0.9 * self._cuts[0].latency:
                self._rebase(now)  # not our doing: the server got slower for everyone
                self._cuts.clear()
                return False
            return self._set(self._size * SHRINK)
        self._cuts.clear()
        if app_limited:
            return False
        return self._grow()

    def _grow(self) -> bool:
        return self._set(self._size + max(1.0, self._size * GROW))

    def _rebase(self, reference: _Epoch) -> None:
        self._reference = reference
        self.target = reference.latency * (1 + LATENCY_TOLERANCE)

    @staticmethod
    def _paid(now: _Epoch, reference: _Epoch) -> bool:
        """Whether ``now`` holds clearly more in flight than ``reference`` and its throughput
        grew with it at least :data:`PROBE_ELASTICITY` fast (log-log)."""
        step = math.log(now.in_flight / reference.in_flight)
        if step < PROBE_STEP:
            return False
        return math.log(now.throughput / reference.throughput) / step >= PROBE_ELASTICITY

    def _set(self, size: float) -> bool:
        self._size = min(float(self.high), max(float(self.low), size))
        limit = int(self._size)
        self.epoch += 1
        self._samples = []
        self._cut_this_epoch = False
        changed = limit != self.limit
        self.limit = limit
        self.trace.record(self._clock(), limit)
        return changed
