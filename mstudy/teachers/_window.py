"""How many requests one server gets at once: a fixed window, or one that adapts.

:class:`AdaptiveWindow` is the control law (pure: no I/O, the clock passed in). What it
maximises is a *power*: ``throughput / in_flight ** e`` with ``e =`` :data:`KNEE_ELASTICITY`.
By Little's law (``in_flight = throughput * latency``) that is
``throughput ** (1 - e) / latency ** e``, Kleinrock's power with the weight on throughput; its
top is where the elasticity ``d ln(throughput) / d ln(in flight)`` falls to ``e``: on a
batching server with a knee (elasticity near 1 below it, 0 above) the knee itself; on one
that scales sublinearly (a CPU engine: elasticity ``k / (k + n)``) the window where one more
doubling buys less than 7%. Phases:

1. **Slow start.** From a small window, double it once per epoch while the elasticity from
   the last window stays at or above ``e``. A doubling that does not pay is measured once
   more before it counts (one epoch is noisy); then slow start ends at the best bucket.
2. **Steady state.** Every epoch lands in a *memory*: per bucket of window
   (:data:`BUCKETS_PER_OCTAVE` to a doubling), the average of the epochs measured there
   (log throughput, log latency per token, log in flight), older epochs fading
   (:data:`FADE` per epoch measured anywhere) so the memory follows a server that changes.
   The window cruises at the bucket of the highest power and, every :data:`PROBE_EVERY`
   epochs, probes for one epoch at :data:`PROBE_GAIN` times the cruise (and, every other
   time, below it, while the bucket under the cruise says the window buys little there); the
   probe's epoch joins the memory and the window goes to the best bucket, so a probe that
   paid is kept (and the next epoch probes on) and one that did not is undone. Buckets are
   ranked by a lower bound, their power less the epochs' measured spread over the square
   root of their weight, so one lucky epoch does not pull the window to a bucket measured
   once. Decisions rest on averages over several epochs, compared over steps of half an
   octave, not on two single noisy epochs; and a curve that flattens and climbs again is
   climbed by probes, not left where slow start stopped.
3. **Latency guard.** The cruise bucket's latency per token, plus
   :data:`LATENCY_TOLERANCE`, is the target. An epoch at the cruise or below it (not a
   probe above it) whose latency exceeds the target is not our own window's doing: another
   client loads the server. The window shrinks by the overshoot, ``target / latency``
   (between :data:`OVERLOAD` and :data:`SHRINK` an epoch, as Netflix's gradient limit does),
   and comes back by 10% (at least 1) an epoch once latency is under the target, at once
   when it is back near the cruise's own latency (the load has left). It yields at
   most :data:`YIELD` of the cruise: a client that holds more than its share of the server
   (or a server slower for everyone) cannot cut it to the floor, and the memory of the calm
   server is kept, not re-learnt under the load, where more in flight always buys a client
   more of the server's throughput and a greedy law would climb back over the others.

At any time a 429/503/529 or a timeout halves the window at once (at most once per epoch),
and the cruise with it.

An epoch is ``max(MIN_SAMPLES, window / 2)`` answers to requests sent after the window last
changed (about half a round trip: each request's own mean in flight is measured, so half a
round is enough), so each measurement sees one window; an epoch whose mean in flight is
under :data:`FULL` of the window (the caller ran short) is not remembered. Per request:
latency per output token, and the mean number in flight over its life; the epoch's
throughput estimate is Little's law, ``in flight / latency per token``. Latency per token,
not per request, so that a run whose replies vary in length (one word next to a story)
reads the server's load and not the mix.

Why not a latency gradient alone (Vegas, Netflix's ``concurrency-limits``): a batching
server's latency per token rises long before its throughput stops growing, so a latency law
stops early on a CPU engine; and an error-only AIMD never backs off a server that queues
instead of answering 429 (vLLM). Throughput decides where to be, latency guards it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "KNEE_ELASTICITY",
    "LATENCY_TOLERANCE",
    "MIN_SAMPLES",
    "AdaptiveWindow",
    "FixedWindow",
    "WindowTrace",
]

KNEE_ELASTICITY = 0.1
"""The window maximises ``throughput / in_flight ** KNEE_ELASTICITY``: it grows while a
doubling buys at least ``2 ** 0.1 - 1`` (7%) more throughput. (At 0.15, 11%, the top of vLLM's
CPU curve here sat at 33 in flight, 0.92x of 64's throughput, and one noisy epoch could drop
the window to 16, 0.80x.)"""
LATENCY_TOLERANCE = 0.25
"""The steady-state latency target: the cruise bucket's latency per token times ``1 +`` this."""
MIN_SAMPLES = 8
"""Answers an epoch needs at least, whatever the window."""
BUCKETS_PER_OCTAVE = 4
"""The memory's resolution: buckets of in flight, this many to a doubling."""
FADE = 0.9
"""Each epoch measured multiplies every older measurement's weight by this."""
MAX_WEIGHT = 4.0
"""A bucket's average gives a new epoch at least ``1 / MAX_WEIGHT`` of the weight."""
FRESH = 0.2
"""Buckets whose weight faded below this are forgotten."""
FULL = 0.75
"""An epoch counts when its mean in flight is at least this share of the window."""
PROBE_EVERY = 2
"""Epochs at the cruise window between two probes above it."""
PROBE_GAIN = 1.5
"""A probe's window, times the cruise's (or divided by it, below)."""
DOWN_ELASTICITY = 0.5
"""Probes go below the cruise too (every other one) while the bucket under it says more in
flight buys throughput slower than this."""
NOISE_PACE = 0.2
"""How fast the pooled estimate of an epoch's noise follows new deviations."""
GROW = 0.10
"""The latency guard's additive increase back to the cruise, as a share of the window."""
SHRINK = 0.80
"""The latency guard's mildest cut; its deepest is :data:`OVERLOAD`."""
OVERLOAD = 0.50
"""A 429/503/529 or a timeout multiplies the window by this."""
YIELD = 0.5
"""The latency guard shrinks the window to this share of the cruise at most."""
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
    size: float
    """The window (unrounded) the epoch's requests were sent under."""

    @property
    def throughput(self) -> float:
        return self.in_flight / self.latency


