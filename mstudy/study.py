"""``Study``: composes a teacher, strategies, filters and sinks, and runs the data path.

::

    source -> Record -> Strategy.requests -> Teacher.generate -> Strategy.parse -> Filters -> Sinks

The loop streams: records are read only as fast as the teacher asks for requests, so memory
holds the teacher's window, not the dataset. Completions may come back in any order; each is
matched to its request by key, and rows are emitted in source order. Identical requests in
flight together are sent once; with a cache, stored calls are not made again.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mstudy._engine.journaled import run_journaled, study_label
from mstudy._engine.run import StudyRun
from mstudy._engine.sinking import SinkSet, SinkSpec
from mstudy.budget import Budget, Estimate, count_prompt_tokens
from mstudy.cache import CallCache
from mstudy.errors import ConfigError, FingerprintError
from mstudy.fingerprints import fingerprint as component_fingerprint
from mstudy.interfaces import (
    Discounted,
    Filter,
    Resettable,
    Sink,
    Strategy,
    Teacher,
    TokenCounter,
)
from mstudy.records import Example, Rejection
from mstudy.report import Report

if TYPE_CHECKING:
    import datasets

    from mstudy.chain import Chain

log = logging.getLogger("mstudy")

Source = Any
"""An iterable of dicts, a ``datasets.Dataset``/``IterableDataset``, a JSONL/Parquet path."""


def _build(kind: str, spec: Any) -> Any:
    if isinstance(spec, str):
        from mstudy import plugins

        return plugins.create(kind, spec)
    return spec


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
            :mod:`mstudy._journal`). Implies a call cache in that directory unless ``cache``
            is given.
        checkpoint_every: seconds between journal checkpoints (at least: when saving the
            filters' state gets slow, checkpoints are spaced so it stays ~5% of the run).
        budget: a :class:`~mstudy.budget.Budget` of tokens or money; once spent, the run stops
            cleanly after the current record (with a journal, a later run goes on).
        name: the study's name as a stage of a :class:`~mstudy.chain.Chain` (default: its
            strategies' names joined by ``+``).

    ``study_a >> study_b`` chains two studies: ``study_b`` studies the rows ``study_a``
    accepted (:class:`~mstudy.chain.Chain`).

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
        name: str | None = None,
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
        self.sink_specs: list[SinkSpec] = list(sinks)
        self.rejects_spec: SinkSpec | None = rejects
        self.id_field = id_field
        self.progress = progress
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be >= 1, got {max_backlog}")
        if not 0 <= checkpoint_every < float("inf"):  # NaN fails too: it would never save
            raise ConfigError(
                f"checkpoint_every must be a finite number of seconds >= 0, "
                f"got {checkpoint_every!r}",
                parameter="checkpoint_every",
            )
        self.max_backlog = max_backlog
        self.cache: CallCache | None = CallCache(cache) if isinstance(cache, (str, Path)) else cache
        self.journal = Path(journal) if journal is not None else None
        self.checkpoint_every = checkpoint_every
        if budget is not None and isinstance(self.teacher, Discounted):
            budget = dataclasses.replace(budget, price_factor=self.teacher.price_factor)
        self.budget = budget
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"name must be a non-empty string, got {name!r}", parameter="name")
        self.name = name.strip() if name is not None else "+".join(names)
        self.last_report: Report | None = None
        self._after_sink: Callable[[Report], None] | None = None
        """Called (by a chain) once a journaled run's sinks are committed, before its
        journal is removed."""

    def __rshift__(self, other: Study | Chain) -> Chain:
        """A chain: ``other`` studies the rows this study accepts."""
        from mstudy.chain import Chain

        return Chain([self]) >> other

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
        self.reset_filters()
        return StudyRun(self, source, limit=limit)

    def reset_filters(self) -> None:
        """Forget what stateful filters (:class:`~mstudy.interfaces.Resettable`) saw before."""
        for filt in self.filters:
            if isinstance(filt, Resettable):
                filt.reset()

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

        teacher = self.teacher
        counter = teacher.count_prompt_tokens if isinstance(teacher, TokenCounter) else None
        estimate = Estimate(budget=self.budget)
        if counter is not None:
            estimate.tokens_counted_by = f"the {teacher.name} teacher's tokenizer"
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
                except Exception:  # the run rejects this record at stage render
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
            "strategies": [component_fingerprint(s) for s in self.strategies],
            "filters": [component_fingerprint(f) for f in self.filters],
            "id_field": self.id_field,
            "limit": limit,
        }

    def _label(self, limit: int | None) -> str | None:
        """The sha256 of :meth:`fingerprint` for the sinks that record it; None when a
        component's settings cannot be fingerprinted (only a journaled run needs them)."""
        try:
            return study_label(self.fingerprint(limit))
        except FingerprintError:
            return None

    def run(self, source: Source, *, limit: int | None = None, restart: bool = False) -> Report:
        """Run the study, writing accepted rows to the sinks and rejections to ``rejects``.

        Sinks are committed only when the run completes; on an error they are aborted (no
        half-written file at the target path) and the error is raised. With a ``journal``,
        a rerun after a crash resumes; ``restart=True`` discards the journal first.
        """
        if self.journal is not None:
            return run_journaled(self, source, limit=limit, restart=restart)
        run = self.stream(source, limit=limit)
        try:
            label = self._label(limit)
            with SinkSet.open(self.sink_specs, self.rejects_spec, study=label) as sinks:
                for item in run:
                    sinks.add(item)
        except BaseException:
            run.report.finish("failed")
            raise
        return run.report

    def to_dataset(self, source: Source, *, limit: int | None = None) -> datasets.Dataset:
        """Run the study (sinks included) and also return the accepted rows as a Dataset."""
        from mstudy.sinks.hf import DatasetSink

        sink = DatasetSink()
        self.sink_specs.append(sink)
        try:
            self.run(source, limit=limit)
        finally:
            self.sink_specs.remove(sink)
        return sink.dataset


__all__ = ["Source", "Study", "StudyRun"]
