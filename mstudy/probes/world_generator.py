"""Generating a world of invented facts from a seed, over the built-in (or given) relations."""

from __future__ import annotations

import random
from collections.abc import Mapping

from mstudy.probes.common import invented_name
from mstudy.probes.errors import WorldError
from mstudy.probes.templates import words
from mstudy.probes.world import Fact, Relation, World
from mstudy.probes.world_files import builtin_relations

__all__ = ["generate_world"]


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
            reserved |= words(template)
    used: set[str] = set()

    def fresh() -> str:
        """A new name that is neither inside another entity's name nor holds one (else a
        question naming ``Nebril`` would also name ``Nebri``), nor inside a template's word
        (``Here`` in "Where does ... come from?")."""
        while True:
            name = invented_name(rng)
            folded = name.casefold()
            if any(folded in r for r in reserved) or any(folded in u or u in folded for u in used):
                continue
            used.add(folded)
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
