"""The values a record carries through the loop: its :class:`Slot` and its :class:`Pending`
requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from mstudy.interfaces import Strategy
from mstudy.lineage import ORIGINAL, Lineage
from mstudy.offload import Trail
from mstudy.records import Completion, Example, Record, Rejection, Request

Results = dict[tuple[int, int], list[Example | Rejection]]
"""A record's results by (strategy index, request index); ``(s, -1)`` holds a render
rejection of strategy ``s``, ``(-1, 0)`` an input rejection."""


@dataclass(slots=True)
class Slot:
    """One source item on its way: its results wait here until every request is answered."""

    item_id: str
    record: Record | None
    outstanding: int = 0
    sealed: bool = False
    """All of the item's requests are known (so ``outstanding == 0`` means finished)."""
    results: Results = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    """Requests per strategy name."""
    completions: list[tuple[str, Completion]] = field(default_factory=list)
    """(strategy name, completion) for every answer, to count in the report."""
    outcome_key: str | None = None
    """Where this record's outcome is memoised (:mod:`mstudy._memo`); None when it is not."""
    outcome_stored: bool = False
    """The outcome was read back from the memo (so it need not be stored again)."""
    cached_calls: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    """Per strategy, the calls a memoised outcome stands for: (calls, prompt, completion
    tokens)."""
    lineage: Lineage = ORIGINAL
    """The record's generation and parents (:mod:`mstudy.lineage`)."""
    round: int = 0
    """The round being asked (:mod:`mstudy.rounds`): 0 until a strategy asks again."""
    retrying: tuple[int, ...] = ()
    """Indexes of the strategies asked again in this round (empty in round 0)."""
    held: list[Example | Rejection] = field(default_factory=list)
    """Rows decided in earlier rounds, handed on with the last round's."""
    trails: dict[tuple[int, int], Trail] = field(default_factory=dict)
    """Filter verdicts given where the teacher runs, by results key (:mod:`mstudy.offload`)."""

    @property
    def finished(self) -> bool:
        return self.sealed and self.outstanding == 0

    @classmethod
    def rejected(cls, rejection: Rejection) -> Slot:
        """The slot of a source item that was rejected on input."""
        return cls(rejection.source_id, None, sealed=True, results={(-1, 0): [rejection]})


@dataclass(slots=True)
class Pending:
    """One request of a record, waiting for its completion."""

    slot: Slot
    s_index: int
    r_index: int
    strategy: Strategy
    request: Request

    @property
    def record(self) -> Record:
        assert self.slot.record is not None
        return self.slot.record

    def complete(
        self,
        results: list[Example | Rejection],
        completion: Completion | None,
        trail: Trail | None = None,
    ) -> None:
        """Store this request's results in its slot (``completion`` None: never answered),
        with the filter verdicts given for them, if any."""
        slot = self.slot
        if completion is not None:
            slot.completions.append((self.strategy.name, completion))
        slot.results[(self.s_index, self.r_index)] = results
        if trail is not None:
            slot.trails[(self.s_index, self.r_index)] = trail
        slot.outstanding -= 1
