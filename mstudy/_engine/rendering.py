"""Rendering: a record becomes a Slot and the requests of every strategy.

Whatever one record does while its prompts are rendered (a missing field, a template that
divides by zero on its value, a plugin's bug) becomes a rejection of that record at stage
``render``, never the end of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mstudy.errors import RecordError, TemplateError
from mstudy.interfaces import Strategy
from mstudy.records import Record, Rejection

from .slots import Pending, Slot

log = logging.getLogger("mstudy")


def render(record: Record, strategies: Sequence[Strategy]) -> tuple[Slot, list[Pending]]:
    """``record``'s slot and its requests, in strategy order."""
    slot = Slot(record.id, record)
    entries: list[Pending] = []
    for s_index, strategy in enumerate(strategies):
        try:
            batch = strategy.requests(record)
        except Exception as exc:
            slot.results[(s_index, -1)] = [reject_render(record, strategy, exc)]
            continue
        slot.requests[strategy.name] = len(batch)
        entries.extend(
            Pending(slot, s_index, r_index, strategy, request)
            for r_index, request in enumerate(batch)
        )
    slot.outstanding = len(entries)
    return slot, entries


def reject_render(record: Record, strategy: Strategy, exc: Exception) -> Rejection:
    """The rejection that stands for ``exc``, from its declared reason and field."""
    if isinstance(exc, RecordError):
        reason, field = exc.reason or "bad field", exc.field
    elif isinstance(exc, TemplateError):
        reason, field = "template error", None
    else:  # a template's own error on this value, or a plugin's bug: this record only
        log.warning("strategy %r failed to render record %r: %r", strategy.name, record.id, exc)
        return Rejection(
            record.id, "render", "render error", f"{type(exc).__name__}: {exc}", strategy.name
        )
    return Rejection(record.id, "render", reason, str(exc), strategy.name, field)
