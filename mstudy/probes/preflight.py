"""The world checked end to end before any teacher call: everything the run will do with the
world's own rules.

:func:`check_world_run` runs the rules teacher's reversals and paraphrases through the very
studies and filters the teacher's will go through, checks that each rule reversal is a true
reversal by the world's own answer key, and that no scored question leaks into the training
texts they imply. A world that passes the structural checks (:mod:`mstudy.probes.world_checks`)
but would fail later (an inverse template a filter rejects, a paraphrase that names the object
first) fails here, in milliseconds, with the relation and template named.
"""

from __future__ import annotations

from dataclasses import dataclass

from mstudy.probes.errors import ProbeError
from mstudy.probes.leaks import check_no_leak
from mstudy.probes.prompts import probe_paraphrase, probe_reverse
from mstudy.probes.rules import rules_teacher
from mstudy.probes.study_calls import paraphrase_filters, records, reversal_filters, run_study
from mstudy.probes.world import World

__all__ = ["RuleData", "check_world_run"]


@dataclass(frozen=True)
class RuleData:
    """What the rules produce for a world: one reversal and one paraphrase per fact (by id)."""

    reversals: dict[str, str]
    paraphrases: dict[str, str]


def _fail(world: World, fact_id: str, what: str, text: str, why: str) -> ProbeError:
    fact = next(f for f in world.facts if f.id == fact_id)
    relation = world.relation(fact)
    template = relation.inverse if what == "reversal" else (relation.paraphrases or ("",))[0]
    return ProbeError(
        f"{world.where}, relation {relation.name!r}: the rule {what} of fact {fact_id!r} "
        f"({text!r}, from {template or 'the generic rewording'!r}) {why}; a teacher's "
        f"{what}s in this form would fail the same way, so the world is refused before any "
        "teacher call"
    )


def check_world_run(world: World) -> RuleData:
    """Run the world's rule reversals and paraphrases through the probe's studies and filters
    (rules teacher, no prefill); raise a ProbeError naming the relation, fact and template on
    the first failure; return the rule data."""
    teacher = rules_teacher(world)
    rows = records(world, world.facts)
    accepted, rejected, _ = run_study(
        teacher, probe_reverse(seed=0, prefill=False), reversal_filters(world), rows, False
    )
    for rejection in rejected:
        raise _fail(
            world,
            rejection.source_id,
            "reversal",
            world.inverse_statement(next(f for f in world.facts if f.id == rejection.source_id)),
            f"is rejected at {rejection.stage} ({rejection.reason}: {rejection.detail})",
        )
    by_id = {f.id: f for f in world.facts}
    reversals = {e.source_id: e.text for e in accepted}
    for fact_id, text in reversals.items():
        truth = world.reversal_truth(by_id[fact_id], text)
        if truth != "true":
            raise _fail(world, fact_id, "reversal", text, f"is {truth} by the world's own forms")
    missing = [f.id for f in world.facts if f.id not in reversals]
    if missing:
        raise ProbeError(f"{world.where}: no rule reversal for fact {missing[0]!r}")
    paraphrased, rejected_p, _ = run_study(
        teacher,
        probe_paraphrase(seed=0, prefill=False),
        paraphrase_filters(world.facts),
        rows,
        False,
    )
    for rejection in rejected_p:
        fact = by_id[rejection.source_id]
        raise _fail(
            world,
            rejection.source_id,
            "paraphrase",
            world.paraphrase_statement(fact),
            f"is rejected at {rejection.stage} ({rejection.reason}: {rejection.detail})",
        )
    paraphrases = {e.source_id: e.text for e in paraphrased}
    scored = world.scored_facts
    questions = [world.forward_question(f) for f in scored]
    questions += [world.reverse_question(f) for f in scored]
    texts = [world.statement(f) for f in world.facts] + world.anchor_sentences()
    check_no_leak([*texts, *reversals.values(), *paraphrases.values()], questions)
    return RuleData(reversals=reversals, paraphrases=paraphrases)
