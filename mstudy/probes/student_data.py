"""What each student is trained on per condition, and the held-out questions it is scored on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mstudy.probes.errors import LeakError
from mstudy.probes.leaks import check_no_leak, contains_question
from mstudy.probes.studying import StudyOutcome
from mstudy.probes.templates import canonical
from mstudy.probes.world import World

__all__ = ["StudentData", "build_student_data", "qa_prompt", "qa_text"]


def qa_text(question: str, answer: str) -> str:
    """A question-answer training sequence."""
    return f"Q: {question} A: {answer}"


def qa_prompt(question: str) -> str:
    """The prompt the student answers."""
    return f"Q: {question} A:"


@dataclass
class StudentData:
    """The student's training texts per condition, and the questions it is scored on."""

    base: list[str]
    extra: dict[str, list[str]]
    prompts: list[str]
    gold: list[set[str]]
    seen_prompts: list[str]
    seen_gold: list[set[str]]
    leak_check: dict[str, Any]
    paraphrases_from_rules: int = 0


def build_student_data(world: World, outcome: StudyOutcome) -> StudentData:
    """Training texts per condition; scored questions held out and checked for leaks.

    Base (every condition): the forward statements, one anchor per entity and the format
    facts' QA pairs in both directions. Extra: the teacher's selected reversals; as many
    paraphrases of the same facts (a fact the teacher could not paraphrase gets its rule
    paraphrase, subject first too, so the counts match exactly); the rule reversals. With
    the ``rules`` teacher the teacher-reversal condition is the ceiling itself and is not
    trained twice.
    """
    scored = world.scored_facts
    questions = [world.forward_question(f) for f in scored]
    questions += [world.reverse_question(f) for f in scored]
    qset = {canonical(q) for q in questions}
    base = [world.statement(f) for f in world.facts] + world.anchor_sentences()
    for f in world.format_facts:
        base.append(qa_text(world.forward_question(f), f.object))
        base.append(qa_text(world.reverse_question(f), f.subject))
    dropped = 0

    def clean(texts: list[str]) -> list[str]:
        nonlocal dropped
        kept = [t for t in texts if not contains_question(t, qset)]
        dropped += len(texts) - len(kept)
        return kept

    reversed_facts = [f for f in world.facts if f.id in outcome.reversals]
    kept = [f for f in reversed_facts if clean([outcome.reversals[f.id].text])]
    reversals = [outcome.reversals[f.id].text for f in kept]
    paraphrases: list[str] = []
    filled = 0
    for f in kept:  # one paraphrase per reversed fact: the teacher's, else the rule's
        teacher_text = outcome.paraphrases.get(f.id)
        if teacher_text is not None and clean([teacher_text]):
            paraphrases.append(teacher_text)
        else:
            paraphrases.append(world.paraphrase_statement(f))
            filled += 1
    rules = [outcome.rule_reversals[f.id] for f in world.facts]
    extra = {"forward": [], "teacher_reversals": reversals}
    extra["teacher_paraphrases"] = paraphrases
    extra["rule_reversals"] = rules
    if outcome.teacher == "rules":
        del extra["teacher_reversals"]
    texts = [*base, *(t for group in extra.values() for t in group)]
    checked = check_no_leak(texts, questions)
    fmt = world.format_facts
    prompts = [qa_prompt(world.forward_question(f)) for f in scored]
    prompts += [qa_prompt(world.reverse_question(f)) for f in scored]
    for prompt in prompts:
        if any(prompt in t for t in texts):
            raise LeakError(f"the prompt {prompt!r} occurs in the training data")
    return StudentData(
        base=base,
        extra=extra,
        prompts=prompts,
        gold=[world.answers(f, "forward") for f in scored]
        + [world.answers(f, "reverse") for f in scored],
        seen_prompts=[qa_prompt(world.forward_question(f)) for f in fmt]
        + [qa_prompt(world.reverse_question(f)) for f in fmt],
        seen_gold=[world.answers(f, "forward") for f in fmt]
        + [world.answers(f, "reverse") for f in fmt],
        leak_check={
            "questions": checked,
            "training_texts": len(set(texts)),
            "dropped": dropped,
        },
        paraphrases_from_rules=filled,
    )
