"""What each composition student is trained on, what it is asked, and the leak check.

Base (every condition), each fact learnt in texts of its own, as in the two-hop studies a
direct student is expected to fail:

* every atomic statement;
* a profile per entity as a question and answer, its anchor then its own atomic statements
  *except its first hops* (``Q: What is Zapoth? A: Zapoth is a person. Zapoth lives in
  Fadukov. Zapoth works for Brelin.``): the student reads every name in a question and writes
  it in the answer, and meets the second hops in the middle of a text, as a chain needs;
* each first-hop fact twice more, each time after an unrelated fact (``Quenor lives in
  Vadrim. Zapoth's mentor is Rigux.``, no entity shared): the first hop mid-text too, as a
  chain's first step needs it, in no text with its subject's other facts. With the first hop
  inside the profile, direct students composed the two hops without writing them far more
  often (35% and 5% on held-out questions against chance 3%, generated world of 40 people):
  the direct condition then measures the student's own composing, not what studying adds.
  Some student seeds still do (docs/probe.md, "First hops in texts of their own");
* the format questions' direct question-answer pairs (``Q: <question> A: <answer>``).

Extras:

* ``atomic``: none;
* ``teacher_chains`` / ``rule_chains``: step-by-step solutions of the format questions
  (``Q: <question> Steps: <chain>``), the teacher's (those that passed the checks) or the
  rules'; these students are asked ``Q: <held-out question> Steps:`` and scored by the final
  answer of the chain they write;
* ``teacher_connect`` / ``rule_connect``: one composed statement per question (all of them);
* ``teacher_paraphrases``: as many subject-first paraphrases of atomic facts as there are
  teacher composed statements (the data-size control).

With the ``rules`` teacher the two teacher conditions are the ceilings and are not trained
twice. No held-out question, and no held-out question's rule chain, occurs in any training
text (checked after normalisation; a teacher text holding a held-out question is dropped and
counted; the run stops if one is still there).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from mstudy.probes.compose_studying import ComposeStudy
from mstudy.probes.compose_world import ComposeWorld
from mstudy.probes.errors import LeakError
from mstudy.probes.leaks import check_no_leak, contains_question
from mstudy.probes.student_data import qa_prompt, qa_text
from mstudy.probes.templates import canonical

__all__ = ["COMPOSE_CONDITIONS", "ComposeData", "build_compose_data", "chain_prompt"]


#: Condition name -> (table label, how the student answers: "direct" or "chain").
COMPOSE_CONDITIONS: dict[str, tuple[str, str]] = {
    "atomic": ("atomic facts + direct QA (format half)", "direct"),
    "teacher_chains": ("+ teacher chains (cot, format half)", "chain"),
    "rule_chains": ("+ rule chains (ceiling)", "chain"),
    "teacher_connect": ("+ teacher-connected statements (all)", "direct"),
    "rule_connect": ("+ rule-connected statements (ceiling)", "direct"),
    "teacher_paraphrases": ("+ teacher paraphrases (same count)", "direct"),
}

_TOKENS = re.compile(r"\w+|[^\w\s]+")


def first_hop_relations(world: ComposeWorld) -> frozenset[str]:
    """The relations some composition starts with."""
    return frozenset(c.first for c in world.compositions.values())


def profiles(world: ComposeWorld) -> dict[str, str]:
    """Entity -> its anchor followed by its own atomic statements, first hops left out."""
    first = first_hop_relations(world)
    out = {e: world.anchor(e, t) for e, t in world.entity_types.items()}
    for fact in world.facts:
        if fact.relation not in first:
            out[fact.subject] += " " + world.statement(fact)
    return out


FIRST_HOP_CONTEXTS = 2
"""Texts that hold each first-hop fact after an unrelated sentence."""


def first_hops_in_context(world: ComposeWorld) -> list[str]:
    """Each first-hop fact after unrelated sentences, :data:`FIRST_HOP_CONTEXTS` times (seeded
    by the world's seed): facts sharing no entity with it, or, in a world too small for one,
    other entities' anchors. Only the chosen leads are rendered: the unrelated facts are the
    complement of the fact's entities' own facts, sampled by position."""
    rng = random.Random(world.seed)
    first = first_hop_relations(world)
    facts = world.facts
    touching: dict[str, set[int]] = {}
    for i, g in enumerate(facts):
        touching.setdefault(g.subject, set()).add(i)
        touching.setdefault(g.object, set()).add(i)
    out = []
    for fact in facts:
        if fact.relation not in first:
            continue
        mine = {fact.subject, fact.object}
        excluded = sorted(touching[fact.subject] | touching[fact.object])
        unrelated = len(facts) - len(excluded)
        if unrelated:
            picks = rng.sample(range(unrelated), min(FIRST_HOP_CONTEXTS, unrelated))
            leads = [world.statement(facts[_skip(j, excluded)]) for j in picks]
        else:
            anchors = [world.anchor(e, t) for e, t in world.entity_types.items() if e not in mine]
            leads = rng.sample(anchors, min(FIRST_HOP_CONTEXTS, len(anchors))) or [""]
        for lead in leads:
            out.append(f"{lead} {world.statement(fact)}".strip())
    return out


def _skip(j: int, excluded: list[int]) -> int:
    """The position of the ``j``-th fact not in ``excluded`` (sorted positions)."""
    for e in excluded:
        if e > j:
            break
        j += 1
    return j


def chain_prompt(question: str) -> str:
    """The prompt a chain student answers: it writes the steps, then the final answer."""
    return f"Q: {question} Steps:"


def chain_qa(question: str, chain: str) -> str:
    return f"{chain_prompt(question)} {chain}"


@dataclass
class ComposeData:
    """Training texts per condition, prompts (held out first, then format) and gold answers."""

    base: list[str]
    extra: dict[str, list[str]]
    prompts: dict[str, list[str]]
    gold: list[frozenset[str]]
    held_out: int
    leak_check: dict[str, Any]
    paraphrases_from_rules: int = 0
    max_new_tokens: int = 8
    modes: dict[str, str] = field(default_factory=dict)


def build_compose_data(world: ComposeWorld, study: ComposeStudy) -> ComposeData:
    """Build every condition's texts and prompts; check that nothing held out leaks."""
    held, fmt = world.held_out, world.format_questions
    questions = [world.question_text(q) for q in held]
    qset = {canonical(q) for q in questions}
    dropped = 0

    def clean(text: str) -> bool:
        nonlocal dropped
        if contains_question(text, qset):
            dropped += 1
            return False
        return True

    base = [world.statement(f) for f in world.facts]
    base += [qa_text(f"What is {e}?", profile) for e, profile in profiles(world).items()]
    base += first_hops_in_context(world)
    base += [qa_text(world.question_text(q), q.answer) for q in fmt]
    teacher_chains = [
        chain_qa(world.question_text(q), study.chains[q.id])
        for q in fmt
        if q.id in study.chains and clean(study.chains[q.id])
    ]
    rule_chains = [chain_qa(world.question_text(q), study.rule_chains[q.id]) for q in fmt]
    teacher_connect = [
        study.connected[q.id]
        for q in world.questions
        if q.id in study.connected and clean(study.connected[q.id])
    ]
    rule_connect = [study.rule_connected[q.id] for q in world.questions]
    paraphrases: list[str] = []
    filled = 0
    wanted = len(rule_connect) if study.teacher == "rules" else len(teacher_connect)
    for fact, text in study.paraphrases[:wanted]:
        if text is not None and clean(text):
            paraphrases.append(text)
        else:
            paraphrases.append(world.paraphrase_statement(fact))
            filled += 1
    extra = {
        "atomic": [],
        "teacher_chains": teacher_chains,
        "rule_chains": rule_chains,
        "teacher_connect": teacher_connect,
        "rule_connect": rule_connect,
        "teacher_paraphrases": paraphrases,
    }
    if study.teacher == "rules":
        del extra["teacher_chains"], extra["teacher_connect"]
    texts = [*base, *(t for group in extra.values() for t in group)]
    held_chains = [world.rule_chain(q) for q in held]
    checked = check_no_leak(texts, [*questions, *held_chains])
    modes = {name: COMPOSE_CONDITIONS[name][1] for name in extra}
    asked = [*held, *fmt]
    prompts: dict[str, list[str]] = {}
    for name, mode in modes.items():
        make = chain_prompt if mode == "chain" else qa_prompt
        prompts[name] = [make(world.question_text(q)) for q in asked]
    for prompt in {p for name in prompts for p in prompts[name][: len(held)]}:
        if any(prompt in t for t in texts):
            raise LeakError(f"the prompt {prompt!r} occurs in the training data")
    longest = max(
        (
            len(_TOKENS.findall(t)) - len(_TOKENS.findall(t.split(" Steps: ", 1)[0]))
            for t in [*teacher_chains, *rule_chains]
        ),
        default=0,
    )
    return ComposeData(
        base=base,
        extra=extra,
        prompts=prompts,
        gold=[q.answers for q in asked],
        held_out=len(held),
        leak_check={
            "questions": len({canonical(q) for q in questions}),
            "chains": len(held_chains),
            "checked": checked,
            "training_texts": len(set(texts)),
            "dropped": dropped,
        },
        paraphrases_from_rules=filled,
        max_new_tokens=max(8, longest + 4),
        modes=modes,
    )
