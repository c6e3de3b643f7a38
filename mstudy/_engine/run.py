"""``StudyRun``: one pass of a study over a source, the stages chained top to bottom.

:meth:`StudyRun._run` asks the teacher for completions, round after round, over the
requests :meth:`_requests` admits; each completion is parsed into its record's slot
(:meth:`_receive`); finished records leave the window in source order (:meth:`_emit`) and
are filtered, counted and handed on (:meth:`_decide`). A teacher that parses in its workers
(:mod:`.placement`) sends each reply parsed, its leading per-record filters applied.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from mstudy.errors import TeacherError
from mstudy.interfaces import ReportsEndpoints
from mstudy.lineage import read_lineage
from mstudy.offload import Parsed
from mstudy.records import Completion, Example, Rejection, Request
from mstudy.report import FilterStats, Report
from mstudy.rounds import Retrying

from .filtering import FilterChain
from .outcomes import Outcomes
from .parsing import parse, unanswered, usable
from .placement import Placement
from .progress import Progress
from .reading import Item, read_items
from .rendering import render
from .retry import next_round
from .slots import Pending, Slot
from .window import Window

if TYPE_CHECKING:
    from mstudy.study import Study

LOOKAHEAD = 256
"""Source items looked up in the outcome memo together."""
READY_CHUNK = 256
"""Finished records (nothing in flight) handed on before more of the source is read."""


class StudyRun(Iterator[Example | Rejection]):
    """One pass of a study over a source: iterate it for Examples and Rejections.

    ``skip``/``skip_last_id`` resume a journaled run after the items it already decided;
    ``report`` carries its counts on.
    """

    def __init__(
        self,
        study: Study,
        source: Any,
        *,
        limit: int | None = None,
        skip: int = 0,
        skip_last_id: str | None = None,
        report: Report | None = None,
    ) -> None:
        self.study = study
        self.source = source
        self.limit = limit
        self.skip = skip
        self.skip_last_id = skip_last_id
        self.items_done = skip
        self.last_id: str | None = skip_last_id
        self.report = report if report is not None else Report()
        self.stop_reason: str | None = None
        """Set when the run stopped before the end of the source (a spent budget)."""
        self.on_boundary: Callable[[], None] | None = None
        """Called between two source items, when everything before is yielded and consumed."""
        study.last_report = self.report
        for strategy in study.strategies:
            self.report.strategy(strategy.name)
        for filt in study.filters:
            self.report.filters.setdefault(filt.name, FilterStats())
        self._teacher_fingerprint = study.teacher.fingerprint
        if isinstance(study.teacher, ReportsEndpoints):
            study.teacher.endpoint_stats(reset=True)  # this run's counts start here
        self._window = Window()
        self._filters = FilterChain(study.filters, self.report)
        self._placement = Placement.of(study.teacher, study.strategies, study.filters)
        self._outcomes = Outcomes.of(study.cache, self._teacher_fingerprint, study.strategies)
        self._ahead: deque[tuple[Item, str | None, Slot | None]] = deque()
        self._retry: deque[Pending] = deque()
        """Requests of records asked again, to send before more of the source is read."""
        self._retrying = any(isinstance(s, Retrying) for s in study.strategies)
        self._exhausted = False
        self._items = self._run()

    def __iter__(self) -> Iterator[Example | Rejection]:
        return self._items  # the generator itself: no Python call per row

    def __next__(self) -> Example | Rejection:
        return next(self._items)

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> Iterator[Example | Rejection]:
        """Rounds of teacher calls until the source is done or the budget is spent."""
        report = self.report
        self._source = read_items(
            self.source,
            id_field=self.study.id_field,
            limit=self.limit,
            skip=self.skip,
            skip_last_id=self.skip_last_id,
        )
        self._progress = Progress(self.study.progress, self.source, self.limit, self.skip, report)
        try:
            while self.stop_reason is None and (not self._exhausted or self._retry):
                yield from self._round()
            if self.stop_reason is not None:
                report.note = f"stopped early: {self.stop_reason}"
                report.finish("stopped")
            else:
                report.finish("done")
        except GeneratorExit:
            report.finish("stopped")
            raise
        except BaseException:
            report.finish("failed")
            raise
        finally:
            self._note_endpoints()
            self._commit_cache()
            self._progress.close()

    def _note_endpoints(self) -> None:
        if isinstance(self.study.teacher, ReportsEndpoints):
            self.report.set_endpoints(self.study.teacher.endpoint_stats())

    def _round(self) -> Iterator[Example | Rejection]:
        """One ``generate`` call over the requests the window admits; records are handed on
        as they finish. Requests the teacher never answered are rejected at the end."""
        placement = self._placement
        answers: Iterator[Completion | Parsed] = (
            self.study.teacher.generate(self._requests())
            if placement is None
            else placement.generate(self._entries())
        )
        for answer in answers:
            if isinstance(answer, Parsed):
                self._receive(answer.completion, answer)
            else:
                self._receive(answer)
            if self._window.head_finished:
                yield from self._emit()
            if self.stop_reason is not None:
                if isinstance(answers, Generator):
                    answers.close()
                return
        for entry in self._window.unanswered():
            entry.complete(unanswered(entry), None)
        self._note_endpoints()
        self._commit_cache()
        yield from self._emit()

    # -- admitting records ----------------------------------------------------------------

    def _requests(self) -> Iterator[Request]:
        """Requests for the teacher (those of :meth:`_entries`)."""
        return (entry.request for entry in self._entries())

    def _entries(self) -> Iterator[Pending]:
        """Entries whose requests go to the teacher, record by record; stops early when too
        many records wait in the window, or when all of them are finished (so they are
        handed on)."""
        window, backlog, retry = self._window, self.study.max_backlog, self._retry
        while True:
            while retry:  # records asked again go first: they hold the head of the line
                entry = retry.popleft()
                if window.send(entry) is not None:
                    yield entry
            if len(window) >= backlog:
                return
            if not window.waiting and len(window) >= READY_CHUNK:
                return
            slot, entries = self._admit()
            if slot is None:
                self._exhausted = True
                return
            window.add(slot)
            to_send = [entry for entry in entries if window.send(entry) is not None]
            slot.sealed = True
            yield from to_send

    def _admit(self) -> tuple[Slot | None, list[Pending]]:
        """The next source item's slot and its requests not answered by the call cache."""
        if not self._ahead:
            self._read_ahead()
            if not self._ahead:
                return None, []
        item, outcome_key, stored = self._ahead.popleft()
        if isinstance(item, Rejection):
            return Slot.rejected(item), []
        lineage, field, problem = read_lineage(item)
        if lineage is None:
            detail = f"record {item.id!r}: field {field!r} {problem}"
            rejection = Rejection(item.id, "input", "invalid_lineage", detail, None, field)
            return Slot.rejected(rejection), []
        if stored is not None:
            stored.lineage = lineage
            return stored, []
        slot, entries = render(item, self.study.strategies)
        slot.lineage = lineage
        slot.outcome_key = outcome_key
        return slot, self._answer_from_cache(entries)

    def _read_ahead(self) -> None:
        """Read the next source item; with an outcome memo, the next ``LOOKAHEAD`` items,
        looked up together. (Without one, nothing is read before the teacher asks.)"""
        if self._outcomes is None:
            self._ahead.extend((item, None, None) for item in itertools.islice(self._source, 1))
            return
        chunk = list(itertools.islice(self._source, LOOKAHEAD))
        self._ahead.extend(self._outcomes.look_up(chunk))

    def _answer_from_cache(self, entries: list[Pending]) -> list[Pending]:
        """Complete the entries whose calls are stored; the others, still to ask."""
        cache = self.study.cache
        if cache is None or not entries:
            return entries
        hits = cache.get_many(self._teacher_fingerprint, [e.request.key for e in entries])
        if not hits:
            return entries
        rest = []
        for entry in entries:
            hit = hits.get(entry.request.key)
            if hit is None:
                rest.append(entry)
            else:
                entry.complete(parse(entry, hit), hit)
        return rest

    # -- receiving completions ------------------------------------------------------------

    def _receive(self, completion: Completion, parsed: Parsed | None = None) -> None:
        """Store ``completion`` in the call cache and parse it for every entry waiting;
        ``parsed``: the parse result of the entry that sent it, made where the teacher ran."""
        completion = usable(completion)
        entries = self._window.answer(completion.key)
        if entries is None:
            raise TeacherError(
                f"teacher {self.study.teacher.name!r} returned a completion for an "
                f"unknown request key {completion.key!r}"
            )
        cache = self.study.cache
        if cache is not None:  # committed within a second (CallCache.commit_seconds)
            cache.put(self._teacher_fingerprint, completion)
        if parsed is not None and parsed.items is not None:
            entries[0].complete(parsed.items, completion, parsed.trail)  # the one sent
            entries = entries[1:]
        for entry in entries:
            entry.complete(parse(entry, completion), completion)

    def _commit_cache(self) -> None:
        if self.study.cache is not None:
            self.study.cache.commit()

    # -- handing records on ---------------------------------------------------------------

    def _emit(self) -> Iterator[Example | Rejection]:
        """Finished records from the window's head, in source order, until the budget is
        spent; ``on_boundary`` runs before each (everything earlier is consumed by then)."""
        window, budget = self._window, self.study.budget
        while window.head_finished:
            if window.head.round == 0:  # a record asked again is not a boundary
                if budget is not None and self.stop_reason is None:
                    report = self.report
                    self.stop_reason = budget.exceeded(
                        report.spent_prompt_tokens, report.spent_completion_tokens
                    )
                if self.stop_reason is not None:
                    return
                if self.on_boundary is not None:
                    self.on_boundary()
            slot = window.pop()
            decided = self._decide(slot)
            if decided is None:  # asked again: it waits at the head for its next round
                window.push_front(slot)
                continue
            yield from decided
            self.items_done += 1
            self.last_id = slot.item_id
            self._progress.advance()

    def _decide(self, slot: Slot) -> list[Example | Rejection] | None:
        """Count a finished record, store its outcome and filter its results; None when a
        strategy asks again for it (:mod:`mstudy.rounds`)."""
        report = self.report
        if slot.record is not None and slot.round == 0:
            report.records += 1
        for name, count in slot.requests.items():
            report.strategy(name).requests += count
        for name, completion in slot.completions:
            report.count_completion(name, completion)
        if slot.cached_calls:
            report.count_cached(slot.cached_calls)
        if self._outcomes is not None:
            self._outcomes.store(slot)
        results = slot.results
        items = [item for key in sorted(results) for item in results[key]]
        if slot.record is not None:
            child, record_id = slot.lineage.child, slot.item_id
            for item in items:
                if isinstance(item, Example):
                    child(record_id, item)
        if self._filters:
            placement, trails = self._placement, slot.trails
            given = placement.given(results, trails) if placement and trails else []
            items = self._filters.apply(items, given)
        slot.trails = {}
        stats = report.strategies
        for item in items:
            if isinstance(item, Example):
                name = item.provenance.strategy
                (stats.get(name) or report.strategy(name)).accepted += 1
            else:
                report.count_rejection(item)
        if self._retrying and slot.record is not None:
            entries = next_round(slot, items, self.study.strategies, report)
            if entries is not None:
                slot.held.extend(items)
                self._retry.extend(self._answer_from_cache(entries))
                return None
        if slot.held:
            items = [*slot.held, *items]
        return items
