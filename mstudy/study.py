"""``Study``: composes a teacher, strategies, filters and sinks, and runs the data path.

::

    source -> Record -> Strategy.requests -> Teacher.generate -> Strategy.parse -> Filters -> Sinks

The loop streams: records are read only as fast as the teacher asks for requests, so memory
holds the teacher's window, not the dataset. Completions may come back in any order; each is
matched to its request by key, and rows are emitted in source order. Identical requests in
flight together are sent once; with a cache, stored calls are not made again.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mstudy import memo
from mstudy.budget import Budget, Estimate, count_prompt_tokens
from mstudy.cache import CallCache
from mstudy.errors import ConfigError, MstudyError, RecordError, TeacherError, TemplateError
from mstudy.hashing import stable_hash
from mstudy.interfaces import Filter, Sink, Strategy, Teacher
from mstudy.records import Completion, Example, Record, Rejection, Request
from mstudy.report import FilterStats, Report, StrategyStats
from mstudy.sinks.base import BaseSink

if TYPE_CHECKING:
    import datasets

log = logging.getLogger("mstudy")

Source = Any
"""An iterable of dicts, a ``datasets.Dataset``/``IterableDataset``, a JSONL/Parquet path."""

WRITE_CHUNK = 256


MEMO_LOOKAHEAD = 256
"""Source items whose stored outcomes are looked up together (with a call cache)."""
READY_CHUNK = 256
"""Decided records (nothing in flight) that are emitted before more of the source is read."""


@dataclass(slots=True)
class _Slot:
    """One source item on its way through: results wait here until all requests are back."""

    item_id: str
    record: Record | None
    outstanding: int = 0
    sealed: bool = False
    results: dict[tuple[int, int], list[Example | Rejection]] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    completions: list[tuple[str, Completion]] = field(default_factory=list)
    memo_key: str | None = None
    """Where this record's outcome is memoised (see :mod:`mstudy.memo`); None when it is not."""
    memo_hit: bool = False
    cached_calls: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    """Calls per strategy read back with a memoised outcome: (calls, prompt, completion tokens)."""


@dataclass(slots=True)
class _Pending:
    slot: _Slot
    s_index: int
    r_index: int
    strategy: Strategy
    request: Request

    @property
    def record(self) -> Record:
        assert self.slot.record is not None
        return self.slot.record


def _build(kind: str, spec: Any) -> Any:
    if isinstance(spec, str):
        from mstudy import plugins

        return plugins.create(kind, spec)
    return spec


def _as_sink(spec: Sink | str | Path) -> Sink:
    if isinstance(spec, Path) or (isinstance(spec, str) and spec.endswith((".jsonl", ".parquet"))):
        path = Path(spec)
        if path.suffix == ".parquet":
            from mstudy.sinks.parquet import ParquetSink

            return ParquetSink(path)
        from mstudy.sinks.jsonl import JSONLSink

        return JSONLSink(path)
    built: Sink = _build("sinks", spec)
    return built


