"""The teacher's side of the probe: the world's forward statements studied in rounds.

:func:`study_world` first checks the world end to end with its own rules
(:func:`~mstudy.probes.preflight.check_world_run`: the ceiling's reversals and paraphrases,
through the same filters, before any teacher call), then runs the statements through a real
:class:`~mstudy.Study` with the ``reverse`` strategy (samples per fact in rounds, the library's
``reverse_check`` and ``role_check`` filters, then
:func:`~mstudy.probes.selection.select_verified`) and the facts that got a reversal through
``paraphrase`` (subject-first filter) for the control; it returns what they produced with the
teacher's yield and three-part precision (true, false, undecided).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mstudy.filters.roles import RoleCheck, role_verdict
from mstudy.filters.roundtrip import RoundTrip
from mstudy.interfaces import Teacher
from mstudy.probes.defaults import DEFAULTS
from mstudy.probes.preflight import check_world_run
from mstudy.probes.progress import Times, say, timer
from mstudy.probes.prompts import (
    probe_paraphrase,
    probe_reverse,
    reverse_examples,
    reverse_lead,
    statement_shape,
)
from mstudy.probes.rules import Candidate, RulesTeacher, group_key, rules_teacher
from mstudy.probes.selection import select_verified
from mstudy.probes.study_calls import paraphrase_filters, records, reversal_filters, run_study
from mstudy.probes.world import Fact, World
from mstudy.records import Example, Rejection

__all__ = ["PARAPHRASE_EXTRA_ROUNDS", "StudyOutcome", "round_temperature", "study_world"]


#: Extra sampling rounds for the paraphrase control, so that its count can match the reversals.
PARAPHRASE_EXTRA_ROUNDS = 2


def round_temperature(round_: int) -> float:
    """Sampling temperature of round ``round_``: near-greedy first, more varied on retries."""
    return min(0.3 + 0.3 * round_, 1.0)


def _resolve_teacher(teacher: Teacher | str, world: World) -> tuple[Teacher, str]:
    if not isinstance(teacher, str):
        return teacher, getattr(teacher, "name", type(teacher).__name__)
    if teacher == "rules":
        return rules_teacher(world), "rules"
    from mstudy import plugins

    built: Teacher = plugins.create("teachers", teacher)  # type: ignore[assignment]
    return built, teacher


def _count(reasons: dict[str, int], rejected: Sequence[Rejection]) -> None:
    for r in rejected:
        key = f"{r.stage}: {r.reason}"
        reasons[key] = reasons.get(key, 0) + 1


def _by_shape(world: World, facts: Sequence[Fact]) -> dict[str, list[Fact]]:
    """The facts grouped by statement shape (:func:`~mstudy.probes.prompts.statement_shape`),
    each group asked with its own few-shot examples."""
    groups: dict[str, list[Fact]] = {}
    for f in facts:
        groups.setdefault(statement_shape(world.statement(f), f.subject, f.object), []).append(f)
    return groups


def _round_trip(
    check: RoundTrip, roles: RoleCheck, accepted: Sequence[Example]
) -> tuple[list[Example], list[Rejection], int]:
    """The accepted reversals whose roles the role check could not settle (``unknown``,
    ``ungrounded``) restated back by the teacher (:class:`~mstudy.filters.roundtrip.RoundTrip`):
    (kept, rejected, teacher calls). The others pass untouched."""
    unsettled: list[Example] = []
    kept: list[Example] = []
    for ex in accepted:
        source = str(ex.fields.get("input", ""))
        subject, obj = str(ex.fields.get("subject", "")), str(ex.fields.get("object", ""))
        reading = role_verdict(source, ex.text, subject, obj, agents=roles.agents_for(source))
        (unsettled if reading.reading in ("unknown", "ungrounded") else kept).append(ex)
    if not unsettled:
        return kept, [], 0
    lost: list[Rejection] = []
    calls = len({check.request(ex, ex.text, str(ex.fields["subject"])).key for ex in unsettled})
    for verdict in check.check_many(unsettled):
        if isinstance(verdict, Example):
            kept.append(verdict)
        else:
            lost.append(verdict)
    return kept, lost, calls


def _reversal_rounds(
    world: World,
    teacher: Teacher,
    *,
    samples: int,
    seed: int,
    progress: bool,
    max_new_tokens: int,
    min_agreement: int,
    prefill: bool,
    cache: str | Path | None,
    retry_prompts: bool = True,
    round_trip: RoundTrip | None = None,
) -> tuple[dict[str, Candidate], list[Candidate], dict[str, Any]]:
    """Sample reversals in rounds (a round asks only the facts still without a selected one);
    filter each (:func:`~mstudy.probes.study_calls.reversal_filters`); select by evidence from
    the fact's own source (:func:`~mstudy.probes.selection.select_verified`)."""
    facts = {f.id: f for f in world.facts}
    filters = reversal_filters(world)
    roles = next(f for f in filters if isinstance(f, RoleCheck))
    candidates: list[Candidate] = []
    filtered: list[Candidate] = []
    chosen: dict[str, Candidate] = {}
    dropped: dict[str, str] = {}
    evidence: dict[str, str] = {}
    reasons: dict[str, int] = {}
    requests = rounds = round_trips = 0
    for round_ in range(samples):
        todo = [f for f in world.facts if f.id not in chosen]
        if not todo:
            break
        rounds += 1
        say(progress, f"teacher: reversal round {round_ + 1} of {samples}, {len(todo)} facts")
        accepted: list[Example] = []
        rejected: list[Rejection] = []
        sent = 0
        for shape, group in _by_shape(world, todo).items():
            strategy = probe_reverse(
                seed=seed * 1000 + round_,
                temperature=round_temperature(round_),
                max_new_tokens=max_new_tokens,
                prefill=prefill,
                examples=reverse_examples(shape, round_ if retry_prompts else 0),
                lead=reverse_lead(shape, round_ if retry_prompts else 0),
            )
            got, lost, n = run_study(
                teacher, strategy, filters, records(world, group), progress, cache
            )
            accepted, rejected, sent = [*accepted, *got], [*rejected, *lost], sent + n
        requests += sent
        if round_trip is not None:
            accepted, lost, n = _round_trip(round_trip, roles, accepted)
            rejected, round_trips = [*rejected, *lost], round_trips + n
        _count(reasons, rejected)
        for r in rejected:
            text = (r.row or {}).get("text")
            if r.stage.startswith("filter:") and isinstance(text, str) and r.source_id in facts:
                fact = facts[r.source_id]
                filtered.append(
                    Candidate(
                        fact,
                        text,
                        round_,
                        group_key(world, fact),
                        "",
                        f"{r.stage}: {r.reason}",
                    )
                )
        for ex in accepted:
            fact = facts[ex.source_id]
            source = world.statement(fact)
            reading = role_verdict(
                source, ex.text, fact.subject, fact.object, agents=roles.agents_for(source)
            )
            check = (
                "round trip" if isinstance(ex.fields.get("round_trip"), str) else reading.reading
            )
            candidates.append(Candidate(fact, ex.text, round_, group_key(world, fact), check))
        chosen, dropped, evidence = select_verified(candidates, min_agreement=min_agreement)
    reasons["selection: unverified"] = len(dropped)
    return (
        chosen,
        candidates,
        {
            "requests": requests,
            "round_trip_requests": round_trips,
            "rounds": rounds,
            "rejections": reasons,
            "evidence": evidence,
            "filtered": filtered,
        },
    )


