"""The reversal prompts: few-shot examples by the statement's shape, other examples for the
facts still without a verified reversal (rules teacher with injected errors, small worlds)."""

from __future__ import annotations

from harness.probe_worlds import TEACHES, small_world
from hypothesis import given, settings
from hypothesis import strategies as st

from mstudy.probes.noisy import noisy_rules_teacher
from mstudy.probes.prompts import (
    RETRY_EXAMPLES,
    REVERSE_EXAMPLES,
    ROLE_EXAMPLES,
    THIRD_EXAMPLES,
    reverse_examples,
    reverse_lead,
    statement_shape,
)
from mstudy.probes.studying import study_world
from mstudy.probes.world import Relation
from mstudy.records import Request
from mstudy.teachers.scripted import ScriptedTeacher

CAPTAIN = Relation(
    name="captain",
    subject_type="person",
    object_type="ship",
    forward="{subject} is the captain of {object}.",
    inverse="The ship {object} is captained by {subject}.",
    forward_question="Which vessel does {subject} steer?",
    reverse_question="Who steers {object}?",
    inverse_forms=("{object} * captained by {subject}.", "{object} * captain is {subject}."),
    paraphrases=("{subject} captains {object}.",),
)


_part = st.text(alphabet="bdfgklmnprstvz", min_size=3, max_size=8).map(str.capitalize)
_name = st.lists(_part, min_size=1, max_size=3, unique=True).map(" ".join)
_noun = st.sampled_from(["captain", "grandmother", "editor", "warden", "sponsor", "coach"])
_verb = st.sampled_from(["teaches", "founded", "employs", "designed", "lives in", "was born in"])


@settings(max_examples=60, deadline=None)
@given(subject=_name, obj=_name, noun=_noun, verb=_verb, article=st.sampled_from(["the", "a"]))
def test_statement_shape_reads_roles_and_verbs(
    subject: str, obj: str, noun: str, verb: str, article: str
) -> None:
    if subject.casefold() == obj.casefold() or subject in obj or obj in subject:
        return
    role = f"{subject} is {article} {noun} of {obj}."
    assert statement_shape(role, subject, obj) == "role"
    assert statement_shape(f"{subject} was {article} {noun} to {obj}.", subject, obj) == "role"
    assert statement_shape(f"{subject} {verb} {obj}.", subject, obj) == "verb"
    assert reverse_examples("role") == ROLE_EXAMPLES
    assert reverse_examples("verb") == REVERSE_EXAMPLES
    assert reverse_examples("role", 1) == reverse_examples("verb", 1) == RETRY_EXAMPLES
    assert reverse_examples("role", 2) == reverse_examples("verb", 3) == THIRD_EXAMPLES


def test_example_sets_use_no_word_of_a_probe_world_relation() -> None:
    """The few-shot examples teach the form of a reversal, never an answer: none names a
    relation of the built-in world or of the measurement worlds."""
    banned = {"teach", "taught", "teacher", "captain", "found", "establish", "live", "born",
              "wrote", "written", "discover", "paint", "mentor", "grandmother", "compos",
              "employ", "design", "sponsor", "owns", "owner", "edit", "coach"}  # fmt: skip
    for examples in (ROLE_EXAMPLES, RETRY_EXAMPLES, THIRD_EXAMPLES):
        for fields, reply in examples:
            text = f"{fields['text']} {reply}".casefold()
            assert not [w for w in banned if w in text], (fields, reply)


def test_role_statements_are_asked_with_the_role_examples() -> None:
    world = small_world(CAPTAIN, TEACHES, facts=12)
    seen: dict[str, set[str]] = {}
    prefills: dict[str, set[str]] = {}

    def reply(request: Request) -> str:
        v = request.variables
        fact = next(f for f in world.facts if f.subject == v.get("subject"))
        if request.strategy == "paraphrase":
            return world.paraphrase_statement(fact)
        shots = "|".join(m.content for m in request.messages[:-1])
        seen.setdefault(fact.relation, set()).add(shots)
        prefills.setdefault(fact.relation, set()).add(str(request.prefill))
        if fact.relation == "captain":  # "B's captain is A": the prefill is "B's"
            return f" captain is {fact.subject}."
        return world.inverse_statement(fact)

    outcome = study_world(world, ScriptedTeacher(reply), samples=1)
    assert outcome.teacher_stats["yield"] == 1.0 and outcome.teacher_stats["precision"] == 1.0
    assert set(seen) == {"captain", "teaches"}
    assert all(ROLE_EXAMPLES[-1][1] in shots for shots in seen["captain"])
    assert all(REVERSE_EXAMPLES[-1][1] in shots for shots in seen["teaches"])
    assert not any(ROLE_EXAMPLES[-1][1] in shots for shots in seen["teaches"])
    captains = {f.object + "'s" for f in world.facts if f.relation == "captain"}
    assert prefills["captain"] == captains  # the possessive, not "B is the captain of A"
    assert prefills["teaches"] == {f.object for f in world.facts if f.relation == "teaches"}