class Study:
    """A teacher studying a dataset with strategies; filters select, sinks store.

    Args:
        teacher: a Teacher object or a plugin name (``"scripted"``, ``"default"``, ...).
        strategies: Strategy objects or plugin names.
        filters: Filter objects or plugin names, applied in order to every example.
        sinks: where accepted rows go: Sink objects, plugin names, or ``.jsonl``/``.parquet``
            paths.
        rejects: where rejected rows go (same forms). Rejections are always counted in the
            report, with a few samples per reason, whether or not this is set.
        id_field: the record field holding a stable id (a content hash when absent).
        progress: show a progress bar; ``None`` shows one when stderr is a terminal.
        cache: a :class:`~mstudy.cache.CallCache` or a path to one: stored teacher calls are
            never made again, across strategies, studies and runs.
        max_backlog: how many records may wait for emission before the study stops reading
            ahead (bounds memory while a slow request holds the head of the line).
        journal: a directory that makes ``run`` resumable: killed at any instant and run
            again, it goes on where it stopped and writes every row exactly once (see
            :mod:`mstudy.journal`). Implies a call cache in that directory unless ``cache``
            is given.
        checkpoint_every: seconds between journal checkpoints (at least: when saving the
            filters' state gets slow, checkpoints are spaced so it stays ~5% of the run).
        budget: a :class:`~mstudy.budget.Budget` of tokens or money; once spent, the run stops
            cleanly after the current record (with a journal, a later run goes on).

    Output order is deterministic: records in source order, strategies in the given order,
    samples by index, whatever order the teacher answers in.
    """

    def __init__(
        self,
        teacher: Teacher | str,
        strategies: Sequence[Strategy | str],
        filters: Sequence[Filter | str] = (),
        sinks: Sequence[Sink | str | Path] = (),
        rejects: Sink | str | Path | None = None,
        *,
        id_field: str = "id",
        progress: bool | None = None,
        cache: CallCache | str | Path | None = None,
        max_backlog: int = 4096,
        journal: str | Path | None = None,
        checkpoint_every: float = 2.0,
        budget: Budget | None = None,
    ) -> None:
        self.teacher: Teacher = _build("teachers", teacher)
        if isinstance(strategies, (str, bytes)) or not isinstance(strategies, Sequence):
            raise TypeError("strategies must be a list of strategies or names")
        if not strategies:
            raise ValueError("a study needs at least one strategy")
        self.strategies: list[Strategy] = [_build("strategies", s) for s in strategies]
        names = [s.name for s in self.strategies]
        if len(set(names)) != len(names):
            raise ValueError(f"two strategies share a name: {names}; give each a distinct name")
        self.filters: list[Filter] = [_build("filters", f) for f in filters]
        self._sink_specs = list(sinks)
        self._rejects_spec = rejects
        self.id_field = id_field
        self.progress = progress
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be >= 1, got {max_backlog}")
        self.max_backlog = max_backlog
        self.cache: CallCache | None = CallCache(cache) if isinstance(cache, (str, Path)) else cache
        self.journal = Path(journal) if journal is not None else None
        self.checkpoint_every = checkpoint_every
        self.budget = budget
        self.last_report: Report | None = None

    def __repr__(self) -> str:
        return (
            f"Study(teacher={self.teacher!r}, strategies={[s.name for s in self.strategies]}, "
            f"filters={[f.name for f in self.filters]})"
        )

    # -- running --------------------------------------------------------------------------

    def stream(self, source: Source, *, limit: int | None = None) -> StudyRun:
        """Examples and Rejections as they are decided; ``.report`` fills in as it goes.

        Each run starts afresh: filters that remember what they saw (``dedup``) are reset.
        """
        self._reset_filters()
        return StudyRun(self, source, limit=limit)

    def _reset_filters(self) -> None:
        """Forget what stateful filters saw in an earlier run (those with ``reset()``)."""
        for filt in self.filters:
            reset = getattr(filt, "reset", None)
            if callable(reset):
                reset()

    def iter(self, source: Source, *, limit: int | None = None) -> Iterator[Example]:
        """Accepted examples, streamed. Rejections are counted in ``study.last_report``."""
        run = self.stream(source, limit=limit)
        for item in run:
            if isinstance(item, Example):
                yield item

    def estimate(self, source: Source, *, limit: int | None = None) -> Estimate:
        """A dry run: the requests a run would make and their tokens, without calling the teacher.

        Prompt tokens are counted with the teacher's ``count_prompt_tokens`` when it has one
        (the local teacher does), else estimated as characters / 4; completion tokens are the
        ``max_new_tokens`` upper bound.
        """
        from mstudy.sources import iter_source

        counter = getattr(self.teacher, "count_prompt_tokens", None)
        estimate = Estimate(budget=self.budget)
        if callable(counter):
            estimate.tokens_counted_by = f"the {self.teacher.name} teacher's tokenizer"
        else:
            counter = None
        fingerprint = self.teacher.fingerprint
        items = iter_source(source, id_field=self.id_field)
        for item in itertools.islice(items, limit) if limit is not None else items:
            if isinstance(item, Rejection):
                estimate.rejected_inputs += 1
                continue
            estimate.records += 1
            for strategy in self.strategies:
                try:
                    batch = strategy.requests(item)
                except (RecordError, TemplateError, ValueError):
                    continue
                for request in batch:
                    if self.cache is not None and self.cache.get(fingerprint, request.key):
                        estimate.cached += 1
                        continue
                    estimate.requests += 1
                    estimate.per_strategy[strategy.name] = (
                        estimate.per_strategy.get(strategy.name, 0) + 1
                    )
                    estimate.prompt_tokens += count_prompt_tokens([request], counter)
                    estimate.max_completion_tokens += request.params.max_new_tokens
        return estimate

    def fingerprint(self, limit: int | None = None) -> dict[str, Any]:
        """What determines this study's rows; a resumed run must match it."""
        return {
            "teacher": self.teacher.fingerprint,
            "strategies": [_fingerprint(s) for s in self.strategies],
            "filters": [_fingerprint(f) for f in self.filters],
            "id_field": self.id_field,
            "limit": limit,
        }

    def run(self, source: Source, *, limit: int | None = None, restart: bool = False) -> Report:
        """Run the study, writing accepted rows to the sinks and rejections to ``rejects``.

        Sinks are committed only when the run completes; on an error they are aborted (no
        half-written file at the target path) and the error is raised. With a ``journal``,
        a rerun after a crash resumes; ``restart=True`` discards the journal first.
        """
        if self.journal is not None:
            return self._run_journaled(source, limit, restart)
        sinks = [_as_sink(s) for s in self._sink_specs]
        rejects = _as_sink(self._rejects_spec) if self._rejects_spec is not None else None
        opened: list[Sink] = [*sinks, *([rejects] if rejects is not None else [])]
        run = self.stream(source, limit=limit)
        accepted: list[Example] = []
        rejected: list[Rejection] = []
        try:
            for item in run._items:  # the generator itself: no method call a row
                if isinstance(item, Example):
                    accepted.append(item)
                    if len(accepted) >= WRITE_CHUNK:
                        _write(sinks, accepted)
                elif rejects is not None:
                    rejected.append(item)
                    if len(rejected) >= WRITE_CHUNK:
                        _write([rejects], rejected)
            _write(sinks, accepted)
            if rejects is not None:
                _write([rejects], rejected)
            for sink in opened:
                sink.close()
        except BaseException:
            run.report.finish("failed")
            for sink in opened:
                try:
                    sink.abort()
                except Exception:  # keep the original error
                    log.exception("could not abort sink %r", sink)
            raise
        return run.report

    def _run_journaled(self, source: Source, limit: int | None, restart: bool) -> Report:
        from mstudy.journal import Journal
        from mstudy.sinks.jsonl import dumps_example, dumps_row

        assert self.journal is not None
        journal = Journal(self.journal, self.fingerprint(limit), restart=restart)
        if self.cache is None:
            self.cache = CallCache(journal.directory / "calls.sqlite")
        state = journal.state
        if state is None or state.phase == "studying":
            self._reset_filters()
            for filt in self.filters:
                saved = state.filter_states.get(filt.name) if state else None
                if saved is not None and hasattr(filt, "set_state"):
                    filt.set_state(saved)
            if state is not None and state.report is not None:
                state.report.resume()
            run = StudyRun(
                self,
                source,
                limit=limit,
                skip=state.items_done if state else 0,
                skip_last_id=state.last_id if state else None,
                report=state.report if state else None,
            )
            journal.open_spools()
            lines: dict[str, list[bytes]] = {"accepted": [], "rejects": []}
            saved_at, saved_items = time.monotonic(), run.items_done

            def save(phase: str = "studying") -> None:
                for name, chunk in lines.items():
                    journal.append(name, chunk)
                    chunk.clear()
                if self.cache is not None:
                    self.cache.commit()
                journal.checkpoint(
                    items_done=run.items_done,
                    last_id=run.last_id,
                    report=run.report,
                    filter_states={
                        f.name: f.get_state() for f in self.filters if hasattr(f, "get_state")
                    },
                    phase=phase,
                )

            interval = self.checkpoint_every

            def at_boundary() -> None:
                nonlocal saved_at, saved_items, interval
                if run.items_done != saved_items and time.monotonic() - saved_at >= interval:
                    began = time.monotonic()
                    save()
                    saved_at, saved_items = time.monotonic(), run.items_done
                    # A checkpoint holds the filters' state, which grows with the run (dedup's
                    # hashes): space them so that saving takes at most ~5% of the time.
                    interval = max(self.checkpoint_every, 20 * (saved_at - began))

            run.on_boundary = at_boundary
            try:
                for item in run:
                    if isinstance(item, Example):
                        lines["accepted"].append(dumps_example(item))
                    else:
                        lines["rejects"].append(dumps_row(item.to_row()))
                stopped = run.stop_reason is not None
                save("studying" if stopped else "sinking")
            finally:
                journal.close_spools()
        else:
            stopped = False
        assert journal.state is not None and journal.state.report is not None
        report = journal.state.report
        self.last_report = report
        sinks = [_as_sink(s) for s in self._sink_specs]
        rejects = _as_sink(self._rejects_spec) if self._rejects_spec is not None else None
        opened: list[Sink] = [*sinks, *([rejects] if rejects is not None else [])]
        try:
            _copy(journal.rows("accepted"), sinks)
            if rejects is not None:
                _copy(journal.rows("rejects"), [rejects])
            for sink in opened:
                sink.close()
        except BaseException:
            for sink in opened:
                try:
                    sink.abort()
                except Exception:  # keep the original error
                    log.exception("could not abort sink %r", sink)
            raise
        if stopped:  # a spent budget: the rows so far are written, the journal goes on
            return report
        journal.remove()
        if self.cache is not None and self.cache.path.parent == journal.directory:
            self.cache.close()
            self.cache = None
        return report

    def to_dataset(self, source: Source, *, limit: int | None = None) -> datasets.Dataset:
        """Run the study (sinks included) and also return the accepted rows as a Dataset."""
        from mstudy.sinks.hf import DatasetSink

        sink = DatasetSink()
        self._sink_specs.append(sink)
        try:
            self.run(source, limit=limit)
        finally:
            self._sink_specs.remove(sink)
        return sink.dataset