@dataclass(slots=True)
class _Cell:
    """The smoothed epochs of one bucket of in flight (logs, weighted means)."""

    weight: float
    stamp: int
    ln_n: float
    ln_size: float
    ln_t: float
    ln_l: float

    def power(self, elasticity: float) -> float:
        """``ln throughput - elasticity * ln in flight``: what the window maximises."""
        return self.ln_t - elasticity * self.ln_n


class _Memory:
    """Throughput and latency per bucket of in flight (:data:`BUCKETS_PER_OCTAVE` to a
    doubling), each an average of the epochs measured there; an epoch's weight fades by
    :data:`FADE` with each later epoch measured anywhere, so old buckets give way."""

    def __init__(self) -> None:
        self.cells: dict[int, _Cell] = {}
        self.count = 0
        self.noise: float | None = None
        """Variance of one epoch's log throughput around its bucket's average (pooled)."""

    def weight(self, cell: _Cell) -> float:
        return cell.weight * FADE ** (self.count - cell.stamp)

    def add(self, epoch: _Epoch) -> _Cell:
        self.count += 1
        ln_n = math.log(epoch.in_flight)
        key = round(math.log2(epoch.size) * BUCKETS_PER_OCTAVE)
        point = (ln_n, math.log(epoch.size), math.log(epoch.throughput), math.log(epoch.latency))
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = _Cell(1.0, self.count, *point)
            return cell
        old = min(MAX_WEIGHT - 1.0, self.weight(cell))
        # the spread of an epoch around its bucket's average: the new epoch's deviation
        # from an average of weight ``old`` has variance ``noise * (1 + 1 / old)``
        deviation = (point[2] - cell.ln_t) ** 2 / (1.0 + 1.0 / old)
        self.noise = (
            deviation if self.noise is None else self.noise + NOISE_PACE * (deviation - self.noise)
        )
        total = old + 1.0
        cell.ln_n = (cell.ln_n * old + point[0]) / total
        cell.ln_size = (cell.ln_size * old + point[1]) / total
        cell.ln_t = (cell.ln_t * old + point[2]) / total
        cell.ln_l = (cell.ln_l * old + point[3]) / total
        cell.weight, cell.stamp = total, self.count
        return cell

    def best(self, elasticity: float) -> _Cell | None:
        """The fresh bucket of the highest power less its noise, ``spread / sqrt(weight)``
        (a bucket measured once ranks below an equal one measured often); None when none."""
        fresh = [c for c in self.cells.values() if self.weight(c) >= FRESH]
        for key in [k for k, c in self.cells.items() if self.weight(c) < FRESH]:
            del self.cells[key]  # keeps the table small: at most the buckets seen lately
        spread = math.sqrt(self.noise or 0.0)
        return max(
            fresh,
            key=lambda c: c.power(elasticity) - spread / math.sqrt(self.weight(c)),
            default=None,
        )


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
        self._memory = _Memory()
        self._previous: _Cell | None = None  # slow start: the bucket of the last window
        self._confirming = False  # slow start: measuring a doubling that did not pay again
        self._cruise = self._size  # steady state: the window of the best bucket
        self._probing = False  # this epoch's window is a probe above the cruise
        self._since_probe = 0
        self._probed_down = False  # the last probe went below the cruise
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
        return self._decide(_Epoch(in_flight, per_token, self._size))

    def overloaded(self) -> bool:
        """A 429/503/529 or a timeout: halve the window (once per epoch)."""
        if self._cut_this_epoch:
            return False
        self.slow_start = self._confirming = self._probing = False
        self._since_probe = 0
        self._cruise = min(self._cruise, max(float(self.low), self._size * OVERLOAD))
        changed = self._set(self._size * OVERLOAD)
        self._cut_this_epoch = True
        return changed

    # -- the law --------------------------------------------------------------------------
    def _decide(self, now: _Epoch) -> bool:
        guarded = not self.slow_start and not (self._probing and not self._probed_down)
        if guarded and self.target is not None and now.latency > self.target:
            self._probing = False  # (a probe above the cruise raises latency itself)
            return self._yield(now.latency / self.target)
        if now.in_flight < FULL * self.limit:
            return False  # the window was not full (the caller ran short): measure again
        cell = self._memory.add(now)
        if self.slow_start:
            return self._slow_start(cell)
        if self._probing:
            self._probing = False
            changed = self._settle(cell)
            if self._cruise == self._size and not self._probed_down:
                self._since_probe = PROBE_EVERY - 1  # the probe paid: the next epoch probes on
            return changed
        if self.target is None:  # left slow start on an overload: the first steady epoch
            self._cruise = self._size
            self.target = now.latency * (1 + LATENCY_TOLERANCE)
            return False
        if self._size < self._cruise:  # coming back after cuts
            calm = self.target / (1 + LATENCY_TOLERANCE)  # the cruise's own latency
            if now.latency <= calm * (1 + LATENCY_TOLERANCE / 2):  # the load has left
                return self._set(self._cruise)
            return self._grow(self._cruise)  # some of it is still there: additive increase
        self._since_probe += 1
        if self._since_probe < PROBE_EVERY:
            return self._settle(cell)
        down = not self._probed_down and self._size > self.low and self._flat_below(cell)
        if not down and self._size >= self.high:
            return self._settle(cell)
        self._probing, self._probed_down, self._since_probe = True, down, 0
        return self._set(self._size / PROBE_GAIN if down else self._size * PROBE_GAIN)

    def _flat_below(self, cell: _Cell) -> bool:
        """Whether the nearest bucket measured below ``cell`` says the window buys little
        there (elasticity under :data:`DOWN_ELASTICITY`): the knee may be lower."""
        below = [c for c in self._memory.cells.values() if c.ln_n < cell.ln_n - 0.1]
        if not below:
            return False
        nearest = max(below, key=lambda c: c.ln_n)
        return (cell.ln_t - nearest.ln_t) / (cell.ln_n - nearest.ln_n) < DOWN_ELASTICITY

    def _slow_start(self, cell: _Cell) -> bool:
        previous = self._previous
        if previous is None or cell is previous:
            self._previous = cell
            if self.limit >= self.high:
                self.slow_start = False
                return self._settle(cell)
            return self._set(self._size * 2)
        elasticity = (cell.ln_t - previous.ln_t) / max(cell.ln_n - previous.ln_n, 0.1)
        if elasticity >= KNEE_ELASTICITY:
            self._previous, self._confirming = cell, False
            if self.limit >= self.high:
                self.slow_start = False
                return self._settle(cell)
            return self._set(self._size * 2)
        if not self._confirming:  # one epoch is noisy: measure this window once more
            self._confirming = True
            return False
        # The doubling did not pay, twice over: the knee is below. The steady state takes
        # the best bucket measured and probes from there.
        self.slow_start = self._confirming = False
        return self._settle(cell)

    def _settle(self, current: _Cell) -> bool:
        """Cruise at the bucket of the highest power (``current``, the bucket of the epoch
        just measured, keeps the window where it is); its latency sets the target."""
        best = self._memory.best(KNEE_ELASTICITY) or current
        self.target = math.exp(best.ln_l) * (1 + LATENCY_TOLERANCE)
        if best is current:
            self._cruise = self._size
            return False
        self._cruise = math.exp(best.ln_size)
        return self._set(self._cruise)

    def _yield(self, overshoot: float) -> bool:
        """Latency ``overshoot`` times the target at the cruise or below it: another client
        loads the server. Shrink by the overshoot (between :data:`OVERLOAD` and
        :data:`SHRINK`), to :data:`YIELD` of the cruise at most; the memory of the calm
        server stays, and the window grows back to the cruise once latency is under the
        target."""
        self._since_probe = 0
        factor = min(SHRINK, max(OVERLOAD, 1.0 / overshoot))
        return self._set(max(self._size * factor, min(self._size, self._cruise * YIELD)))

    def _grow(self, ceiling: float) -> bool:
        return self._set(min(ceiling, self._size + max(1.0, self._size * GROW)))

    def _set(self, size: float) -> bool:
        self._size = min(float(self.high), max(float(self.low), size))
        limit = min(self.high, int(self._size + 1e-6))  # exp(log(n)) may fall just short
        self.epoch += 1
        self._samples = []
        self._cut_this_epoch = False
        changed = limit != self.limit
        self.limit = limit
        self.trace.record(self._clock(), limit)
        return changed
