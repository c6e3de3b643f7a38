"""Retrying: after a record's round is decided, the requests of its next round, if any.

A :class:`~mstudy.rounds.Retrying` strategy none of whose examples was accepted in this
round (parsed and through the filters) asks again, until its rounds are spent. A strategy
that could not render the record is not asked again: its error would only repeat.
"""

from __future__ import annotations

from collections.abc import Sequence

from mstudy.interfaces import Strategy
from mstudy.records import Example, Rejection
from mstudy.report import Report
from mstudy.rounds import Retrying

from .rendering import reject_render
from .slots import Pending, Slot


def next_round(
    slot: Slot, items: Sequence[Example | Rejection], strategies: Sequence[Strategy], report: Report
) -> list[Pending] | None:
    """Count this round's yield; the next round's entries (the slot reset for them), or None
    when no strategy asks again."""
    asked = range(len(strategies)) if slot.round == 0 else slot.retrying
    accepted = {item.provenance.strategy for item in items if isinstance(item, Example)}
    again = []
    for s_index in asked:
        strategy = strategies[s_index]
        if not isinstance(strategy, Retrying):
            continue
        if (s_index, -1) in slot.results:  # not rendered: asking again cannot help
            continue
        ok = strategy.name in accepted
        report.count_round(strategy.name, slot.round, ok)
        if not ok and slot.round + 1 < strategy.rounds:
            again.append(s_index)
    if not again:
        return None
    record = slot.record
    assert record is not None
    slot.round += 1
    slot.retrying = tuple(again)
    slot.results, slot.requests, slot.completions, slot.cached_calls = {}, {}, [], {}
    entries: list[Pending] = []
    for s_index in again:
        strategy = strategies[s_index]
        assert isinstance(strategy, Retrying)
        try:
            batch = strategy.round_requests(record, slot.round)
        except Exception as exc:
            slot.results[(s_index, -1)] = [reject_render(record, strategies[s_index], exc)]
            continue
        slot.requests[strategies[s_index].name] = len(batch)
        entries.extend(
            Pending(slot, s_index, r_index, strategies[s_index], request)
            for r_index, request in enumerate(batch)
        )
    slot.outstanding = len(entries)
    slot.sealed = True
    return entries