def _fingerprint(component: Any) -> str:
    """A component's own fingerprint, else a hash of its class and public settings."""
    own = getattr(component, "fingerprint", None)
    if isinstance(own, str):
        return own
    settings = {k: repr(v) for k, v in sorted(vars(component).items()) if not k.startswith("_")}
    kind = type(component)
    return stable_hash([f"{kind.__module__}.{kind.__qualname__}", settings])


def _copy(rows: Iterator[dict[str, Any]], sinks: Sequence[Sink]) -> None:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= WRITE_CHUNK:
            _write(sinks, chunk)
    _write(sinks, chunk)


def _write(sinks: Sequence[Sink], items: list[Any]) -> None:
    """Hand ``items`` to each sink and empty the list: as they are to the library's own sinks
    (they take examples, and the JSONL sink writes them without a row dict), as rows to
    others."""
    if not items:
        return
    rows: list[dict[str, Any]] | None = None
    for sink in sinks:
        if isinstance(sink, BaseSink):
            sink.write(items)
        else:
            if rows is None:
                rows = [item if isinstance(item, dict) else item.to_row() for item in items]
            sink.write(rows)
    items.clear()


class StudyRun(Iterator[Example | Rejection]):
    """One pass of a study over a source: iterate it for Examples and Rejections."""

    def __init__(
        self,
        study: Study,
        source: Source,
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
        self._items = self._run()

    def __iter__(self) -> StudyRun:
        return self

    def __next__(self) -> Example | Rejection:
        return next(self._items)

    # -- the loop -------------------------------------------------------------------------

    def _records(self) -> Iterator[Record | Rejection]:
        from mstudy.sources import iter_source

        items = iter_source(self.source, id_field=self.study.id_field)
        if self.limit is not None:
            items = itertools.islice(items, self.limit)
        skipped = deque(itertools.islice(items, self.skip), maxlen=1)
        if self.skip:
            last = skipped[0] if skipped else None
            found = (
                None if last is None else (last.id if isinstance(last, Record) else last.source_id)
            )
            if found != self.skip_last_id:
                raise ConfigError(
                    f"the source changed since the interrupted run: item {self.skip} was "
                    f"{self.skip_last_id!r} and is now {found!r}; start over with restart=True "
                    "(CLI: --restart)"
                )
        yield from items

    def _run(self) -> Iterator[Example | Rejection]:
        study, report = self.study, self.report
        cache, fingerprint = study.cache, study.teacher.fingerprint
        prefix = memo.memo_prefix(fingerprint, study.strategies) if cache is not None else None
        shared = memo.Shared(fingerprint, study.strategies) if prefix is not None else None
        slots: deque[_Slot] = deque()
        pending: dict[str, list[_Pending]] = {}
        source = self._records()
        exhausted = False
        bar = _progress_bar(study.progress, self.source, self.limit, self.skip)

        ahead: deque[tuple[Record | Rejection, str | None, str | None]] = deque()

        def pull() -> tuple[Record | Rejection, str | None, str | None] | None:
            """The next source item with its memo key and stored outcome (looked up for a
            chunk of items at once)."""
            if not ahead:
                chunk = list(itertools.islice(source, MEMO_LOOKAHEAD if prefix else 1))
                keys = [
                    memo.outcome_key(prefix, item)
                    if prefix is not None and isinstance(item, Record)
                    else None
                    for item in chunk
                ]
                found = (
                    cache.get_outcomes([k for k in keys if k is not None])
                    if cache is not None and prefix is not None
                    else {}
                )
                ahead.extend(
                    (item, key, found.get(key) if key is not None else None)
                    for item, key in zip(chunk, keys, strict=True)
                )
            return ahead.popleft() if ahead else None

        def feed() -> Iterator[Request]:
            """Requests for the teacher; stops early when too many records await emission."""
            nonlocal exhausted
            while len(slots) < study.max_backlog:
                if not pending and len(slots) >= READY_CHUNK:
                    # All waiting records are decided (cache hits): hand them on before reading
                    # more, so a cached re-run streams instead of piling up max_backlog records.
                    return
                pulled = pull()
                if pulled is None:
                    exhausted = True
                    return
                item, memo_key, payload = pulled
                if isinstance(item, Rejection):
                    slot = _Slot(item.source_id, None, sealed=True)
                    slot.results[(-1, 0)] = [item]
                    slots.append(slot)
                    continue
                if payload is not None:
                    results, requests, cached_calls = memo.decode(payload, item.id, shared)
                    slots.append(
                        _Slot(
                            item.id,
                            item,
                            sealed=True,
                            results=results,
                            requests=requests,
                            memo_key=memo_key,
                            memo_hit=True,
                            cached_calls=cached_calls,
                        )
                    )
                    continue
                slot = _Slot(item.id, item, memo_key=memo_key)
                slots.append(slot)
                entries: list[_Pending] = []
                for s_index, strategy in enumerate(study.strategies):
                    try:
                        batch = strategy.requests(item)
                    except (RecordError, TemplateError, ValueError) as exc:
                        slot.results[(s_index, -1)] = [_render_rejection(item, strategy, exc)]
                        continue
                    slot.requests[strategy.name] = len(batch)
                    for r_index, request in enumerate(batch):
                        entries.append(_Pending(slot, s_index, r_index, strategy, request))
                slot.outstanding = len(entries)
                hits = (
                    cache.get_many(fingerprint, [e.request.key for e in entries])
                    if cache is not None and entries
                    else {}
                )
                for entry in entries:
                    key = entry.request.key
                    hit = hits.get(key)
                    if hit is not None:
                        self._complete(entry, hit)
                        continue
                    waiting = pending.get(key)
                    if waiting is not None:
                        waiting.append(entry)
                        continue
                    pending[key] = [entry]
                    yield entry.request
                slot.sealed = True

        def emit() -> Iterator[Example | Rejection]:
            """Finished records, in source order, through the filters."""
            while slots and slots[0].sealed and slots[0].outstanding == 0:
                if study.budget is not None and self.stop_reason is None:
                    self.stop_reason = study.budget.exceeded(
                        report.spent_prompt_tokens, report.spent_completion_tokens
                    )
                if self.stop_reason is not None:
                    return
                if self.on_boundary is not None:
                    self.on_boundary()
                slot = slots.popleft()
                if slot.record is not None:
                    report.records += 1
                for name, count in slot.requests.items():
                    report.strategy(name).requests += count
                for name, completion in slot.completions:
                    report.count_completion(name, completion)
                if slot.cached_calls:
                    report.count_cached(slot.cached_calls)
                if slot.memo_key is not None and not slot.memo_hit and cache is not None:
                    payload = memo.encode(
                        slot.results, slot.requests, slot.completions, slot.item_id, shared
                    )
                    if payload is not None:
                        cache.put_outcome(slot.memo_key, fingerprint, payload)
                results = slot.results
                items = [item for key in sorted(results) for item in results[key]]
                if study.filters:
                    items = self._filter_all(items)
                for item in items:
                    if isinstance(item, Example):
                        _stats(report, item).accepted += 1
                    else:
                        report.count_rejection(item)
                    yield item
                self.items_done += 1
                self.last_id = slot.item_id
                if bar is not None:
                    bar.update(1)
                    _show_rates(bar, report)

        try:
            while self.stop_reason is None:
                completions = study.teacher.generate(feed())
                for completion in completions:
                    entries = pending.pop(completion.key, None)
                    if entries is None:
                        raise TeacherError(
                            f"teacher {study.teacher.name!r} returned a completion for an "
                            f"unknown request key {completion.key!r}"
                        )
                    if cache is not None:
                        cache.put(fingerprint, completion)
                    for entry in entries:
                        self._complete(entry, completion)
                    if slots[0].outstanding == 0 and slots[0].sealed:  # else emit has nothing
                        yield from emit()
                    if self.stop_reason is not None:
                        close = getattr(completions, "close", None)
                        if callable(close):
                            close()
                        break
                if self.stop_reason is not None:
                    break
                for entries in pending.values():
                    for entry in entries:
                        self._unanswered(entry)
                pending.clear()
                if cache is not None:
                    cache.commit()
                yield from emit()
                if exhausted:
                    break
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
            if cache is not None:
                cache.commit()
            if bar is not None:
                bar.close()

    def _complete(self, entry: _Pending, completion: Completion) -> None:
        entry.slot.completions.append((entry.strategy.name, completion))
        entry.slot.results[(entry.s_index, entry.r_index)] = self._parse(entry, completion)
        entry.slot.outstanding -= 1

    def _unanswered(self, entry: _Pending) -> None:
        rejection = Rejection(
            entry.request.source_id,
            "teacher",
            "no completion",
            "the teacher returned nothing for this request",
            entry.strategy.name,
        )
        entry.slot.results[(entry.s_index, entry.r_index)] = [rejection]
        entry.slot.outstanding -= 1

    def _parse(self, entry: _Pending, completion: Any) -> list[Example | Rejection]:
        strategy = entry.strategy
        try:
            results = list(strategy.parse(entry.record, entry.request, completion))
        except MstudyError as exc:
            return [Rejection(entry.record.id, "parse", "parser error", str(exc), strategy.name)]
        except Exception as exc:  # a plugin's bug must not sink the whole run unseen
            log.warning("strategy %r failed to parse a completion: %r", strategy.name, exc)
            return [
                Rejection(
                    entry.record.id,
                    "parse",
                    "parser error",
                    f"{type(exc).__name__}: {exc}",
                    strategy.name,
                )
            ]
        return results

    def _filter_all(self, items: list[Example | Rejection]) -> list[Example | Rejection]:
        """One record's results through the filters, in order; ``check_many`` when offered."""
        report = self.report
        for filt in self.study.filters:
            batch = [item for item in items if isinstance(item, Example)]
            if not batch:
                break
            name = filt.name
            report.filters[name].checked += len(batch)
            for example in batch:
                _stats(report, example).checked[name] += 1
            many = getattr(filt, "check_many", None)
            try:
                verdicts = list(many(batch)) if callable(many) else [filt.check(e) for e in batch]
                if len(verdicts) != len(batch):
                    raise ValueError(f"{len(verdicts)} verdicts for {len(batch)} examples")
            except Exception as exc:  # a plugin's bug: reject what it saw, say why, go on
                log.warning("filter %r failed: %r", name, exc)
                verdicts = [
                    e.reject(f"filter:{name}", "filter error", f"{type(exc).__name__}: {exc}")
                    for e in batch
                ]
            if len(batch) == len(items):
                items = verdicts
            else:  # verdicts take the examples' places; rejections stay where they were
                given = iter(verdicts)
                items = [next(given) if isinstance(item, Example) else item for item in items]
        return items


def _stats(report: Report, example: Example) -> StrategyStats:
    """``report.strategy(example.strategy)``, by one dict lookup when it is there."""
    name = example.provenance.strategy
    return report.strategies.get(name) or report.strategy(name)


def _render_rejection(record: Record, strategy: Strategy, exc: Exception) -> Rejection:
    field = getattr(exc, "field", None)
    own = getattr(exc, "reason", None)
    if isinstance(own, str) and own:
        reason = own
    elif isinstance(exc, RecordError):
        reason = "missing field" if "missing field" in str(exc) else "bad field"
    elif isinstance(exc, TemplateError):
        reason = "template error"
    else:
        reason = "bad record"
    return Rejection(record.id, "render", reason, str(exc), strategy.name, field)


def _show_rates(bar: Any, report: Report) -> None:
    elapsed = max(float(bar.format_dict.get("elapsed", 0.0)), 1e-9)
    rate = report.completion_tokens / elapsed
    bar.set_postfix(accepted=report.accepted, tok_s=f"{rate:.0f}", refresh=False)


def _progress_bar(enabled: bool | None, source: Source, limit: int | None, skip: int) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    from mstudy.sources import source_length

    total = source_length(source)
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    return tqdm(total=total, initial=skip, unit="rec", desc="studying", dynamic_ncols=True)


__all__ = ["Source", "Study", "StudyRun"]
