"""Filtering: one record's results through the filters, in order.

Each filter sees the examples still accepted, in stream order; its verdicts take their
places and earlier rejections stay where they were. A :class:`~mstudy.interfaces.BatchFilter`
gets them in one call. A filter that fails rejects what it was shown, with the error as
detail, and the run goes on. Verdicts already given where the teacher runs
(:mod:`mstudy.offload`) are taken instead of checking again, and counted the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from mstudy.interfaces import BatchFilter, Filter
from mstudy.records import Example, Rejection
from mstudy.report import Report

log = logging.getLogger("mstudy")

Item = Example | Rejection


class FilterChain:
    """The study's filters, counting what each one sees into the report."""

    __slots__ = ("_filters", "_report")

    def __init__(self, filters: Sequence[Filter], report: Report) -> None:
        self._filters = [(f, checker(f)) for f in filters]
        self._report = report

    def __bool__(self) -> bool:
        return bool(self._filters)

    def apply(self, items: list[Item], given: Sequence[Sequence[Item | None]] = ()) -> list[Item]:
        """``items`` with each example replaced by the filters' verdict on it; ``given[i]``
        holds the ``i``-th filter's verdicts already (None: the example kept as it is)."""
        for index, (filt, check) in enumerate(self._filters):
            examples = [item for item in items if isinstance(item, Example)]
            if not examples:
                break
            self._count(filt.name, examples)
            known = given[index] if index < len(given) else None
            if known is not None and len(known) == len(examples):
                verdicts = [e if v is None else v for v, e in zip(known, examples, strict=True)]
            else:
                verdicts = _verdicts(filt.name, check, examples)
            if len(examples) == len(items):
                items = verdicts
            else:  # verdicts take the examples' places; rejections stay where they were
                placed = iter(verdicts)
                items = [next(placed) if isinstance(item, Example) else item for item in items]
        return items

    def _count(self, name: str, examples: list[Example]) -> None:
        report = self._report
        report.filters[name].checked += len(examples)
        stats = report.strategies
        for example in examples:
            strategy = example.provenance.strategy
            (stats.get(strategy) or report.strategy(strategy)).checked[name] += 1


Checker = Callable[[list[Example]], Sequence[Item]]


def checker(filt: Filter) -> Checker:
    """How ``filt`` checks one record's examples: ``check_many`` when it is a BatchFilter."""
    if isinstance(filt, BatchFilter):
        return filt.check_many
    check = filt.check
    return lambda examples: [check(example) for example in examples]


def _verdicts(name: str, check: Checker, examples: list[Example]) -> list[Item]:
    try:
        verdicts = list(check(examples))
        if len(verdicts) != len(examples):
            raise ValueError(f"{len(verdicts)} verdicts for {len(examples)} examples")
    except Exception as exc:  # a plugin's bug: reject what it saw, say why, go on
        log.warning("filter %r failed: %r", name, exc)
        detail = f"{type(exc).__name__}: {exc}"
        return [e.reject(f"filter:{name}", "filter error", detail) for e in examples]
    return verdicts
