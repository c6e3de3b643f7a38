"""Reading worlds from files: a relation spec (TOML or JSON), facts (JSONL), the built-in spec.

Every world read here is checked as it is built (:mod:`mstudy.probes.world_checks`), and the
built-in relations (``data/builtin_relations.toml``) are read by the same
:func:`load_relations` as a user's ``relations.toml``, so they pass the same checks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from mstudy.probes.common import read_facts, read_spec
from mstudy.probes.errors import WorldError
from mstudy.probes.world import Fact, Relation, World

__all__ = [
    "BUILTIN_RELATIONS",
    "builtin_relations",
    "load_relations",
    "load_world",
    "relation_from_table",
]

BUILTIN_RELATIONS = Path(__file__).parent / "data" / "builtin_relations.toml"
"""The relation spec the generator draws from (in its order)."""

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


def relation_from_table(name: str, data: Mapping[str, Any], where: str = "") -> Relation:
    """Build a relation from a spec table; unknown or missing keys raise a WorldError naming
    them, and so does any check the relation fails (prefixed with ``where``)."""
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
        return Relation(name=name, **kwargs)
    except WorldError as exc:
        raise WorldError(f"{prefix}{exc}") from None


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
    data = read_spec(path)
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
        str(name): relation_from_table(str(name), spec, str(path)) for name, spec in tables.items()
    }
    anchors = data.get("anchors", {})
    if not isinstance(anchors, Mapping) or not all(isinstance(v, str) for v in anchors.values()):
        raise WorldError(f"{path}: 'anchors' must map entity types to template strings")
    return relations, {str(k): v for k, v in anchors.items()}


@lru_cache(maxsize=1)
def _builtin() -> tuple[tuple[str, Relation], ...]:
    relations, _ = load_relations(BUILTIN_RELATIONS)
    return tuple(relations.items())


def builtin_relations() -> dict[str, Relation]:
    """The six relation types the generator draws from (in this order), read from
    :data:`BUILTIN_RELATIONS` by :func:`load_relations`."""
    return dict(_builtin())


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
    parsed = read_facts(facts_path, relation_map)
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
