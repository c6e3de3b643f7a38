"""Every check that a relation and a world are well formed, raising a WorldError that says where.

Checked for every world (generated, built in or loaded): templates are well formed, questions
share no relation words with statements, no fact is stated twice, no pair of entities is linked
in both directions (``A -> B`` and ``B -> A``, whatever the relations), and each entity has one
type. :class:`~mstudy.probes.world.Relation` and :class:`~mstudy.probes.world.World` run these
on construction; the checks read only the fields named by the protocols below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from mstudy.probes.errors import WorldError
from mstudy.probes.templates import PLACEHOLDER, canonical, fill, words
from mstudy.text import normalize

__all__ = [
    "FUNCTION_WORDS",
    "FactFields",
    "RelationFields",
    "check_name",
    "check_relation",
    "check_world",
]

#: Words that carry no relation meaning; question templates may share only these with statements.
# fmt: off
FUNCTION_WORDS = frozenset([
    "a", "an", "the", "is", "was", "are", "were", "be", "been", "of", "in", "on", "at", "to",
    "by", "for", "from", "with", "as", "and", "or", "it", "its", "this", "that", "which", "who",
    "whom", "whose", "what", "where", "when", "how", "did", "does", "do", "has", "have", "had",
    "s",
])
# fmt: on


class RelationFields(Protocol):
    """What :func:`check_relation` reads of a relation."""

    @property
    def name(self) -> str: ...
    @property
    def forward(self) -> str: ...
    @property
    def inverse(self) -> str: ...
    @property
    def forward_question(self) -> str: ...
    @property
    def reverse_question(self) -> str: ...
    @property
    def subject_type(self) -> str: ...
    @property
    def object_type(self) -> str: ...
    @property
    def inverse_forms(self) -> tuple[str, ...]: ...
    @property
    def paraphrases(self) -> tuple[str, ...]: ...


class FactFields(Protocol):
    """What :func:`check_world` reads of a fact."""

    @property
    def id(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def relation(self) -> str: ...
    @property
    def object(self) -> str: ...
    @property
    def scored(self) -> bool: ...


def _clash(a: str, b: str) -> bool:
    """Same word, or one a prefix of the other of at least 4 letters (found/founded)."""
    short, long_ = sorted((a, b), key=len)
    return a == b or (len(short) >= 4 and long_.startswith(short))


def _check_template(
    relation: str, key: str, template: str, needs: Sequence[str], order: bool = False
) -> None:
    where = f"relation {relation!r}, {key}"
    if not isinstance(template, str) or not template.strip():
        raise WorldError(f"{where}: must be a non-empty string")
    found = PLACEHOLDER.findall(template)
    unknown = sorted({p for p in found if p not in ("subject", "object")})
    if unknown:
        raise WorldError(
            f"{where}: unknown placeholder(s) {', '.join('{' + p + '}' for p in unknown)} "
            f"in {template!r}; use {{subject}} and {{object}}"
        )
    stray = PLACEHOLDER.sub("", template)
    if "{" in stray or "}" in stray:
        raise WorldError(f"{where}: unbalanced brace in {template!r}")
    for name in ("subject", "object"):
        count = found.count(name)
        wanted = 1 if name in needs else 0
        if count != wanted:
            what = "exactly once" if wanted else "not at all"
            raise WorldError(
                f"{where}: {{{name}}} must appear {what} in {template!r} (found {count})"
            )
    if order and template.index("{object}") > template.index("{subject}"):
        raise WorldError(
            f"{where}: a reversal must name the object first, but {template!r} starts "
            "with {subject}"
        )


def check_relation(relation: RelationFields) -> None:
    """Raise a WorldError unless every template of ``relation`` is usable."""
    name = relation.name
    if not name or not isinstance(name, str):
        raise WorldError("a relation needs a non-empty name")
    for key in ("subject_type", "object_type"):
        value = getattr(relation, key)
        if not isinstance(value, str) or not value.strip():
            raise WorldError(f"relation {name!r}, {key}: must be a non-empty string")
    _check_template(name, "forward", relation.forward, ("subject", "object"))
    if relation.forward.index("{subject}") > relation.forward.index("{object}"):
        raise WorldError(
            f"relation {name!r}, forward: the statement must name the subject first, "
            f"got {relation.forward!r}"
        )
    _check_template(name, "inverse", relation.inverse, ("subject", "object"), order=True)
    for i, form in enumerate(relation.inverse_forms):
        _check_template(name, f"inverse_forms[{i}]", form, ("subject", "object"), order=True)
    for i, form in enumerate(relation.paraphrases):
        _check_template(name, f"paraphrases[{i}]", form, ("subject", "object"))
        if form.index("{subject}") > form.index("{object}"):
            raise WorldError(
                f"relation {name!r}, paraphrases[{i}]: a paraphrase keeps the subject "
                f"first (object first would be a reversal), got {form!r}"
            )
    _check_template(name, "forward_question", relation.forward_question, ("subject",))
    _check_template(name, "reverse_question", relation.reverse_question, ("object",))
    relation_words: set[str] = set()
    for template in (
        relation.forward,
        relation.inverse,
        *relation.inverse_forms,
        *relation.paraphrases,
    ):
        relation_words |= words(template)
    relation_words -= FUNCTION_WORDS | words(relation.subject_type) | words(relation.object_type)
    for key in ("forward_question", "reverse_question"):
        shared = {
            w for w in words(getattr(relation, key)) if any(_clash(w, r) for r in relation_words)
        }
        if shared:
            raise WorldError(
                f"relation {name!r}, {key}: shares the word(s) "
                f"{', '.join(sorted(shared))} with the relation's statements; a question "
                "must be worded differently, or the student can answer by matching words"
            )
    if canonical(fill(relation.forward_question, "X", "Y")) == canonical(
        fill(relation.reverse_question, "X", "X")
    ):
        raise WorldError(f"relation {name!r}: the two questions are worded the same")


def check_name(name: Any, where: str, role: str) -> str:
    """Return ``name`` if it can be an entity (or relation) name; else raise a WorldError."""
    if not isinstance(name, str) or not name.strip():
        raise WorldError(f"{where}: {role} must be a non-empty string, got {name!r}")
    if name != name.strip() or "\n" in name or "{" in name or "}" in name:
        raise WorldError(
            f"{where}: {role} {name!r} may not have surrounding spaces, newlines or braces"
        )
    if not normalize(name):
        raise WorldError(f"{where}: {role} {name!r} has no letters or digits")
    return name


def check_world(
    relations: Mapping[str, RelationFields],
    facts: Sequence[FactFields],
    anchors: Mapping[str, str],
    where: str,
) -> None:
    """Raise a WorldError naming the first problem found in a world's parts."""
    if not relations:
        raise WorldError(f"{where}: no relations")
    if len(facts) < 2:
        raise WorldError(f"{where}: needs at least 2 facts, got {len(facts)}")
    types: dict[str, str] = {}
    pairs: dict[tuple[str, str], FactFields] = {}
    ids: set[str] = set()
    for fact in facts:
        at = f"{where}, fact {fact.id!r}"
        if fact.id in ids:
            raise WorldError(f"{at}: the id is used twice")
        ids.add(fact.id)
        relation = relations.get(fact.relation)
        if relation is None:
            raise WorldError(
                f"{at}: unknown relation {fact.relation!r}; known: {', '.join(sorted(relations))}"
            )
        check_name(fact.subject, at, "subject")
        check_name(fact.object, at, "object")
        if normalize(fact.subject) == normalize(fact.object):
            raise WorldError(f"{at}: subject and object are the same ({fact.subject!r})")
        for entity, kind in (
            (fact.subject, relation.subject_type),
            (fact.object, relation.object_type),
        ):
            seen = types.setdefault(entity, kind)
            if seen != kind:
                raise WorldError(
                    f"{at}: {entity!r} would be a {kind!r} here but is a {seen!r} in "
                    "another fact; an entity has one type"
                )
        key = (normalize(fact.subject), normalize(fact.object))
        if key in pairs:
            raise WorldError(
                f"{at}: {fact.subject!r} and {fact.object!r} are already linked by fact "
                f"{pairs[key].id!r}; one fact per ordered pair"
            )
        back = pairs.get((key[1], key[0]))
        if back is not None:
            raise WorldError(
                f"{at}: {fact.subject!r} -> {fact.object!r} while fact {back.id!r} says "
                f"{back.subject!r} -> {back.object!r}; a world with links in both "
                "directions leaks reverse answers"
            )
        pairs[key] = fact
    names = {normalize(e): e for e in types}
    if len(names) != len(types):
        raise WorldError(f"{where}: two entity names differ only in case or punctuation")
    for kind, template in anchors.items():
        found = PLACEHOLDER.findall(template)
        if found != ["entity"]:
            raise WorldError(
                f"{where}: anchor for type {kind!r} must contain {{entity}} exactly "
                f"once and no other placeholder, got {template!r}"
            )
    if not any(f.scored for f in facts) or all(f.scored for f in facts):
        raise WorldError(f"{where}: needs both scored and format facts")
