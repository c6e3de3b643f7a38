"""The composition probe's world: atomic facts about people and the two-hop questions they imply.

A world has relation types (``"{subject}'s mentor is {object}."``, ``"{subject} lives in
{object}."``) and *compositions*: a first relation followed by a second one whose subject is
the first one's object, with

* ``question``: the two-hop question about a subject (``"Where does {subject}'s mentor
  live?"``);
* ``composed``: the composed statement a studying teacher should write
  (``"{subject}'s mentor {middle} lives in {object}."``): the rule ``connect``, and the first
  of the ``composed_forms`` a teacher's statement is measured against.

Every ``(subject, composition)`` with at least one path ``subject -first-> middle -second->
answer`` is a :class:`TwoHop` question. Half the questions of each composition (seeded) are
*format* questions, whose answers (or step-by-step solutions) the student is trained on; the
other half are *held out* and scored. The split keeps questions that share a subject or a
middle entity on the same side, so a held-out answer cannot be had without composing: no
held-out first hop is ever a format question's first hop (:meth:`ComposeWorld.shortcuts`
counts what is left: answers equal to the subject's own one-hop fact, the commonest answer).
Every entity also gets an anchor sentence.

Everything is checked on construction (:func:`check_compose_world`), rule chains and composed
statements included, so a bad world fails before any teacher is called.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mstudy.probes.errors import WorldError
from mstudy.probes.templates import PLACEHOLDER, canonical, fill, form_pattern
from mstudy.probes.world import Fact
from mstudy.probes.world_checks import check_name

__all__ = [
    "ComposeRelation",
    "ComposeWorld",
    "Composition",
    "TwoHop",
    "chain_text",
    "check_compose_world",
    "fill3",
]


@dataclass(frozen=True)
class ComposeRelation:
    """An atomic relation: its statement template (subject first) and rule paraphrases."""

    name: str
    forward: str
    subject_type: str = "entity"
    object_type: str = "entity"
    paraphrases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "paraphrases", tuple(self.paraphrases))
        where = f"relation {self.name!r}"
        check_name(self.name, "a relation", "name")
        for key in ("subject_type", "object_type"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise WorldError(f"{where}, {key}: must be a non-empty string")
        _check_template(where, "forward", self.forward, ("subject", "object"))
        for i, form in enumerate(self.paraphrases):
            _check_template(where, f"paraphrases[{i}]", form, ("subject", "object"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject_type": self.subject_type,
            "object_type": self.object_type,
            "forward": self.forward,
            "paraphrases": list(self.paraphrases),
        }


@dataclass(frozen=True)
class Composition:
    """Two relations chained: ``subject -first-> middle -second-> object``."""

    name: str
    first: str
    second: str
    question: str
    composed: str
    composed_forms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "composed_forms", tuple(self.composed_forms))
        where = f"composition {self.name!r}"
        check_name(self.name, "a composition", "name")
        for key in ("first", "second"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise WorldError(f"{where}, {key}: must name a relation")
        _check_template(where, "question", self.question, ("subject",))
        _check_template(
            where, "composed", self.composed, ("subject", "middle", "object"), middle_ok=True
        )
        for i, form in enumerate(self.composed_forms):  # a form may leave the middle out
            needs = ("subject", "middle", "object") if "{middle}" in form else ("subject", "object")
            _check_template(where, f"composed_forms[{i}]", form, needs, middle_ok=True)

    @property
    def all_composed_forms(self) -> tuple[str, ...]:
        return (self.composed, *(f for f in self.composed_forms if f != self.composed))

    def to_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "second": self.second,
            "question": self.question,
            "composed": self.composed,
            "composed_forms": list(self.composed_forms),
        }


def _check_template(
    where: str, key: str, template: Any, needs: Sequence[str], *, middle_ok: bool = False
) -> None:
    """Each placeholder of ``needs`` exactly once, no other; subject before object."""
    at = f"{where}, {key}"
    if not isinstance(template, str) or not template.strip():
        raise WorldError(f"{at}: must be a non-empty string")
    found = PLACEHOLDER.findall(template)
    allowed = {"subject", "object"} | ({"middle"} if middle_ok else set())
    unknown = sorted({p for p in found if p not in allowed})
    if unknown:
        raise WorldError(
            f"{at}: unknown placeholder(s) {', '.join('{' + p + '}' for p in unknown)} in "
            f"{template!r}; use {', '.join('{' + p + '}' for p in sorted(allowed))}"
        )
    if "{" in PLACEHOLDER.sub("", template) or "}" in PLACEHOLDER.sub("", template):
        raise WorldError(f"{at}: unbalanced brace in {template!r}")
    for name in sorted(allowed):
        count, wanted = found.count(name), int(name in needs)
        if count != wanted:
            what = "exactly once" if wanted else "not at all"
            raise WorldError(f"{at}: {{{name}}} must appear {what} in {template!r} (found {count})")
    if "object" in needs and template.index("{subject}") > template.index("{object}"):
        raise WorldError(f"{at}: must name the subject before the object, got {template!r}")


def fill3(template: str, subject: str, middle: str, obj: str) -> str:
    """``template`` with ``{subject}``, ``{middle}`` and ``{object}`` filled."""
    return fill(template.replace("{middle}", middle), subject, obj)


def chain_text(steps: Sequence[str], answer: str) -> str:
    """A one-line step-by-step solution: the steps, then ``Final answer: <answer>``."""
    return " ".join([*steps, f"Final answer: {answer}"])


@dataclass(frozen=True)
class TwoHop:
    """A two-hop question: ``subject``'s answer(s) through the ``paths`` of a composition."""

    id: str
    composition: str
    subject: str
    paths: tuple[tuple[Fact, Fact], ...]
    held_out: bool = False

    @property
    def answers(self) -> frozenset[str]:
        """Every right answer (a subject with two paths has two)."""
        return frozenset(second.object for _, second in self.paths)

    @property
    def answer(self) -> str:
        """The answer of the first path: what format data and rule texts use."""
        return self.paths[0][1].object

    @property
    def middle(self) -> str:
        return self.paths[0][0].object


