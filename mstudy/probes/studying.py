"""The teacher's side of the probe: the world's forward statements studied in rounds.

:func:`study_world` runs the statements through a real :class:`~mstudy.Study` with the
``reverse`` strategy (several samples per fact in rounds, the swap filter, then
:func:`~mstudy.probes.rules.select_consistent`), the facts that got a reversal through
``paraphrase`` (subject-first filter) for the control, and every fact through the ``rules``
teacher for the ceiling; it returns what they produced with the teacher's yield and precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mstudy.filters import ExactDedup, LengthFilter
from mstudy.interfaces import Teacher
from mstudy.probes.defaults import DEFAULTS
from mstudy.probes.errors import ProbeError
from mstudy.probes.progress import Times, say, timer
from mstudy.probes.prompts import probe_paraphrase, probe_reverse
from mstudy.probes.rules import (
    Candidate,
    SubjectFirstFilter,
    SwapFilter,
    entities_by_id,
    group_key,
    rules_teacher,
    select_consistent,
)
from mstudy.probes.world import Fact, World
from mstudy.records import Example, Rejection
from mstudy.strategies import Paraphrase, Reverse
from mstudy.study import Study

__all__ = ["PARAPHRASE_EXTRA_ROUNDS", "StudyOutcome", "round_temperature", "study_world"]


#: Extra sampling rounds for the paraphrase control, so that its count can match the reversals.
PARAPHRASE_EXTRA_ROUNDS = 2


def round_temperature(round_: int) -> float:
    """Sampling temperature of round ``round_``: near-greedy first, more varied on retries."""
    return min(0.3 + 0.3 * round_, 1.0)


def _records(world: World, facts: Sequence[Fact]) -> list[dict[str, str]]:
    return [
        {
            "id": f.id,
            "text": world.statement(f),
            "subject": f.subject,
            "object": f.object,
            "relation": f.relation,
        }
        for f in facts
    ]


def _resolve_teacher(teacher: Teacher | str, world: World) -> tuple[Teacher, str]:
    if not isinstance(teacher, str):
        return teacher, getattr(teacher, "name", type(teacher).__name__)
    if teacher == "rules":
        return rules_teacher(world), "rules"
    from mstudy import plugins

    built: Teacher = plugins.create("teachers", teacher)  # type: ignore[assignment]
    return built, teacher


def _study(
    teacher: Teacher,
    strategy: Reverse | Paraphrase,
    filters: Sequence[Any],
    records: list[dict[str, str]],
    progress: bool,
) -> tuple[list[Example], list[Rejection], int]:
    study = Study(teacher, [strategy], filters=list(filters), progress=progress)
    accepted: list[Example] = []
    rejected: list[Rejection] = []
    for item in study.stream(records):
        if isinstance(item, Example):
            accepted.append(item)
        else:
            rejected.append(item)
    report = study.last_report
    requests = report.strategy(strategy.name).requests if report is not None else 0
    return accepted, rejected, requests


def _library_filter(name: str) -> Any:
    from mstudy import plugins

    return plugins.create("filters", name)


def _count(reasons: dict[str, int], rejected: Sequence[Rejection]) -> None:
    for r in rejected:
        key = f"{r.stage}: {r.reason}"
        reasons[key] = reasons.get(key, 0) + 1


def _reversal_rounds(
    world: World,
    teacher: Teacher,
    *,
    samples: int,
    seed: int,
    progress: bool,
    max_new_tokens: int,
    min_support: int,
) -> tuple[dict[str, Candidate], list[Candidate], dict[str, Any]]:
    """Sample reversals in rounds (a round asks only the facts still without a selected one);
    filter each (``reverse_check``, the swap check, dedup, length); select by consistency."""
    facts = {f.id: f for f in world.facts}
    filters = [
        _library_filter("reverse_check"),
        SwapFilter(entities_by_id(world.facts)),
        ExactDedup(),
        LengthFilter(min_words=3, max_words=40),
    ]
    candidates: list[Candidate] = []
    chosen: dict[str, Candidate] = {}
    dropped: dict[str, str] = {}
    reasons: dict[str, int] = {}
    requests = rounds = 0
    for round_ in range(samples):
        todo = [f for f in world.facts if f.id not in chosen]
        if not todo:
            break
        rounds += 1
        strategy = probe_reverse(
            seed=seed * 1000 + round_,
            temperature=round_temperature(round_),
            max_new_tokens=max_new_tokens,
        )
        say(progress, f"teacher: reversal round {round_ + 1} of {samples}, {len(todo)} facts")
        accepted, rejected, sent = _study(
            teacher, strategy, filters, _records(world, todo), progress
        )
        requests += sent
        _count(reasons, rejected)
        for ex in accepted:
            fact = facts[ex.source_id]
            candidates.append(Candidate(fact, ex.text, round_, group_key(world, fact)))
        chosen, dropped = select_consistent(candidates, min_support=min_support)
    reasons["selection: inconsistent pattern"] = len(dropped)
    return chosen, candidates, {"requests": requests, "rounds": rounds, "rejections": reasons}


def _paraphrase_rounds(
    world: World,
    teacher: Teacher,
    facts: Sequence[Fact],
    *,
    samples: int,
    seed: int,
    progress: bool,
) -> tuple[dict[str, str], dict[str, Any]]:
    """One accepted paraphrase per fact of ``facts``, sampled in rounds; filtered by
    ``paraphrase_check``, subject-first, dedup and length.

    The control must match the reversals' count, so it gets :data:`PARAPHRASE_EXTRA_ROUNDS`
    more rounds than the reversals (each only for the facts still missing one).
    """
    filters = [
        _library_filter("paraphrase_check"),
        SubjectFirstFilter(entities_by_id(facts)),
        ExactDedup(),
        LengthFilter(min_words=3, max_words=40),
    ]
    chosen: dict[str, str] = {}
    reasons: dict[str, int] = {}
    requests = 0
    rounds = samples + PARAPHRASE_EXTRA_ROUNDS
    for round_ in range(rounds):
        todo = [f for f in facts if f.id not in chosen]
        if not todo:
            break
        strategy = probe_paraphrase(
            seed=seed * 1000 + round_, temperature=min(0.7 + 0.15 * round_, 1.0)
        )
        say(progress, f"teacher: paraphrase round {round_ + 1}, {len(todo)} facts")
        accepted, rejected, sent = _study(
            teacher, strategy, filters, _records(world, todo), progress
        )
        requests += sent
        _count(reasons, rejected)
        for ex in accepted:
            chosen.setdefault(ex.source_id, ex.text)
    return chosen, {"requests": requests, "rejections": reasons}


@dataclass
class StudyOutcome:
    """What the teacher (and the rules) produced for a world, before any student is trained."""

    teacher: str
    reversals: dict[str, Candidate]
    candidates: list[Candidate]
    paraphrases: dict[str, str]
    rule_reversals: dict[str, str]
    teacher_stats: dict[str, Any]
    paraphrase_stats: dict[str, Any]
    times: Times


def study_world(
    world: World,
    teacher: Teacher | str = DEFAULTS["teacher"],
    *,
    samples: int = DEFAULTS["samples"],
    seed: int = 0,
    max_new_tokens: int = 24,
    min_support: int = 2,
    progress: bool = False,
) -> StudyOutcome:
    """Run the world's forward statements through the studies (teacher and rules).

    ``min_support``: how many facts must share a reversal's pattern for it to be selected
    (see :func:`~mstudy.probes.rules.select_consistent`; 1 keeps every filtered reversal).
    """
    times: Times = {}
    say(progress, f"teacher: loading {teacher!r}")
    with timer(times, "teacher load"):
        model, teacher_name = _resolve_teacher(teacher, world)
        loader = getattr(model, "load", None)
        if callable(loader):
            loader()
    with timer(times, "teacher reversals"):
        chosen, candidates, rstats = _reversal_rounds(
            world,
            model,
            samples=samples,
            seed=seed,
            progress=progress,
            max_new_tokens=max_new_tokens,
            min_support=min_support,
        )
    reversed_facts = [f for f in world.facts if f.id in chosen]
    with timer(times, "teacher paraphrases"):
        paraphrases, pstats = _paraphrase_rounds(
            world, model, reversed_facts, samples=samples, seed=seed, progress=progress
        )
    closer = getattr(model, "close", None)
    if callable(closer) and isinstance(teacher, str):
        closer()  # free the teacher we built before the students train
    with timer(times, "rule reversals"):
        rule_examples, rule_rejects, _ = _study(
            rules_teacher(world),
            probe_reverse(seed=0),
            [SwapFilter(entities_by_id(world.facts))],
            _records(world, world.facts),
            False,
        )
    by_id = {f.id: f for f in world.facts}
    if rule_rejects or len(rule_examples) != len(world.facts):
        detail = rule_rejects[0].detail if rule_rejects else "missing replies"
        raise ProbeError(
            f"a rule reversal was rejected ({detail}); check the relation spec's inverse templates"
        )
    for example in rule_examples:
        if not world.is_true_reversal(by_id[example.source_id], example.text):
            raise ProbeError(f"a rule reversal fails the world's own check: {example.text!r}")
    n_true = sum(world.is_true_reversal(c.fact, c.text) for c in chosen.values())
    all_true = sum(world.is_true_reversal(c.fact, c.text) for c in candidates)
    teacher_stats: dict[str, Any] = {
        "facts": len(world.facts),
        "facts_with_reversal": len(chosen),
        "true": n_true,
        "yield": len(chosen) / len(world.facts),
        "precision": n_true / len(chosen) if chosen else 0.0,
        "candidates_before_selection": len(candidates),
        "true_before_selection": all_true,
        "precision_before_selection": all_true / len(candidates) if candidates else 0.0,
        "requests": rstats["requests"],
        "rounds": rstats["rounds"],
        "rejections": rstats["rejections"],
        "precision_definition": (
            "an accepted reversal is true when its normalised text (no case, punctuation or "
            "articles) matches one of the relation's inverse forms: object first, subject "
            "after, the relation said the other way round ('*' in a form: 0-4 words)"
        ),
    }
    paraphrase_stats: dict[str, Any] = {
        "wanted": len(chosen),
        "accepted": len(paraphrases),
        "requests": pstats["requests"],
        "rejections": pstats["rejections"],
    }
    return StudyOutcome(
        teacher=teacher_name,
        reversals=chosen,
        candidates=candidates,
        paraphrases=paraphrases,
        rule_reversals={e.source_id: e.text for e in rule_examples},
        teacher_stats=teacher_stats,
        paraphrase_stats=paraphrase_stats,
        times=times,
    )
