"""The world's data: relation types, facts, and what a world says about them.

A world has relation types and facts ``subject -relation-> object``. Each relation has

* ``forward``: the training statement, subject first (``"{subject} founded {object}."``);
* ``inverse``: the same fact object first (``"{object} was founded by {subject}."``): the
  rule-based reversal, and the first of the ``inverse_forms`` a teacher's reversal is checked
  against;
* ``forward_question`` (asks for the object) and ``reverse_question`` (asks for the subject),
  worded with none of the relation's statement words, so a student cannot answer by matching
  wording.

Half the facts are *format* facts: the student also sees their question-answer pairs in both
directions, to learn the question format. The other half are *scored*: their questions are
held out. Every entity also gets an anchor sentence (``"Velmora is a person."``) so it appears as
a sentence subject at least once.

A :class:`Relation` and a :class:`World` are checked on construction
(:mod:`mstudy.probes.world_checks`); worlds are made by :mod:`mstudy.probes.world_generator`
or read from files by :mod:`mstudy.probes.world_files`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mstudy.probes.errors import WorldError
from mstudy.probes.templates import canonical, fill, form_pattern
from mstudy.probes.world_checks import check_relation, check_world
from mstudy.text import normalize

__all__ = ["Fact", "Relation", "World", "WorldError"]


@dataclass(frozen=True)
class Relation:
    """A relation type: its statement and question templates (``{subject}``/``{object}``)."""

    name: str
    forward: str
    inverse: str
    forward_question: str
    reverse_question: str
    subject_type: str = "entity"
    object_type: str = "entity"
    inverse_forms: tuple[str, ...] = ()
    paraphrases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inverse_forms", tuple(self.inverse_forms))
        object.__setattr__(self, "paraphrases", tuple(self.paraphrases))
        self.validate()

    def validate(self) -> None:
        """Raise a WorldError unless every template is usable (see :func:`check_relation`)."""
        check_relation(self)

    @property
    def all_inverse_forms(self) -> tuple[str, ...]:
        """The inverse template and its accepted alternatives."""
        return (self.inverse, *(f for f in self.inverse_forms if f != self.inverse))

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject_type": self.subject_type,
            "object_type": self.object_type,
            "forward": self.forward,
            "inverse": self.inverse,
            "forward_question": self.forward_question,
            "reverse_question": self.reverse_question,
            "inverse_forms": list(self.inverse_forms),
            "paraphrases": list(self.paraphrases),
        }


@dataclass(frozen=True)
class Fact:
    """One fact ``subject -relation-> object``; ``scored`` facts have their questions held out."""

    id: str
    subject: str
    relation: str
    object: str
    scored: bool = False


@dataclass
class World:
    """Relations, facts and entity types; validated on construction.

    Args:
        relations: the relation types, by name.
        facts: the facts (``scored`` marks the held-out half).
        anchors: entity type -> anchor template with ``{entity}`` (``"{entity} is a city."``);
            types without one get ``"{entity} is a <type>."``.
    """

    relations: dict[str, Relation]
    facts: list[Fact]
    anchors: dict[str, str] = field(default_factory=dict)
    where: str = "world"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a WorldError naming the first problem found (see :func:`check_world`)."""
        check_world(self.relations, self.facts, self.anchors, self.where)

    # -- views ----------------------------------------------------------------------------

    @property
    def entity_types(self) -> dict[str, str]:
        """Entity -> type, in order of first appearance."""
        types: dict[str, str] = {}
        for fact in self.facts:
            relation = self.relations[fact.relation]
            types.setdefault(fact.subject, relation.subject_type)
            types.setdefault(fact.object, relation.object_type)
        return types

    @property
    def scored_facts(self) -> list[Fact]:
        return [f for f in self.facts if f.scored]

    @property
    def format_facts(self) -> list[Fact]:
        return [f for f in self.facts if not f.scored]

    def relation(self, fact: Fact) -> Relation:
        return self.relations[fact.relation]

    def statement(self, fact: Fact) -> str:
        """The forward training statement of ``fact``."""
        return fill(self.relation(fact).forward, fact.subject, fact.object)

    def inverse_statement(self, fact: Fact) -> str:
        """The rule-based reversal of ``fact`` (object first)."""
        return fill(self.relation(fact).inverse, fact.subject, fact.object)

    def paraphrase_statement(self, fact: Fact, index: int = 0) -> str:
        """A rule-based paraphrase (subject first): a spec paraphrase, or a generic rewording."""
        forms = self.relation(fact).paraphrases
        if forms:
            return fill(forms[index % len(forms)], fact.subject, fact.object)
        body = self.statement(fact)
        return f"It is known that {body[:1].lower() + body[1:]}"

    def forward_question(self, fact: Fact) -> str:
        return fill(self.relation(fact).forward_question, fact.subject, fact.object)

    def reverse_question(self, fact: Fact) -> str:
        return fill(self.relation(fact).reverse_question, fact.subject, fact.object)

    def anchor(self, entity: str, kind: str) -> str:
        template = self.anchors.get(kind)
        if template is None:
            article = "an" if kind[:1].lower() in "aeiou" else "a"
            template = f"{{entity}} is {article} {kind}."
        return template.replace("{entity}", entity)

    def anchor_sentences(self) -> list[str]:
        """One anchor per entity, so that every entity is a sentence subject somewhere."""
        return [self.anchor(e, t) for e, t in self.entity_types.items()]

    def answers(self, fact: Fact, direction: str) -> set[str]:
        """Every entity that correctly answers ``fact``'s question in ``direction``.

        ``"forward"`` asks for the object, ``"reverse"`` for the subject; a loaded world may
        link one entity to several, and then any of them is right.
        """
        if direction == "forward":
            return {
                f.object
                for f in self.facts
                if f.relation == fact.relation and normalize(f.subject) == normalize(fact.subject)
            }
        return {
            f.subject
            for f in self.facts
            if f.relation == fact.relation and normalize(f.object) == normalize(fact.object)
        }

    def candidates(self, kind: str) -> list[str]:
        """All entities of type ``kind``: what a guesser would choose among."""
        return [e for e, t in self.entity_types.items() if t == kind]

    def chance(self, direction: str, facts: Iterable[Fact] | None = None) -> float:
        """Expected accuracy of guessing uniformly among the entities of the answer's type."""
        chosen = list(self.scored_facts if facts is None else facts)
        if not chosen:
            return 0.0
        counts: dict[str, int] = {}
        for kind in self.entity_types.values():
            counts[kind] = counts.get(kind, 0) + 1
        total = 0.0
        for fact in chosen:
            relation = self.relation(fact)
            kind = relation.object_type if direction == "forward" else relation.subject_type
            total += len(self.answers(fact, direction)) / max(counts.get(kind, 1), 1)
        return total / len(chosen)

    def is_true_reversal(self, fact: Fact, text: str) -> bool:
        """Whether ``text`` states ``fact`` object-first in one of the relation's inverse forms.

        Compared after normalisation (case, punctuation, spacing) with articles dropped; a
        reversal worded in a way the spec does not list counts as not true, so precision is a
        lower bound when the spec lists few forms.
        """
        got = canonical(text) + " "
        return any(
            form_pattern(form, fact.subject, fact.object).fullmatch(got) is not None
            for form in self.relation(fact).all_inverse_forms
        )

    def reversal_truth(self, fact: Fact, text: str) -> str:
        """``"true"``, ``"false"`` or ``"undecided"``: what the world says of ``text`` as a
        reversal of ``fact``.

        True: one of the relation's inverse forms (:meth:`is_true_reversal`). False: the text
        states, in one of the spec's forms (any relation's forward template, paraphrases or
        inverse forms), a different fact about the two names: the roles swapped (``B is the
        mentor of A`` for ``A is the mentor of B``) or another relation. Undecided: anything
        else (a true statement worded in a way the spec does not list, or a wrong one the spec
        cannot recognise).
        """
        if self.is_true_reversal(fact, text):
            return "true"
        got = canonical(text) + " "
        s, o = fact.subject, fact.object
        for relation in self.relations.values():
            forms = (relation.forward, *relation.paraphrases, *relation.all_inverse_forms)
            for x, y in ((s, o), (o, s)):
                if relation.name == fact.relation and (x, y) == (s, o):
                    continue  # the fact itself, said some way
                if any(form_pattern(f, x, y).fullmatch(got) for f in forms):
                    return "false"
        return "undecided"

    def to_dict(self) -> dict[str, Any]:
        return {
            "relations": {name: r.to_dict() for name, r in self.relations.items()},
            "anchors": dict(self.anchors),
            "facts": [
                {
                    "id": f.id,
                    "subject": f.subject,
                    "relation": f.relation,
                    "object": f.object,
                    "scored": f.scored,
                }
                for f in self.facts
            ],
        }
