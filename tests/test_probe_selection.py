"""Reversal selection against the source, three-part precision, the world checked end to end
before any teacher call (rules teacher, small generated worlds)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from harness.probe_worlds import TEACHES, small_world

from mstudy.filters.consistency import ReverseCheck
from mstudy.probes.errors import ProbeError
from mstudy.probes.noisy import noisy_rules_teacher
from mstudy.probes.outputs import write_outputs
from mstudy.probes.prompts import probe_reverse
from mstudy.probes.reversal import run_probe
from mstudy.probes.rules import (
    Candidate,
    SwapFilter,
    entities_by_id,
    group_key,
    select_consistent,
)
from mstudy.probes.study_calls import records, run_study
from mstudy.probes.studying import study_world
from mstudy.probes.world import Relation
from mstudy.records import Request
from mstudy.teachers.scripted import ScriptedTeacher

ARTICLE = Relation(
    name="founded",
    subject_type="person",
    object_type="company",
    forward="{subject} founded {object}.",
    inverse="The company {object} was founded by {subject}.",
    forward_question="Which company did {subject} set up?",
    reverse_question="Who set up {object}?",
)


class _Counting(ScriptedTeacher):
    """Answers with the world's inverse statement and counts its calls."""


def test_inverse_template_starting_with_an_article_runs() -> None:
    """The fail-late bug: with an inverse template that does not start with the object, the
    rules teacher's reply got the object prefill glued in front ("<object>The company
    <object> was ...") and the probe failed after all the teacher's work."""
    world = small_world(ARTICLE, facts=12)
    outcome = study_world(world, "rules", samples=1)
    for fact in world.facts:
        assert outcome.rule_reversals[fact.id] == world.inverse_statement(fact)
        assert outcome.rule_reversals[fact.id].startswith("The company ")
    assert outcome.teacher_stats["precision"] == 1.0
    assert outcome.teacher_stats["yield"] == 1.0


def test_a_world_the_filters_would_refuse_fails_before_any_teacher_call() -> None:
    owns = Relation(
        name="owns",
        subject_type="person",
        object_type="item",
        forward="{subject} owns {object}.",
        inverse="{object} is the property of {subject}.",  # reverse_check wants "owned by" ...
        forward_question="Which item does {subject} hold?",
        reverse_question="Who holds {object}?",
    )
    world = small_world(owns, facts=8)
    teacher = _Counting(lambda request: "never asked")
    with pytest.raises(ProbeError, match=r"relation 'owns'.*reverse_check") as caught:
        study_world(world, teacher, samples=1)
    assert teacher.calls == 0
    assert "before any teacher call" in str(caught.value)


def test_a_rule_paraphrase_the_study_would_reject_fails_before_any_teacher_call() -> None:
    wordy = Relation(
        name="founded",
        subject_type="person",
        object_type="company",
        forward="{subject} founded {object}.",
        inverse="{object} was founded by {subject}.",
        forward_question="Which company did {subject} set up?",
        reverse_question="Who set up {object}?",
        # valid for the world checks (subject first), too long for the paraphrase strategy
        paraphrases=("In the records, {subject} appears as the one who founded {object}.",),
    )
    world = small_world(wordy, facts=8)
    teacher = _Counting(lambda request: "never asked")
    with pytest.raises(ProbeError, match=r"rule paraphrase .*length ratio"):
        study_world(world, teacher, samples=1)
    assert teacher.calls == 0


def test_systematic_role_swaps_are_not_selected_where_consistency_selected_them() -> None:
    """A teacher that swaps the roles of every fact it gets wrong, the same way for all of
    them: agreement across facts selects the swaps; the role check against each fact's own
    source removes them."""
    world = small_world(TEACHES, ARTICLE, facts=40)
    teacher = noisy_rules_teacher(world, 0.5, seed=1, kinds=("swap",))
    # the previous pipeline: reverse_check, the swap filter, agreement across facts
    before: list[Candidate] = []
    for round_ in range(2):
        accepted, _, _ = run_study(
            teacher,
            probe_reverse(seed=round_, prefill=False),
            [ReverseCheck(), SwapFilter(entities_by_id(world.facts))],
            records(world, world.facts),
            False,
        )
        for ex in accepted:
            fact = next(f for f in world.facts if f.id == ex.source_id)
            before.append(Candidate(fact, ex.text, round_, group_key(world, fact)))
    old, _ = select_consistent(before)
    old_truth = Counter(world.reversal_truth(c.fact, c.text) for c in old.values())
    assert old_truth["false"] > 0  # agreement across facts selected the habit
    outcome = study_world(world, teacher, samples=2)
    stats = outcome.teacher_stats
    assert stats["false"] == 0 and stats["precision"] == 1.0
    assert stats["rejections"].get("filter:role_check: roles swapped", 0) > 0