@dataclass
class ComposeWorld:
    """Relations, compositions and facts; validated and split into questions on construction.

    Args:
        relations / compositions: by name.
        facts: the atomic facts (their ``scored`` flag is not used: questions are split).
        anchors: entity type -> anchor template with ``{entity}``.
        seed: splits each composition's questions half format, half held out.
    """

    relations: dict[str, ComposeRelation]
    compositions: dict[str, Composition]
    facts: list[Fact]
    anchors: dict[str, str] = field(default_factory=dict)
    where: str = "compose world"
    seed: int = 0
    questions: list[TwoHop] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        check_compose_world(self.relations, self.compositions, self.facts, self.anchors, self.where)
        self.questions = self._questions()
        for composition in self.compositions.values():
            mine = [q for q in self.questions if q.composition == composition.name]
            if len(mine) < 2:
                raise WorldError(
                    f"{self.where}: composition {composition.name!r} has {len(mine)} two-hop "
                    "question(s); it needs at least 2 (one format, one held out): add facts "
                    f"of {composition.second!r} about the objects of {composition.first!r}"
                )
        self._split()
        self._check_rule_texts()

    def _questions(self) -> list[TwoHop]:
        by_subject: dict[tuple[str, str], list[Fact]] = {}
        for fact in self.facts:
            by_subject.setdefault((fact.relation, fact.subject), []).append(fact)
        out: list[TwoHop] = []
        for composition in self.compositions.values():
            found: dict[str, list[tuple[Fact, Fact]]] = {}
            for first in self.facts:
                if first.relation != composition.first:
                    continue
                for second in by_subject.get((composition.second, first.object), []):
                    found.setdefault(first.subject, []).append((first, second))
            for i, subject in enumerate(found):
                out.append(
                    TwoHop(
                        id=f"{composition.name}:{i:04d}",
                        composition=composition.name,
                        subject=subject,
                        paths=tuple(found[subject]),
                    )
                )
        return out

    def _split(self) -> None:
        """Hold out about half of each composition's questions (seeded), in whole *groups*:
        questions that share a subject, or a middle entity, in any composition are held out
        together. So no held-out question's subject or middle entity is a format question's
        subject or middle: a student cannot learn a held-out chain's first hop, or which
        answers go with its middle entity, from the format half; it has to compose."""
        parent: dict[tuple[str, str], tuple[str, str]] = {}

        def root(node: tuple[str, str]) -> tuple[str, str]:
            parent.setdefault(node, node)
            while parent[node] != node:
                parent[node] = parent[parent[node]]
                node = parent[node]
            return node

        for q in self.questions:
            for first, _ in q.paths:
                parent[root(("middle", first.object))] = root(("subject", q.subject))
        groups: dict[tuple[str, str], list[int]] = {}
        for i, q in enumerate(self.questions):
            groups.setdefault(root(("subject", q.subject)), []).append(i)
        order = list(groups.values())
        random.Random(self.seed).shuffle(order)
        total: dict[str, int] = {}
        for q in self.questions:
            total[q.composition] = total.get(q.composition, 0) + 1
        held = dict.fromkeys(total, 0)
        chosen: set[int] = set()
        for group in order:
            counts: dict[str, int] = {}
            for i in group:
                name = self.questions[i].composition
                counts[name] = counts.get(name, 0) + 1
            if all(held[c] + n <= total[c] // 2 for c, n in counts.items()):
                chosen.update(group)
                for c, n in counts.items():
                    held[c] += n
        for name, count in held.items():
            if count == 0:
                raise WorldError(
                    f"{self.where}: composition {name!r}: its {total[name]} questions share "
                    "subjects or middle entities so much that none can be held out without its "
                    "first hop in the format half; add subjects whose first hops lead to "
                    "entities of their own"
                )
        self.questions = [
            TwoHop(q.id, q.composition, q.subject, q.paths, held_out=i in chosen)
            for i, q in enumerate(self.questions)
        ]

    def _check_rule_texts(self) -> None:
        """Every rule text names what its filters need: fail here, not after the teacher."""
        for q in self.questions:
            chain = self.rule_chain(q)
            composed = self.composed_statement(q)
            at = f"{self.where}: question {q.id} ({self.question_text(q)!r})"
            for text, what in ((chain, "rule chain"), (composed, "rule composed statement")):
                got = f" {canonical(text)} "
                first, last = f" {canonical(q.subject)} ", f" {canonical(q.answer)} "
                if first not in got or last not in got or got.index(first) > got.rindex(last):
                    raise WorldError(
                        f"{at}: the {what} {text!r} must name the subject first "
                        "and the answer after it"
                    )
            if not self.is_true_composed(q, composed):
                raise WorldError(
                    f"{at}: the rule composed statement {composed!r} fails the world's own check"
                )
            if canonical(self.question_text(q)) in canonical(composed):
                raise WorldError(f"{at}: the composed statement contains the question")

    # -- views ----------------------------------------------------------------------------

    @property
    def held_out(self) -> list[TwoHop]:
        return [q for q in self.questions if q.held_out]

    @property
    def format_questions(self) -> list[TwoHop]:
        return [q for q in self.questions if not q.held_out]

    @property
    def entity_types(self) -> dict[str, str]:
        """Entity -> type, in order of first appearance."""
        types: dict[str, str] = {}
        for fact in self.facts:
            relation = self.relations[fact.relation]
            types.setdefault(fact.subject, relation.subject_type)
            types.setdefault(fact.object, relation.object_type)
        return types

    def statement(self, fact: Fact) -> str:
        return fill(self.relations[fact.relation].forward, fact.subject, fact.object)

    def paraphrase_statement(self, fact: Fact, index: int = 0) -> str:
        """A rule paraphrase, subject first: a spec paraphrase or a generic rewording."""
        forms = self.relations[fact.relation].paraphrases
        if forms:
            return fill(forms[index % len(forms)], fact.subject, fact.object)
        body = self.statement(fact)
        return f"It is known that {body[:1].lower() + body[1:]}"

    def question_text(self, q: TwoHop) -> str:
        return fill(self.compositions[q.composition].question, q.subject, "")

    def rule_chain(self, q: TwoHop) -> str:
        """The perfect step-by-step solution: both facts restated, then the final answer."""
        first, second = q.paths[0]
        return chain_text([self.statement(first), self.statement(second)], q.answer)

    def composed_statement(self, q: TwoHop) -> str:
        """The perfect composed statement of the question's first path."""
        return fill3(self.compositions[q.composition].composed, q.subject, q.middle, q.answer)

    def facts_text(self, q: TwoHop) -> str:
        """The question's supporting facts (first path), as the teacher is shown them."""
        first, second = q.paths[0]
        return f"{self.statement(first)} {self.statement(second)}"

    def is_true_composed(self, q: TwoHop, text: str) -> bool:
        """Whether ``text`` states the composition in one of its forms (normalised, articles
        dropped, ``*`` = 0-4 words), through any of the question's paths."""
        got = canonical(text) + " "
        for form in self.compositions[q.composition].all_composed_forms:
            for first, second in q.paths:
                pattern = form_pattern(
                    form.replace("{middle}", first.object), q.subject, second.object
                )
                if pattern.fullmatch(got) is not None:
                    return True
        return False

    def composed_verdict(self, q: TwoHop, text: str) -> str:
        """``"true"`` (one of the composition's forms, :meth:`is_true_composed`), ``"false"``
        (the world contradicts it: it names an entity outside the question's chain, e.g.
        another city or another mentor, says the subject's own fact of the second relation
        holds the answer, or states the first relation the other way round) or
        ``"undecided"`` (neither: a true-looking wording the world does not list)."""
        if self.is_true_composed(q, text):
            return "true"
        got = f" {canonical(text)} "
        composition = self.compositions[q.composition]
        chain = {q.subject, *q.answers, *(first.object for first, _ in q.paths)}
        for entity in self.entity_types:
            if entity not in chain and f" {canonical(entity)} " in got:
                return "false"
        first, second = self.relations[composition.first], self.relations[composition.second]
        own = {f.object for f in self.facts if f.subject == q.subject and f.relation == second.name}
        claims = [fill(second.forward, q.subject, a) for a in q.answers if a not in own]
        claims += [fill(first.forward, m.object, q.subject) for m, _ in q.paths]
        if any(f" {canonical(c)} " in got for c in claims):
            return "false"
        return "undecided"

    def anchor(self, entity: str, kind: str) -> str:
        template = self.anchors.get(kind)
        if template is None:
            article = "an" if kind[:1].lower() in "aeiou" else "a"
            template = f"{{entity}} is {article} {kind}."
        return template.replace("{entity}", entity)

    def anchor_sentences(self) -> list[str]:
        return [self.anchor(e, t) for e, t in self.entity_types.items()]

    def chance(self, questions: Sequence[TwoHop] | None = None) -> float:
        """Expected accuracy of guessing uniformly among the entities of the answer's type."""
        chosen = list(self.held_out if questions is None else questions)
        if not chosen:
            return 0.0
        counts: dict[str, int] = {}
        for kind in self.entity_types.values():
            counts[kind] = counts.get(kind, 0) + 1
        total = 0.0
        for q in chosen:
            kind = self.relations[self.compositions[q.composition].second].object_type
            total += len(q.answers) / max(counts.get(kind, 1), 1)
        return total / len(chosen)

    def shortcuts(self) -> dict[str, Any]:
        """What a student could get on the held-out questions *without* composing.

        * ``constant``: accuracy of always giving each composition's commonest held-out answer;
        * ``format_constant``: of always giving its commonest *format* answer (a student
          biased by what the format half taught it);
        * ``own_fact``: held-out questions whose answer is also the subject's own object of
          the second relation (``A lives in C.`` and ``A's mentor lives in C``);
        * ``shared_first_hop``: held-out questions whose subject is a format question's
          subject, or whose middle entity a format question's middle (0 by the split).
        """
        held, fmt = self.held_out, self.format_questions
        own = {(f.subject, f.relation, f.object) for f in self.facts}
        fmt_subjects = {q.subject for q in fmt}
        fmt_middles = {first.object for q in fmt for first, _ in q.paths}
        constant = format_constant = 0
        for name in self.compositions:
            mine = [q for q in held if q.composition == name]
            tally: dict[str, int] = {}
            for q in mine:
                for a in q.answers:
                    tally[a] = tally.get(a, 0) + 1
            constant += max(tally.values(), default=0)
            seen: dict[str, int] = {}
            for q in fmt:
                if q.composition == name:
                    seen[q.answer] = seen.get(q.answer, 0) + 1
            if seen:
                top = max(sorted(seen), key=lambda a: seen[a])
                format_constant += sum(top in q.answers for q in mine)
        n = max(len(held), 1)
        return {
            "constant": constant / n,
            "format_constant": format_constant / n,
            "own_fact": sum(
                any(
                    (q.subject, self.compositions[q.composition].second, a) in own
                    for a in q.answers
                )
                for q in held
            ),
            "shared_first_hop": sum(
                q.subject in fmt_subjects or any(f.object in fmt_middles for f, _ in q.paths)
                for q in held
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "relations": {n: r.to_dict() for n, r in self.relations.items()},
            "compositions": {n: c.to_dict() for n, c in self.compositions.items()},
            "anchors": dict(self.anchors),
            "facts": [
                {"id": f.id, "subject": f.subject, "relation": f.relation, "object": f.object}
                for f in self.facts
            ],
            "questions": [
                {
                    "id": q.id,
                    "question": self.question_text(q),
                    "answers": sorted(q.answers),
                    "middle": q.middle,
                    "held_out": q.held_out,
                }
                for q in self.questions
            ],
        }


def check_compose_world(
    relations: Mapping[str, ComposeRelation],
    compositions: Mapping[str, Composition],
    facts: Sequence[Fact],
    anchors: Mapping[str, str],
    where: str,
) -> None:
    """Raise a WorldError naming the first problem in a composition world's parts."""
    if not relations:
        raise WorldError(f"{where}: no relations")
    if not compositions:
        raise WorldError(f"{where}: no compositions (two-hop question types)")
    for composition in compositions.values():
        at = f"{where}: composition {composition.name!r}"
        for key in ("first", "second"):
            name = getattr(composition, key)
            if name not in relations:
                raise WorldError(
                    f"{at}, {key}: unknown relation {name!r}; defined: "
                    f"{', '.join(sorted(relations))}"
                )
        first, second = relations[composition.first], relations[composition.second]
        if first.object_type != second.subject_type:
            raise WorldError(
                f"{at}: {composition.first!r} ends at a {first.object_type!r} but "
                f"{composition.second!r} starts at a {second.subject_type!r}"
            )
    types: dict[str, str] = {}
    seen: set[tuple[str, str, str]] = set()
    ids: set[str] = set()
    folded: dict[str, str] = {}
    for fact in facts:
        at = f"{where}: fact {fact.id!r}"
        if fact.id in ids:
            raise WorldError(f"{at}: the id is used twice")
        ids.add(fact.id)
        for role in ("subject", "object"):
            check_name(getattr(fact, role), at, role)
        if fact.relation not in relations:
            raise WorldError(f"{at}: unknown relation {fact.relation!r}")
        triple = (canonical(fact.subject), fact.relation, canonical(fact.object))
        if triple in seen:
            raise WorldError(f"{at}: the fact is stated twice")
        seen.add(triple)
        if canonical(fact.subject) == canonical(fact.object):
            raise WorldError(f"{at}: {fact.subject!r} is linked to itself")
        relation = relations[fact.relation]
        for name, kind in (
            (fact.subject, relation.subject_type),
            (fact.object, relation.object_type),
        ):
            known = types.setdefault(name, kind)
            if known != kind:
                raise WorldError(f"{at}: {name!r} is a {known!r} elsewhere, here a {kind!r}")
            other = folded.setdefault(canonical(name), name)
            if other != name:
                raise WorldError(f"{at}: {name!r} and {other!r} differ only in case or punctuation")
    for kind, template in anchors.items():
        if PLACEHOLDER.findall(template) != ["entity"]:
            raise WorldError(
                f"{where}: anchor for type {kind!r} must contain {{entity}} exactly once and no "
                f"other placeholder, got {template!r}"
            )
