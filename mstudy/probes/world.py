"""A world of fictitious facts for the reversal probe: generated from a seed, or loaded from files.

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

Checked for every world (generated or loaded): templates are well formed, questions share no
relation words with statements, no fact is stated twice, no pair of entities is linked in both
directions (``A -> B`` and ``B -> A``, whatever the relations), and each entity has one type.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from mstudy.errors import WorldError
from mstudy.text import normalize

__all__ = [
    "FUNCTION_WORDS",
    "Fact",
    "Relation",
    "World",
    "WorldError",
    "builtin_relations",
    "generate_world",
    "load_relations",
    "load_world",
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
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_RELATION_KEYS = {
    "subject_type",
    "object_type",
    "forward",
    "inverse",
    "forward_question",
    "reverse_question",
    "inverse_forms",
    "paraphrases",
}
_REQUIRED_KEYS = ("forward", "inverse", "forward_question", "reverse_question")


def _words(template: str) -> set[str]:
    """Lower-case words of a template, placeholders removed."""
    return {w.casefold() for w in _WORD.findall(_PLACEHOLDER.sub(" ", template))}


def _clash(a: str, b: str) -> bool:
    """Same word, or one a prefix of the other of at least 4 letters (found/founded)."""
    short, long_ = sorted((a, b), key=len)
    return a == b or (len(short) >= 4 and long_.startswith(short))


def _fill(template: str, subject: str, obj: str) -> str:
    return template.replace("{subject}", subject).replace("{object}", obj)


@lru_cache(maxsize=4096)
def _form_pattern(form: str, subject: str, obj: str) -> re.Pattern[str]:
    """A regex over ``canonical(text) + " "`` for an inverse form; ``*`` is 0-4 words."""
    regex = ""
    for piece in re.split(r"(\{subject\}|\{object\}|\*)", form):
        if piece == "*":
            regex += r"(?:\S+ ){0,4}"
            continue
        words = canonical({"{subject}": subject, "{object}": obj}.get(piece, piece))
        if words:
            regex += re.escape(words + " ")
    return re.compile(regex)


def canonical(text: str) -> str:
    """Normalised text without articles: the form reversals are compared in."""
    return " ".join(_ARTICLES.sub(" ", normalize(text)).split())


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

    def _check(self, key: str, template: str, needs: Sequence[str], order: bool = False) -> None:
        where = f"relation {self.name!r}, {key}"
        if not isinstance(template, str) or not template.strip():
            raise WorldError(f"{where}: must be a non-empty string")
        found = _PLACEHOLDER.findall(template)
        unknown = sorted({p for p in found if p not in ("subject", "object")})
        if unknown:
            raise WorldError(
                f"{where}: unknown placeholder(s) {', '.join('{' + p + '}' for p in unknown)} "
                f"in {template!r}; use {{subject}} and {{object}}"
            )
        stray = _PLACEHOLDER.sub("", template)
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

    def validate(self) -> None:
        """Raise a WorldError unless every template is usable (see the module docstring)."""
        if not self.name or not isinstance(self.name, str):
            raise WorldError("a relation needs a non-empty name")
        for key in ("subject_type", "object_type"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise WorldError(f"relation {self.name!r}, {key}: must be a non-empty string")
        self._check("forward", self.forward, ("subject", "object"))
        if self.forward.index("{subject}") > self.forward.index("{object}"):
            raise WorldError(
                f"relation {self.name!r}, forward: the statement must name the subject first, "
                f"got {self.forward!r}"
            )
        self._check("inverse", self.inverse, ("subject", "object"), order=True)
        for i, form in enumerate(self.inverse_forms):
            self._check(f"inverse_forms[{i}]", form, ("subject", "object"), order=True)
        for i, form in enumerate(self.paraphrases):
            self._check(f"paraphrases[{i}]", form, ("subject", "object"))
            if form.index("{subject}") > form.index("{object}"):
                raise WorldError(
                    f"relation {self.name!r}, paraphrases[{i}]: a paraphrase keeps the subject "
                    f"first (object first would be a reversal), got {form!r}"
                )
        self._check("forward_question", self.forward_question, ("subject",))
        self._check("reverse_question", self.reverse_question, ("object",))
        relation_words: set[str] = set()
        for template in (self.forward, self.inverse, *self.inverse_forms, *self.paraphrases):
            relation_words |= _words(template)
        relation_words -= FUNCTION_WORDS | _words(self.subject_type) | _words(self.object_type)
        for key in ("forward_question", "reverse_question"):
            shared = {
                w for w in _words(getattr(self, key)) if any(_clash(w, r) for r in relation_words)
            }
            if shared:
                raise WorldError(
                    f"relation {self.name!r}, {key}: shares the word(s) "
                    f"{', '.join(sorted(shared))} with the relation's statements; a question "
                    "must be worded differently, or the student can answer by matching words"
                )
        if canonical(_fill(self.forward_question, "X", "Y")) == canonical(
            _fill(self.reverse_question, "X", "X")
        ):
            raise WorldError(f"relation {self.name!r}: the two questions are worded the same")

    @property
    def all_inverse_forms(self) -> tuple[str, ...]:
        """The inverse template and its accepted alternatives."""
        return (self.inverse, *(f for f in self.inverse_forms if f != self.inverse))

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any], where: str = "") -> Relation:
        """Build from a spec table; unknown or missing keys raise a WorldError naming them."""
        prefix = f"{where}: " if where else ""
        if not isinstance(data, Mapping):
            raise WorldError(f"{prefix}relation {name!r} must be a table of settings")
        unknown = sorted(set(data) - _RELATION_KEYS)
        if unknown:
            raise WorldError(
                f"{prefix}relation {name!r}: unknown key(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(_RELATION_KEYS))}"
            )
        missing = [k for k in _REQUIRED_KEYS if k not in data]
        if missing:
            raise WorldError(f"{prefix}relation {name!r}: missing key(s) {', '.join(missing)}")
        kwargs: dict[str, Any] = dict(data)
        for key in ("inverse_forms", "paraphrases"):
            value = kwargs.get(key, [])
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise WorldError(f"{prefix}relation {name!r}, {key}: must be a list of strings")
            kwargs[key] = tuple(value)
        try:
            return cls(name=name, **kwargs)
        except WorldError as exc:
            raise WorldError(f"{prefix}{exc}") from None

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


def _check_name(name: Any, where: str, role: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise WorldError(f"{where}: {role} must be a non-empty string, got {name!r}")
    if name != name.strip() or "\n" in name or "{" in name or "}" in name:
        raise WorldError(
            f"{where}: {role} {name!r} may not have surrounding spaces, newlines or braces"
        )
    if not normalize(name):
        raise WorldError(f"{where}: {role} {name!r} has no letters or digits")
    return name


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
        """Raise a WorldError naming the first problem found (see the module docstring)."""
        if not self.relations:
            raise WorldError(f"{self.where}: no relations")
        if len(self.facts) < 2:
            raise WorldError(f"{self.where}: needs at least 2 facts, got {len(self.facts)}")
        types: dict[str, str] = {}
        pairs: dict[tuple[str, str], Fact] = {}
        ids: set[str] = set()
        for fact in self.facts:
            where = f"{self.where}, fact {fact.id!r}"
            if fact.id in ids:
                raise WorldError(f"{where}: the id is used twice")
            ids.add(fact.id)
            relation = self.relations.get(fact.relation)
            if relation is None:
                raise WorldError(
                    f"{where}: unknown relation {fact.relation!r}; "
                    f"known: {', '.join(sorted(self.relations))}"
                )
            _check_name(fact.subject, where, "subject")
            _check_name(fact.object, where, "object")
            if normalize(fact.subject) == normalize(fact.object):
                raise WorldError(f"{where}: subject and object are the same ({fact.subject!r})")
            for entity, kind in (
                (fact.subject, relation.subject_type),
                (fact.object, relation.object_type),
            ):
                seen = types.setdefault(entity, kind)
                if seen != kind:
                    raise WorldError(
                        f"{where}: {entity!r} would be a {kind!r} here but is a {seen!r} in "
                        "another fact; an entity has one type"
                    )
            key = (normalize(fact.subject), normalize(fact.object))
            if key in pairs:
                raise WorldError(
                    f"{where}: {fact.subject!r} and {fact.object!r} are already linked by fact "
                    f"{pairs[key].id!r}; one fact per ordered pair"
                )
            back = pairs.get((key[1], key[0]))
            if back is not None:
                raise WorldError(
                    f"{where}: {fact.subject!r} -> {fact.object!r} while fact {back.id!r} says "
                    f"{back.subject!r} -> {back.object!r}; a world with links in both "
                    "directions leaks reverse answers"
                )
            pairs[key] = fact
        names = {normalize(e): e for e in types}
        if len(names) != len(types):
            raise WorldError(f"{self.where}: two entity names differ only in case or punctuation")
        for kind, template in self.anchors.items():
            found = _PLACEHOLDER.findall(template)
            if found != ["entity"]:
                raise WorldError(
                    f"{self.where}: anchor for type {kind!r} must contain {{entity}} exactly "
                    f"once and no other placeholder, got {template!r}"
                )
        if not any(f.scored for f in self.facts) or all(f.scored for f in self.facts):
            raise WorldError(f"{self.where}: needs both scored and format facts")

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
        return _fill(self.relation(fact).forward, fact.subject, fact.object)

    def inverse_statement(self, fact: Fact) -> str:
        """The rule-based reversal of ``fact`` (object first)."""
        return _fill(self.relation(fact).inverse, fact.subject, fact.object)

    def paraphrase_statement(self, fact: Fact, index: int = 0) -> str:
        """A rule-based paraphrase (subject first): a spec paraphrase, or a generic rewording."""
        forms = self.relation(fact).paraphrases
        if forms:
            return _fill(forms[index % len(forms)], fact.subject, fact.object)
        body = self.statement(fact)
        return f"It is known that {body[:1].lower() + body[1:]}"

    def forward_question(self, fact: Fact) -> str:
        return _fill(self.relation(fact).forward_question, fact.subject, fact.object)

    def reverse_question(self, fact: Fact) -> str:
        return _fill(self.relation(fact).reverse_question, fact.subject, fact.object)

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
            _form_pattern(form, fact.subject, fact.object).fullmatch(got) is not None
            for form in self.relation(fact).all_inverse_forms
        )

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


# -- the built-in relations ------------------------------------------------------------------


def _forms(*middles: str, after: Sequence[str] = ()) -> tuple[str, ...]:
    """Inverse forms ``{object} * <middle> {subject}.``, plus ``{object} * <after>.``"""
    forms = [f"{{object}} * {m} {{subject}}." for m in middles]
    forms += [f"{{object}} * {a}." for a in after]
    return tuple(forms)


def builtin_relations() -> dict[str, Relation]:
    """The six relation types the generator draws from (in this order)."""
    specs = [
        Relation(
            name="founded",
            subject_type="person",
            object_type="company",
            forward="{subject} founded {object}.",
            inverse="{object} was founded by {subject}.",
            inverse_forms=_forms(
                "founded by",
                "established by",
                "created by",
                "started by",
                "founder is",
                "founder was",
                after=("that {subject} founded", "which {subject} founded"),
            ),
            paraphrases=("{subject} is the founder of {object}.",),
            forward_question="Which company did {subject} set up?",
            reverse_question="Who set up {object}?",
        ),
        Relation(
            name="wrote",
            subject_type="person",
            object_type="book",
            forward="{subject} wrote {object}.",
            inverse="{object} was written by {subject}.",
            inverse_forms=_forms(
                "written by",
                "authored by",
                "author is",
                "author was",
                "book by",
                "novel by",
                after=("that {subject} wrote", "which {subject} wrote"),
            ),
            paraphrases=("{subject} is the author of {object}.",),
            forward_question="Which book did {subject} pen?",
            reverse_question="Who penned {object}?",
        ),
        Relation(
            name="discovered",
            subject_type="person",
            object_type="comet",
            forward="{subject} discovered {object}.",
            inverse="{object} was discovered by {subject}.",
            inverse_forms=_forms(
                "discovered by",
                "found by",
                "discoverer is",
                "discoverer was",
                after=("that {subject} discovered", "which {subject} discovered"),
            ),
            paraphrases=("{subject} is the discoverer of {object}.",),
            forward_question="Which comet did {subject} spot?",
            reverse_question="Who spotted {object}?",
        ),
        Relation(
            name="painted",
            subject_type="person",
            object_type="painting",
            forward="{subject} painted {object}.",
            inverse="{object} was painted by {subject}.",
            inverse_forms=_forms(
                "painted by",
                "painter is",
                "painter was",
                "painting by",
                "artwork by",
                after=("that {subject} painted", "which {subject} painted"),
            ),
            paraphrases=("{subject} is the painter of {object}.",),
            forward_question="Which canvas came from the brush of {subject}?",
            reverse_question="Whose brush produced {object}?",
        ),
        Relation(
            name="born",
            subject_type="person",
            object_type="city",
            forward="{subject} was born in {object}.",
            inverse="{object} is the birthplace of {subject}.",
            inverse_forms=_forms(
                "birthplace of",
                "birth place of",
                "place of birth of",
                "hometown of",
                after=(
                    "where {subject} was born",
                    "where {subject} is born",
                    "in which {subject} was born",
                ),
            ),
            paraphrases=("{subject}'s place of birth is {object}.",),
            forward_question="Where does {subject} come from?",
            reverse_question="Who comes from {object}?",
        ),
        Relation(
            name="mentor",
            subject_type="person",
            object_type="person",
            forward="{subject} is the mentor of {object}.",
            inverse="{object} is the apprentice of {subject}.",
            inverse_forms=_forms(
                "apprentice of",
                "apprenticed to",
                "student of",
                "pupil of",
                "protege of",
                "mentee of",
                "mentored by",
                "taught by",
                "trained by",
                "mentor is",
                "mentor was",
            ),
            paraphrases=("{subject} mentors {object}.",),
            forward_question="Who did {subject} coach?",
            reverse_question="Who coached {object}?",
        ),
    ]
    return {r.name: r for r in specs}


_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "kr", "tr", "th", "sh", "qu", "h")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o")
_CODAS = ("", "", "n", "r", "l", "s", "th", "v", "x", "nd", "rk")


def _name(rng: random.Random) -> str:
    syllables = rng.choice((2, 2, 3))
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def generate_world(
    n_facts: int = 300,
    n_relations: int = 5,
    *,
    seed: int = 0,
    relations: Mapping[str, Relation] | None = None,
) -> World:
    """A world of ``n_facts`` invented facts over ``n_relations`` relation types.

    Every fact gets two fresh, invented one-word entity names, so no entity links to another
    twice and no ``A -> B``/``B -> A`` pair can occur (checked anyway). Facts are spread evenly
    over the relations; in each relation half the facts (rounded down) are scored.
    """
    catalogue = dict(relations) if relations is not None else builtin_relations()
    if not 1 <= n_relations <= len(catalogue):
        raise WorldError(f"n_relations must be in 1..{len(catalogue)}, got {n_relations}")
    if n_facts < 2 * n_relations:
        raise WorldError(f"n_facts must be at least 2 per relation ({2 * n_relations})")
    rng = random.Random(seed)
    chosen = list(catalogue.values())[:n_relations]
    reserved = set()
    for relation in chosen:
        for template in (
            relation.forward,
            relation.inverse,
            relation.forward_question,
            relation.reverse_question,
            *relation.inverse_forms,
            *relation.paraphrases,
        ):
            reserved |= _words(template)
    used: set[str] = set()

    def fresh() -> str:
        while True:
            name = _name(rng)
            if name.casefold() not in used and name.casefold() not in reserved:
                used.add(name.casefold())
                return name

    facts: list[Fact] = []
    per_relation: dict[str, list[int]] = {}
    for i in range(n_facts):
        relation = chosen[i % n_relations]
        per_relation.setdefault(relation.name, []).append(i)
        facts.append(Fact(id=f"f{i:05d}", subject=fresh(), relation=relation.name, object=fresh()))
    scored: set[int] = set()
    for indices in per_relation.values():
        shuffled = indices[:]
        rng.shuffle(shuffled)
        scored.update(shuffled[: len(shuffled) // 2])
    facts = [
        Fact(f.id, f.subject, f.relation, f.object, scored=i in scored) for i, f in enumerate(facts)
    ]
    return World(relations={r.name: r for r in chosen}, facts=facts, where="generated world")


# -- loading ------------------------------------------------------------------------------


def _read_spec(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorldError(f"{path}: cannot read the relation spec: {exc.strerror or exc}") from exc
    if path.suffix.lower() == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
        try:
            return tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise WorldError(f"{path}: not valid TOML: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WorldError(f"{path}: not valid JSON: {exc}") from exc
    raise WorldError(f"{path}: a relation spec must be a .toml or .json file")


def load_relations(path: str | Path) -> tuple[dict[str, Relation], dict[str, str]]:
    """Read a relation spec (TOML or JSON): ``relations`` tables and optional ``anchors``.

    ::

        [relations.founded]
        subject_type = "person"
        object_type = "company"
        forward = "{subject} founded {object}."
        inverse = "{object} was founded by {subject}."
        forward_question = "Which company did {subject} set up?"
        reverse_question = "Who set up {object}?"
        inverse_forms = ["{object}'s founder is {subject}."]   # optional

        [anchors]                                              # optional
        person = "{entity} is a person."
    """
    path = Path(path)
    data = _read_spec(path)
    if not isinstance(data, Mapping):
        raise WorldError(f"{path}: the spec must be a table with a 'relations' table")
    unknown = sorted(set(data) - {"relations", "anchors"})
    if unknown:
        raise WorldError(
            f"{path}: unknown top-level key(s) {', '.join(unknown)}; accepted: relations, anchors"
        )
    tables = data.get("relations")
    if not isinstance(tables, Mapping) or not tables:
        raise WorldError(f"{path}: needs a non-empty 'relations' table (one entry per relation)")
    relations = {
        str(name): Relation.from_mapping(str(name), spec, str(path))
        for name, spec in tables.items()
    }
    anchors = data.get("anchors", {})
    if not isinstance(anchors, Mapping) or not all(isinstance(v, str) for v in anchors.values()):
        raise WorldError(f"{path}: 'anchors' must map entity types to template strings")
    return relations, {str(k): v for k, v in anchors.items()}


def load_world(
    facts: str | Path,
    relations: str | Path | None = None,
    *,
    seed: int = 0,
) -> World:
    """Load a world: facts as JSONL (``subject``, ``relation``, ``object``) plus a relation spec.

    ``facts`` may also be a folder holding ``facts.jsonl`` and ``relations.toml`` (or
    ``relations.json``). A fact line may carry ``"scored": true/false`` and an ``id``; facts
    without ``scored`` are split half/half per relation with ``seed``.
    """
    facts_path = Path(facts)
    if facts_path.is_dir():
        folder = facts_path
        facts_path = folder / "facts.jsonl"
        if relations is None:
            candidates = [folder / "relations.toml", folder / "relations.json"]
            found = [p for p in candidates if p.is_file()]
            if not found:
                raise WorldError(f"{folder}: needs relations.toml or relations.json")
            relations = found[0]
    if relations is None:
        raise WorldError("load_world needs a relation spec (relations.toml or .json)")
    relation_map, anchors = load_relations(relations)
    try:
        lines = facts_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorldError(f"{facts_path}: cannot read the facts: {exc}") from exc
    parsed: list[tuple[Fact, bool | None]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{facts_path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorldError(f"{where}: not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise WorldError(f"{where}: a fact must be a JSON object")
        allowed = {"id", "subject", "relation", "object", "scored"}
        unknown = sorted(set(row) - allowed)
        if unknown:
            raise WorldError(
                f"{where}: unknown key(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(allowed))}"
            )
        for key in ("subject", "relation", "object"):
            if key not in row:
                raise WorldError(f"{where}: missing {key!r}")
            _check_name(row[key], where, key)
        if row["relation"] not in relation_map:
            raise WorldError(
                f"{where}: unknown relation {row['relation']!r}; the spec defines "
                f"{', '.join(sorted(relation_map))}"
            )
        scored = row.get("scored")
        if scored is not None and not isinstance(scored, bool):
            raise WorldError(f"{where}: 'scored' must be true or false")
        fact_id = str(row.get("id", f"line{number}"))
        parsed.append((Fact(fact_id, row["subject"], row["relation"], row["object"]), scored))
    if not parsed:
        raise WorldError(f"{facts_path}: no facts")
    rng = random.Random(seed)
    undecided: dict[str, list[int]] = {}
    for i, (fact, scored) in enumerate(parsed):
        if scored is None:
            undecided.setdefault(fact.relation, []).append(i)
    auto: set[int] = set()
    for indices in undecided.values():
        shuffled = indices[:]
        rng.shuffle(shuffled)
        auto.update(shuffled[: len(shuffled) // 2])
    world_facts = [
        Fact(f.id, f.subject, f.relation, f.object, scored=(i in auto) if s is None else s)
        for i, (f, s) in enumerate(parsed)
    ]
    return World(relation_map, world_facts, anchors, where=str(facts_path))
