"""Composition worlds from files (``--world-dir``) and from a seed (the generator).

A world folder holds ``facts.jsonl`` (the reversal probe's format: ``subject``, ``relation``,
``object``, optional ``id``) and ``relations.toml`` (or ``.json``) with ``relations``,
``compositions`` and optional ``anchors`` tables; the built-in spec
(``data/compose_relations.toml``) is read by the same :func:`load_compose_spec`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from mstudy.probes.common import invented_name, read_facts, read_spec
from mstudy.probes.compose_world import ComposeRelation, ComposeWorld, Composition
from mstudy.probes.errors import WorldError
from mstudy.probes.templates import words
from mstudy.probes.world import Fact

__all__ = [
    "BUILTIN_COMPOSE",
    "builtin_compose_spec",
    "generate_compose_world",
    "load_compose_spec",
    "load_compose_world",
]

BUILTIN_COMPOSE = Path(__file__).parent / "data" / "compose_relations.toml"
"""The relations and compositions the generator uses."""

_RELATION_KEYS = {"subject_type", "object_type", "forward", "paraphrases"}
_COMPOSITION_KEYS = {"first", "second", "question", "composed", "composed_forms"}
_REQUIRED = {"relations": ("forward",), "compositions": ("first", "second", "question", "composed")}

Spec = tuple[dict[str, ComposeRelation], dict[str, Composition], dict[str, str]]


def _table(path: Path, kind: str, name: str, data: Any, keys: set[str]) -> dict[str, Any]:
    at = f"{path}: {kind[:-1]} {name!r}"
    if not isinstance(data, Mapping):
        raise WorldError(f"{at} must be a table of settings")
    unknown = sorted(set(data) - keys)
    if unknown:
        raise WorldError(
            f"{at}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(keys))}"
        )
    missing = [k for k in _REQUIRED[kind] if k not in data]
    if missing:
        raise WorldError(f"{at}: missing key(s) {', '.join(missing)}")
    out = dict(data)
    for key in ("paraphrases", "composed_forms"):
        if key in out:
            value = out[key]
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise WorldError(f"{at}, {key}: must be a list of strings")
            out[key] = tuple(value)
    return out


def load_compose_spec(path: str | Path) -> Spec:
    """Read a composition spec (TOML or JSON): ``relations``, ``compositions``, ``anchors``.

    ::

        [relations.mentor]
        subject_type = "person"
        object_type = "person"
        forward = "{subject}'s mentor is {object}."

        [relations.lives_in]
        subject_type = "person"
        object_type = "city"
        forward = "{subject} lives in {object}."

        [compositions.mentor_city]
        first = "mentor"
        second = "lives_in"
        question = "Where does {subject}'s mentor live?"
        composed = "{subject}'s mentor {middle} lives in {object}."
    """
    path = Path(path)
    data = read_spec(path)
    if not isinstance(data, Mapping):
        raise WorldError(f"{path}: the spec must be a table with 'relations' and 'compositions'")
    unknown = sorted(set(data) - {"relations", "compositions", "anchors"})
    if unknown:
        raise WorldError(
            f"{path}: unknown top-level key(s) {', '.join(unknown)}; "
            "accepted: relations, compositions, anchors"
        )
    parts: dict[str, Mapping[str, Any]] = {}
    for kind in ("relations", "compositions"):
        tables = data.get(kind)
        if not isinstance(tables, Mapping) or not tables:
            raise WorldError(f"{path}: needs a non-empty {kind!r} table")
        parts[kind] = tables
    relations: dict[str, ComposeRelation] = {}
    compositions: dict[str, Composition] = {}
    for n, t in parts["relations"].items():
        settings = _table(path, "relations", str(n), t, _RELATION_KEYS)
        try:
            relations[str(n)] = ComposeRelation(name=str(n), **settings)
        except WorldError as exc:
            raise WorldError(f"{path}: {exc}") from None
    for n, t in parts["compositions"].items():
        settings = _table(path, "compositions", str(n), t, _COMPOSITION_KEYS)
        try:
            compositions[str(n)] = Composition(name=str(n), **settings)
        except WorldError as exc:
            raise WorldError(f"{path}: {exc}") from None
    anchors = data.get("anchors", {})
    if not isinstance(anchors, Mapping) or not all(isinstance(v, str) for v in anchors.values()):
        raise WorldError(f"{path}: 'anchors' must map entity types to template strings")
    return relations, compositions, {str(k): v for k, v in anchors.items()}


@lru_cache(maxsize=1)
def _builtin() -> Spec:
    return load_compose_spec(BUILTIN_COMPOSE)


def builtin_compose_spec() -> Spec:
    """The built-in relations, compositions and anchors (copies)."""
    relations, compositions, anchors = _builtin()
    return dict(relations), dict(compositions), dict(anchors)


def load_compose_world(folder: str | Path, *, seed: int = 0) -> ComposeWorld:
    """Load ``folder/facts.jsonl`` and ``folder/relations.toml`` (or ``.json``), checked.

    Questions are split half format, half held out per composition with ``seed``; a fact line
    may not carry ``scored`` (facts are not held out here, questions are).
    """
    root = Path(folder)
    if not root.is_dir():
        raise WorldError(f"{root}: not a folder (it needs facts.jsonl and relations.toml)")
    found = [p for p in (root / "relations.toml", root / "relations.json") if p.is_file()]
    if not found:
        raise WorldError(f"{root}: needs relations.toml or relations.json")
    relations, compositions, anchors = load_compose_spec(found[0])
    facts_path = root / "facts.jsonl"
    parsed = read_facts(facts_path, relations)
    for fact, scored in parsed:
        if scored is not None:
            raise WorldError(
                f"{facts_path}: fact {fact.id!r} has 'scored'; a composition world holds out "
                "two-hop questions (split with --world-seed), not facts"
            )
    return ComposeWorld(
        relations, compositions, [f for f, _ in parsed], anchors, where=str(facts_path), seed=seed
    )


def generate_compose_world(people: int = 40, *, seed: int = 0) -> ComposeWorld:
    """A world of ``people`` invented people over the built-in spec.

    Each person has one mentor (the people form one seeded cycle, so everyone mentors exactly
    one other person and no two people mentor each other), lives in one city and works for one
    company (``max(3, people * 3 // 4)`` of each, invented too): so every person is a subject
    three times and a middle once, and there are ``2 * people`` two-hop questions.

    Places are dealt out evenly (each city has ``people // cities`` or one more residents, in
    a seeded order, so no answer is much commoner than another) and no one lives in their
    mentor's city or works for their mentor's company: a student that answers a two-hop
    question with the subject's own city is wrong, not lucky.
    """
    if people < 4:
        raise WorldError(f"people must be at least 4, got {people}")
    relations, compositions, anchors = builtin_compose_spec()
    rng = random.Random(seed)
    reserved: set[str] = set()
    for relation in relations.values():
        reserved |= words(relation.forward)
        for form in relation.paraphrases:
            reserved |= words(form)
    for composition in compositions.values():
        for form in (composition.question, *composition.all_composed_forms):
            reserved |= words(form)
    used: set[str] = set()

    def fresh() -> str:
        while True:
            name = invented_name(rng)
            folded = name.casefold()
            if folded in reserved or any(folded in u or u in folded for u in used):
                continue
            used.add(folded)
            return name

    persons = [fresh() for _ in range(people)]
    pool = max(3, people * 3 // 4)
    cities = [fresh() for _ in range(pool)]
    companies = [fresh() for _ in range(pool)]
    order = persons[:]
    rng.shuffle(order)
    mentor = {order[i]: order[(i + 1) % people] for i in range(people)}
    city = _deal(cities, order, rng)
    company = _deal(companies, order, rng)
    facts: list[Fact] = []
    for person in persons:
        facts.append(Fact(f"f{len(facts):05d}", person, "mentor", mentor[person]))
        facts.append(Fact(f"f{len(facts):05d}", person, "lives_in", city[person]))
        facts.append(Fact(f"f{len(facts):05d}", person, "works_for", company[person]))
    return ComposeWorld(
        relations, compositions, facts, anchors, where="generated compose world", seed=seed
    )


def _deal(places: Sequence[str], cycle: Sequence[str], rng: random.Random) -> dict[str, str]:
    """Person -> place, each place used ``len(cycle) // len(places)`` times or once more, and
    no two neighbours of the mentor ``cycle`` (a person and their mentor) in the same place."""
    dealt = [places[i % len(places)] for i in range(len(cycle))]
    rng.shuffle(dealt)
    n = len(dealt)

    def clash(i: int) -> bool:
        return dealt[i] in (dealt[(i - 1) % n], dealt[(i + 1) % n])

    for _ in range(100 * n):
        bad = [i for i in range(n) if clash(i)]
        if not bad:
            break
        i, j = rng.choice(bad), rng.randrange(n)
        dealt[i], dealt[j] = dealt[j], dealt[i]
        if clash(i) or clash(j):  # keep a swap only when it mends both places
            dealt[i], dealt[j] = dealt[j], dealt[i]
    else:  # pragma: no cover - three or more places always separate within the budget
        raise WorldError("could not deal places so that no one shares their mentor's")
    return dict(zip(cycle, dealt, strict=True))
