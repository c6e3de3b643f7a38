"""Placement: which parts of a record's parsing and filtering run where the teacher runs.

With a :class:`~mstudy.interfaces.ParsesReplies` teacher, the strategies and the *leading*
per-record filters go to its workers: the filters before the first one that keeps state over
the stream (:class:`~mstudy.interfaces.Resettable`: dedup, near_dedup), holds resources
(:class:`~mstudy.interfaces.Closable`) or says it is not
:class:`~mstudy.interfaces.Portable`. Everything from that filter on, and every record whose
replies were not parsed in a worker (a call cache hit, an identical request in flight, a
filter that raised there), is decided here as in a one-process run. A strategy that is not
portable keeps all parsing here; filters the teacher cannot take (they do not pickle) stay
here, and the strategies go alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from mstudy.interfaces import Closable, Filter, ParsesReplies, Portable, Resettable, Strategy
from mstudy.offload import Item, Parsed, ParseJob, Trail
from mstudy.records import Example

from .slots import Pending


def portable(component: object) -> bool:
    """Whether ``component`` may run in a teacher's workers."""
    if isinstance(component, Portable):
        return bool(component.portable)
    return not isinstance(component, (Resettable, Closable))


class Placement:
    """A run's binding of its strategies and leading filters to a parsing teacher."""

    __slots__ = ("_binding", "_teacher", "depth")

    def __init__(self, teacher: ParsesReplies, binding: object, depth: int) -> None:
        self._teacher, self._binding, self.depth = teacher, binding, depth

    @classmethod
    def of(
        cls, teacher: object, strategies: Sequence[Strategy], filters: Sequence[Filter]
    ) -> Placement | None:
        """The placement for a run; None when its teacher parses nothing (it cannot, or a
        strategy must stay here)."""
        if not isinstance(teacher, ParsesReplies):
            return None
        if not all(portable(s) for s in strategies):
            return None
        depth = 0
        while depth < len(filters) and portable(filters[depth]):
            depth += 1
        binding = teacher.bind_parsing(list(strategies), list(filters[:depth]))
        if binding is None and depth:  # a filter that does not travel: the strategies alone
            depth, binding = 0, teacher.bind_parsing(list(strategies), [])
        return None if binding is None else cls(teacher, binding, depth)

    def generate(self, entries: Iterable[Pending]) -> Iterator[Parsed]:
        """The teacher's answers to ``entries``, parsed and checked in its workers."""
        jobs = (ParseJob(e.request, e.record, e.s_index, e.slot.lineage) for e in entries)
        return self._teacher.generate_parsed(jobs, self._binding)

    def given(
        self, results: dict[tuple[int, int], list[Item]], trails: dict[tuple[int, int], Trail]
    ) -> list[list[Item | None]]:
        """The leading filters' verdicts on a record's examples, in the order the study
        shows them (results by key); empty when some examples have none (then the record is
        checked here)."""
        keys = sorted(results)
        for key in keys:
            if key not in trails and any(isinstance(i, Example) for i in results[key]):
                return []
        return [
            [v for key in keys if key in trails and i < len(trails[key]) for v in trails[key][i]]
            for i in range(self.depth)
        ]