def _paraphrase_rounds(
    world: World,
    teacher: Teacher,
    facts: Sequence[Fact],
    *,
    samples: int,
    seed: int,
    progress: bool,
    prefill: bool,
    cache: str | Path | None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """One accepted paraphrase per fact of ``facts``, sampled in rounds; filtered by
    ``paraphrase_check``, subject-first, dedup and length.

    The control must match the reversals' count, so it gets :data:`PARAPHRASE_EXTRA_ROUNDS`
    more rounds than the reversals (each only for the facts still missing one).
    """
    filters = paraphrase_filters(facts)
    chosen: dict[str, str] = {}
    reasons: dict[str, int] = {}
    requests = 0
    rounds = samples + PARAPHRASE_EXTRA_ROUNDS
    for round_ in range(rounds):
        todo = [f for f in facts if f.id not in chosen]
        if not todo:
            break
        strategy = probe_paraphrase(
            seed=seed * 1000 + round_, temperature=min(0.7 + 0.15 * round_, 1.0), prefill=prefill
        )
        say(progress, f"teacher: paraphrase round {round_ + 1}, {len(todo)} facts")
        accepted, rejected, sent = run_study(
            teacher, strategy, filters, records(world, todo), progress, cache
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
    evidence: dict[str, str] = field(default_factory=dict)
    filtered: list[Candidate] = field(default_factory=list)


def _truth_counts(world: World, items: Sequence[Candidate]) -> dict[str, Any]:
    counts = {"true": 0, "false": 0, "undecided": 0}
    for c in items:
        counts[world.reversal_truth(c.fact, c.text)] += 1
    n = len(items)
    return {
        "n": n,
        **counts,
        **{f"{k}_rate": (v / n if n else 0.0) for k, v in counts.items()},
    }


def study_world(
    world: World,
    teacher: Teacher | str = DEFAULTS["teacher"],
    *,
    samples: int = DEFAULTS["samples"],
    seed: int = 0,
    max_new_tokens: int = 24,
    min_agreement: int = 2,
    progress: bool = False,
    cache: str | Path | None = None,
    retry_prompts: bool = True,
    round_trip: bool = True,
) -> StudyOutcome:
    """Check the world end to end (:func:`~mstudy.probes.preflight.check_world_run`, before
    any teacher call), then run its forward statements through the teacher's studies.

    ``min_agreement``: how many samples of the same fact must agree on a reversal's pattern
    when the role check cannot confirm it (see
    :func:`~mstudy.probes.selection.select_verified`; 1 keeps every filtered reversal).
    ``cache``: a call cache for the teacher's studies (default none: every call is made).
    ``retry_prompts``: the rounds after the first ask the facts still without a verified
    reversal with other few-shot examples (:data:`~mstudy.probes.prompts.RETRY_EXAMPLES`), not
    only at a higher temperature (``False``: every round with the first round's examples).
    ``round_trip``: the reversals the role check can neither confirm nor deny are restated
    back subject-first by the teacher and kept only when that gives the source back
    (:class:`~mstudy.filters.roundtrip.RoundTrip`; not for the rules teacher, whose
    reversals are the world's own templates).
    """
    times: Times = {}
    with timer(times, "world check"):
        rules = check_world_run(world)
    say(progress, f"teacher: loading {teacher!r}")
    with timer(times, "teacher load"):
        model, teacher_name = _resolve_teacher(teacher, world)
        loader = getattr(model, "load", None)
        if callable(loader):
            loader()
    prefill = not isinstance(model, RulesTeacher)  # a template need not start with a name
    with timer(times, "teacher reversals"):
        chosen, candidates, rstats = _reversal_rounds(
            world,
            model,
            samples=samples,
            seed=seed,
            progress=progress,
            max_new_tokens=max_new_tokens,
            min_agreement=min_agreement,
            prefill=prefill,
            cache=cache,
            retry_prompts=retry_prompts,
            round_trip=(
                RoundTrip(teacher=model, readings=(), cache=cache)
                if round_trip and prefill
                else None
            ),
        )
    reversed_facts = [f for f in world.facts if f.id in chosen]
    with timer(times, "teacher paraphrases"):
        paraphrases, pstats = _paraphrase_rounds(
            world,
            model,
            reversed_facts,
            samples=samples,
            seed=seed,
            progress=progress,
            prefill=prefill,
            cache=cache,
        )
    closer = getattr(model, "close", None)
    if callable(closer) and isinstance(teacher, str):
        closer()  # free the teacher we built before the students train
    selected = _truth_counts(world, list(chosen.values()))
    filtered: list[Candidate] = rstats["filtered"]
    everything = _truth_counts(world, [*candidates, *filtered])
    evidence = rstats["evidence"]
    teacher_stats: dict[str, Any] = {
        "facts": len(world.facts),
        "facts_with_reversal": len(chosen),
        "true": selected["true"],
        "false": selected["false"],
        "undecided": selected["undecided"],
        "yield": len(chosen) / len(world.facts),
        "precision": selected["true_rate"],
        "false_rate": selected["false_rate"],
        "undecided_rate": selected["undecided_rate"],
        "selected": selected,
        "all_reversals": everything,
        "selected_by": {
            k: sum(1 for v in evidence.values() if v == k)
            for k in ("role check", "round trip", "samples agree")
        },
        "candidates_before_selection": len(candidates),
        "after_filters": _truth_counts(world, candidates),
        "requests": rstats["requests"],
        "round_trip_requests": rstats["round_trip_requests"],
        "call_cache": str(cache) if cache is not None else None,
        "rounds": rstats["rounds"],
        "rejections": rstats["rejections"],
        "precision_definition": (
            "each reversal is true (its normalised text, no case, punctuation or articles, "
            "matches one of the relation's inverse forms: object first, subject after; '*' "
            "in a form is 0-4 words), false (it matches a spec form, of any relation, that "
            "states a different fact about the two names: roles swapped or another relation) "
            "or undecided (neither: true but unlisted, or wrong in a way the spec cannot tell); "
            "'all_reversals' counts every reply the teacher wrote that parsed, filtered out "
            "or not, 'after_filters' those the filters passed, 'selected' the chosen ones"
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
        rule_reversals=rules.reversals,
        teacher_stats=teacher_stats,
        paraphrase_stats=paraphrase_stats,
        times=times,
        evidence=evidence,
        filtered=filtered,
    )
