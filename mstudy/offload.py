"""Parsing where the teacher runs: what a :class:`~mstudy.interfaces.ParsesReplies` teacher
does with a reply in its worker, and what it sends back.

The study sends a :class:`ParseJob` per request (the request, its record, which strategy and
the record's lineage). The worker asks its teacher, then :func:`run_job` parses the reply with
that strategy (the same :func:`~mstudy._engine.parsing.parse` a one-process run uses, schema
check included) and passes the examples through the study's leading per-record filters. The
:class:`Parsed` it returns holds the completion (for the study's call cache), the parsed
items as the strategy made them (for the outcome memo and the report) and the filters'
verdicts, one list per filter (the *trail*), which the study takes in place of checking
again. A verdict that keeps an example unchanged travels as None.

Filters are applied to one request's examples here, where a one-process run shows a filter a
whole record's examples together. For a per-record filter the verdicts are the same (each
example's verdict is its own); the exception is a filter that raises, which in one process
rejects everything the record showed it. So a worker whose filter raises sends no trail, and
the study runs that record's filters itself: the same filter raises there, with the same
result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mstudy.interfaces import Filter, Strategy
from mstudy.lineage import Lineage
from mstudy.records import Completion, Example, Record, Rejection, Request

__all__ = ["ParseJob", "Parsed", "Trail", "run_job"]

Item = Example | Rejection
Trail = list[list[Item | None]]
"""Per filter, its verdict on each example still accepted before it (None: kept unchanged)."""


@dataclass(slots=True, frozen=True)
class ParseJob:
    """A request with what parsing its reply needs."""

    request: Request
    record: Record
    strategy: int
    """The strategy's index in the study's strategies."""
    lineage: Lineage


@dataclass(slots=True)
class Parsed:
    """A completion with its parse result.

    ``items`` None: not parsed (the study parses it); ``trail`` None: not filtered (the
    study filters the record itself)."""

    completion: Completion
    items: list[Item] | None = None
    trail: Trail | None = None


def run_job(
    job: ParseJob,
    completion: Completion,
    strategies: Sequence[Strategy],
    filters: Sequence[Filter],
) -> Parsed:
    """Parse ``completion`` as the study would, and check its examples with ``filters``."""
    from mstudy._engine.parsing import parse, usable
    from mstudy._engine.slots import Pending, Slot

    completion = usable(completion)
    record = job.record
    entry = Pending(Slot(record.id, record), job.strategy, 0, strategies[job.strategy], job.request)
    items = parse(entry, completion)
    child = job.lineage.child
    for item in items:  # as the study sets it before its filters see an example
        if isinstance(item, Example):
            child(record.id, item)
    return Parsed(completion, items, trail(items, filters))


def trail(items: list[Item], filters: Sequence[Filter]) -> Trail | None:
    """Each filter's verdicts on the examples still accepted before it; None when a filter
    failed (raised, or gave a wrong number of verdicts)."""
    from mstudy._engine.filtering import checker

    out: Trail = []
    current = list(items)
    for filt in filters:
        examples = [item for item in current if isinstance(item, Example)]
        if not examples:
            break
        before = [(e.fields.copy(), e.provenance) for e in examples]
        try:
            verdicts = list(checker(filt)(examples))
        except Exception:
            return None
        if len(verdicts) != len(examples):
            return None
        out.append(
            [
                None if v is e and v.provenance is p and v.fields == f else v
                for v, e, (f, p) in zip(verdicts, examples, before, strict=True)
            ]
        )
        given = iter(verdicts)
        current = [next(given) if isinstance(item, Example) else item for item in current]
    return out
