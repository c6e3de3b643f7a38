"""Rounds: ask again, with other settings, for the records a strategy got nothing accepted for.

::

    Rounds(Reverse(), rounds=3, schedule=[{"temperature": 0.3}, {"temperature": 0.7},
                                          {"temperature": 1.0}])

Round 1 is the strategy's own requests (with ``schedule[0]`` applied). When a record's
results are decided (parsed *and* filtered) and none of this strategy's examples was
accepted, the study asks again for that record, round after round, up to ``rounds``; round
``k`` uses ``schedule[k-1]`` (the last entry holds for later rounds). A record leaves the
study once it has an accepted example or its rounds are spent, with the rows of every round,
so output order and resume stay as without rounds.

Each round's requests get their own keys: sample indexes go on from the previous round's
(``n`` samples: round ``k`` has samples ``(k-1)*n`` to ``k*n-1``), and the schedule's
params enter the key too. A re-run takes every round's calls from the call cache. The report
counts, per round, the records asked and those that got an accepted example
(:attr:`mstudy.report.Report.rounds`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast, runtime_checkable

from mstudy._hashing import stable_hash
from mstudy.errors import ConfigError
from mstudy.fingerprints import fingerprint as component_fingerprint
from mstudy.interfaces import Strategy
from mstudy.records import Completion, Example, GenerationParams, Record, Rejection, Request

__all__ = ["Retrying", "Rounds"]


@runtime_checkable
class Retrying(Protocol):
    """A strategy the study asks again, for records none of its examples was accepted for."""

    @property
    def rounds(self) -> int:
        """The most rounds a record is asked (1: no retry)."""
        ...

    def round_requests(self, record: Record, round_: int) -> Sequence[Request]:
        """The requests of round ``round_`` (0-based) for ``record``."""
        ...


class Rounds:
    """``strategy``, asked again up to ``rounds`` times for records without an accepted example.

    Args:
        strategy: a Strategy or a strategy plugin name.
        rounds: the most rounds a record is asked (>= 1).
        schedule: generation parameters per round, applied over the strategy's own
            (``[{"temperature": 0.7}, {"temperature": 1.0}]``); the last entry holds for
            later rounds. Empty: every round uses the strategy's params (new samples).
    """

    memoizable = False
    """Rounds depend on filter verdicts, so a record's outcome is not memoised (the calls
    are still cached)."""

    def __init__(
        self,
        strategy: Strategy | str,
        rounds: int = 3,
        schedule: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        if isinstance(strategy, str):
            from mstudy import plugins

            strategy = cast(Strategy, plugins.create("strategies", strategy))
        if isinstance(strategy, Rounds):
            raise ConfigError("Rounds cannot wrap another Rounds", parameter="strategy")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ConfigError(f"rounds must be an integer >= 1, got {rounds!r}", parameter="rounds")
        if isinstance(schedule, (str, Mapping)) or not isinstance(schedule, Sequence):
            raise ConfigError(
                "schedule must be a list of tables of generation parameters",
                parameter="schedule",
            )
        if len(schedule) > rounds:
            raise ConfigError(
                f"schedule has {len(schedule)} entries for {rounds} rounds", parameter="schedule"
            )
        for i, entry in enumerate(schedule):
            if not isinstance(entry, Mapping):
                raise ConfigError(
                    f"schedule[{i}] must be a table of generation parameters, "
                    f"got {type(entry).__name__}",
                    parameter="schedule",
                )
            try:
                GenerationParams.from_mapping(entry)
            except ConfigError as exc:
                raise ConfigError(f"schedule[{i}]: {exc}", parameter="schedule") from exc
        self.strategy: Strategy = strategy
        self._rounds = rounds
        self.schedule = tuple(dict(entry) for entry in schedule)

    @property
    def rounds(self) -> int:
        return self._rounds

    @property
    def name(self) -> str:
        return self.strategy.name

    @property
    def version(self) -> str:
        return self.strategy.version

    @property
    def fingerprint(self) -> str:
        return stable_hash(
            {
                "rounds": self._rounds,
                "schedule": [sorted(e.items()) for e in self.schedule],
                "strategy": component_fingerprint(self.strategy),
            }
        )

    def __repr__(self) -> str:
        return f"Rounds({self.strategy!r}, rounds={self._rounds}, schedule={list(self.schedule)})"

    def requests(self, record: Record) -> list[Request]:
        return self.round_requests(record, 0)

    def round_requests(self, record: Record, round_: int) -> list[Request]:
        """The strategy's requests for ``record`` with round ``round_``'s params and samples."""
        batch = list(self.strategy.requests(record))
        overrides = self.schedule[min(round_, len(self.schedule) - 1)] if self.schedule else {}
        if not overrides and round_ == 0:
            return batch
        out = []
        for request in batch:
            params = request.params
            if overrides:
                params = GenerationParams.from_mapping({**params.to_dict(), **overrides})
            sample = request.sample + round_ * len(batch)
            out.append(dataclasses.replace(request, params=params, sample=sample))
        return out

    def parse(
        self, record: Record, request: Request, completion: Completion
    ) -> Sequence[Example | Rejection]:
        return self.strategy.parse(record, request, completion)