def test_hallucinated_patterns_are_not_selected() -> None:
    world = small_world(TEACHES, ARTICLE, facts=40, seed=5)
    teacher = noisy_rules_teacher(world, 0.6, seed=2, kinds=("hallucination",))
    outcome = study_world(world, teacher, samples=2)
    truth = Counter(world.reversal_truth(c.fact, c.text) for c in outcome.reversals.values())
    assert set(truth) == {"true"}
    everything = outcome.teacher_stats["all_reversals"]
    assert everything["n"] > len(outcome.reversals) and everything["true_rate"] < 1


def test_three_part_precision_and_examples_in_reversals_jsonl(tmp_path: Path) -> None:
    world = small_world(TEACHES, ARTICLE, facts=24, seed=7)
    teacher = noisy_rules_teacher(world, 0.5, seed=3, systematic=False)
    result = run_probe(teacher=teacher, world=world, seeds=1, epochs=2, samples=2, workers=1)
    stats = result.teacher_stats
    for part in ("selected", "after_filters", "all_reversals"):
        block = stats[part]
        assert block["true"] + block["false"] + block["undecided"] == block["n"]
        assert block["true_rate"] + block["false_rate"] + block["undecided_rate"] == (
            pytest.approx(1.0)
        )
    # selection moves precision up, never down
    assert stats["selected"]["true_rate"] >= stats["all_reversals"]["true_rate"]
    assert stats["selected"]["false_rate"] <= stats["all_reversals"]["false_rate"]
    assert stats["all_reversals"]["false"] > 0 and stats["selected"]["false"] == 0
    write_outputs(result, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "reversals.jsonl").read_text().splitlines()]
    assert {r["truth"] for r in rows} == {"true", "false", "undecided"}
    assert all(r["evidence"] in ("role check", "samples agree") for r in rows if r["selected"])
    assert any(r["rejected"] for r in rows) and not any(
        r["rejected"] for r in rows if r["selected"]
    )


def test_reversal_truth_reads_the_spec() -> None:
    world = small_world(TEACHES, ARTICLE, facts=8)
    fact = next(f for f in world.facts if f.relation == "teaches")
    s, o = fact.subject, fact.object
    assert world.reversal_truth(fact, f"{o}'s teacher is {s}.") == "true"
    assert world.reversal_truth(fact, f"{o} is the teacher of {s}.") == "false"  # roles swapped
    assert world.reversal_truth(fact, f"{o} teaches {s}.") == "false"
    other = f"The company {o} was founded by {s}."  # another relation of the spec
    assert world.reversal_truth(fact, other) == "false"
    assert world.reversal_truth(fact, f"{o} owes much to {s}.") == "undecided"


def test_selection_prefers_verified_roles_and_needs_agreement_otherwise() -> None:
    world = small_world(TEACHES, facts=8)

    def reply(request: Request) -> str:
        v = request.variables
        fact = next(f for f in world.facts if f.subject == v.get("subject"))
        s, o = fact.subject, fact.object
        if request.strategy == "paraphrase":
            return world.paraphrase_statement(fact)
        index = world.facts.index(fact)
        if index % 2:  # a form of the relation the role check cannot read: needs agreement
            return (
                f"{o} gets teaching from {s}." if request.sample == 0 else f"{o} is taught by {s}."
            )
        return f"{o} gets teaching from {s}."

    # the agreement path alone: this teacher answers every request with a reversal, so it
    # cannot restate one back (the round trip has its own tests, tests/test_probe_prompts.py)
    one = study_world(world, ScriptedTeacher(reply), samples=1, round_trip=False)
    assert one.reversals == {}  # unknown roles, one sample: nothing verified
    two = study_world(world, ScriptedTeacher(reply), samples=2, round_trip=False)
    assert set(two.reversals) == {f.id for f in world.facts}  # the second round agrees
    assert set(two.evidence.values()) == {"samples agree"}