def test_retry_rounds_with_other_examples_raise_the_verified_share() -> None:
    """A teacher whose habits belong to its prompt (systematic errors, redrawn when the
    few-shot examples change): resampling the same prompt hotter repeats the errors; asking the
    facts without a verified reversal with other examples raises the share that has one, and
    every selected reversal stays true."""
    world = small_world(TEACHES, CAPTAIN, facts=40, seed=5)
    yields = {}
    for retry in (False, True):
        teacher = noisy_rules_teacher(world, 0.5, seed=4, prompt_sensitive=True)
        outcome = study_world(world, teacher, samples=3, retry_prompts=retry)
        stats = outcome.teacher_stats
        assert stats["false"] == 0
        yields[retry] = stats["yield"]
    same_prompt = noisy_rules_teacher(world, 0.5, seed=4, prompt_sensitive=True)
    one_round = study_world(world, same_prompt, samples=1).teacher_stats["yield"]
    assert yields[False] == one_round  # the same prompt, hotter: the same facts wrong
    assert yields[True] > yields[False] + 0.1


def test_more_rounds_raise_the_verified_share_of_a_teacher_with_random_errors() -> None:
    world = small_world(TEACHES, CAPTAIN, facts=40, seed=6)
    shares = []
    for samples in (1, 2, 3):
        teacher = noisy_rules_teacher(world, 0.5, seed=2, systematic=False)
        stats = study_world(world, teacher, samples=samples).teacher_stats
        assert stats["false"] == 0
        shares.append(stats["yield"])
    assert shares[0] < shares[1] < shares[2]


EMPLOYS = Relation(
    name="employs",
    subject_type="person",
    object_type="worker",
    forward="{subject} employs {object}.",
    inverse="{object} works for {subject}.",
    forward_question="Whom does {subject} pay?",
    reverse_question="Who pays {object}?",
    inverse_forms=("{object} * works for {subject}.",),
    paraphrases=("{subject} is the employer of {object}.",),
)


def test_round_trip_verifies_reversals_that_share_no_word_with_their_source() -> None:
    """ "B works for A" for "A employs B" is true but has no word of "employs": the role check
    cannot confirm it. A teacher that restates it back gives "A employs B": selected. An
    unsupported "B works at A" restates as "A is the workplace of B": not selected."""
    world = small_world(EMPLOYS, facts=16, seed=2)
    wrong = {f.id for f in world.facts[::4]}

    def reply(request: Request) -> str:
        v = request.variables
        if request.strategy == "round_trip":
            text, s = str(v["text"]), str(v["subject"])
            fact = next(f for f in world.facts if f.subject == s)
            if " works at " in text:
                return f" is the workplace of {fact.object}."
            return f" employs {fact.object}."
        fact = next(f for f in world.facts if f.subject == v.get("subject"))
        if request.strategy == "paraphrase":
            return world.paraphrase_statement(fact)
        if fact.id in wrong:
            return f" works at {fact.subject}."
        return f" works for {fact.subject}."

    without = study_world(world, ScriptedTeacher(reply), samples=1, round_trip=False)
    assert without.teacher_stats["yield"] == 0  # unverifiable by the role check alone
    outcome = study_world(world, ScriptedTeacher(reply), samples=1)
    stats = outcome.teacher_stats
    assert set(outcome.reversals) == {f.id for f in world.facts} - wrong
    assert stats["precision"] == 1.0 and stats["false"] == 0
    assert stats["selected_by"]["round trip"] == len(world.facts) - len(wrong)
    assert stats["round_trip_requests"] == len(world.facts)
    assert stats["rejections"]["filter:round_trip: round trip differs"] == len(wrong)


def test_each_round_leads_with_another_form() -> None:
    assert [reverse_lead("verb", r) for r in range(4)] == ["", " was", "'s", "'s"]
    assert [reverse_lead("role", r) for r in range(4)] == ["'s", "'s", " was", " was"]


def test_a_third_round_with_another_prefill_raises_the_verified_share_again() -> None:
    world = small_world(TEACHES, CAPTAIN, facts=40, seed=8)
    shares = []
    for samples in (1, 2, 3):
        teacher = noisy_rules_teacher(world, 0.6, seed=5, prompt_sensitive=True)
        stats = study_world(world, teacher, samples=samples).teacher_stats
        assert stats["false"] == 0 and stats["precision"] == 1.0
        shares.append(stats["yield"])
    assert shares[0] < shares[1] < shares[2]
