"""Checkpoints of a journaled run: decided rows spooled, then position, report and filter
state made durable together (:mod:`mstudy._journal`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from mstudy._journal import Journal
from mstudy.cache import CallCache
from mstudy.interfaces import Filter, Stateful
from mstudy.records import Example, Rejection
from mstudy.sinks.jsonl import dumps_row

from .run import StudyRun

SAVE_SHARE = 20
"""Checkpoints are spaced to at least this many times the last one's duration (~5%)."""


class Checkpointer:
    """Spools a run's rows and saves a checkpoint at record boundaries, every ``every``
    seconds at least (more rarely when saving the filters' growing state gets slow)."""

    def __init__(
        self,
        journal: Journal,
        run: StudyRun,
        filters: Sequence[Filter],
        cache: CallCache | None,
        every: float,
    ) -> None:
        self._journal, self._run, self._cache = journal, run, cache
        self._filters = [f for f in filters if isinstance(f, Stateful)]
        self._every = self._interval = every
        self._lines: dict[str, list[bytes]] = {"accepted": [], "rejects": []}
        self._saved_at, self._saved_items = time.monotonic(), run.items_done

    def spool(self, item: Example | Rejection) -> None:
        """Buffer a decided row for its spool (written at the next checkpoint)."""
        kind = "accepted" if isinstance(item, Example) else "rejects"
        self._lines[kind].append(dumps_row(item.to_row()))

    def at_boundary(self) -> None:
        """Save when the interval has passed and something was decided since the last save."""
        run = self._run
        if run.items_done == self._saved_items:
            return
        if time.monotonic() - self._saved_at < self._interval:
            return
        began = time.monotonic()
        self.save()
        self._saved_at, self._saved_items = time.monotonic(), run.items_done
        self._interval = max(self._every, SAVE_SHARE * (self._saved_at - began))

    def save(self, phase: str = "studying") -> None:
        """Spools appended, the call cache committed, then the checkpoint replaced."""
        journal = self._journal
        for name, lines in self._lines.items():
            journal.append(name, lines)
            lines.clear()
        if self._cache is not None:
            self._cache.commit()
        run = self._run
        journal.checkpoint(
            items_done=run.items_done,
            last_id=run.last_id,
            report=run.report,
            filter_states={f.name: f.get_state() for f in self._filters},
            phase=phase,
        )
