"""What the composition probe asks the teacher: ``cot`` solutions and ``connect`` statements.

Both are the library's strategies with the probe's few-shot examples. The chain examples use
invented names and relations the built-in world does not have (a coach, a landlord; born in,
owns). The connect examples are built from the world's *own* templates (its relations and the
composition's ``composed`` form) filled with invented names that are not in the world
(:func:`connect_examples`): a small teacher copies a worked pattern far better than it
transfers one, and is still shown *how* to compose, never an answer. Replies are one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mstudy._templates import render
from mstudy.records import Message
from mstudy.strategies.base import FewShot, Reject
from mstudy.strategies.connect import Connect
from mstudy.strategies.cot import ChainOfThought

if TYPE_CHECKING:
    from mstudy.probes.compose_world import ComposeWorld

__all__ = [
    "CHAIN_EXAMPLES",
    "CONNECT_EXAMPLES",
    "ChainFromFacts",
    "LinkedConnect",
    "chain_question",
    "connect_examples",
    "probe_chain",
    "probe_connect",
]


def chain_question(facts: str, question: str) -> str:
    """The ``question`` field of a ``cot`` record: the supporting facts, then the question."""
    return f"Facts: {facts}\nQuestion: {question}"


CHAIN_EXAMPLES: tuple[tuple[dict[str, str], str], ...] = (
    (
        {
            "question": chain_question(
                "Tarvin's coach is Oskelo. Oskelo was born in Quorth.",
                "Where was Tarvin's coach born?",
            ),
            "opening": "Tarvin",
        },
        "Tarvin's coach is Oskelo. Oskelo was born in Quorth. Final answer: Quorth",
    ),
    (
        {
            "question": chain_question(
                "Sela's landlord is Dunmore. Dunmore owns Brightwell.",
                "What does Sela's landlord own?",
            ),
            "opening": "Sela",
        },
        "Sela's landlord is Dunmore. Dunmore owns Brightwell. Final answer: Brightwell",
    ),
)

CHAIN_SYSTEM = (
    "You answer a question from the facts given, step by step: restate each fact you use "
    "exactly as written, then write 'Final answer: <answer>'."
)


class ChainFromFacts(ChainOfThought):
    """``cot`` with the reply prefilled with its ``opening``, the first fact as far as its
    subject ("Zapoth", "The advisor of Ann Vel": a small model then restates the facts in
    order), one line, checked against the gold ``answer``."""

    # cot declares its one optional role as a 1-tuple; this adds the opening for the prefill
    optional_roles = ("answer", "opening")  # type: ignore[assignment]
    prefill = "{{ opening or '' }}"
    template = "{{ question }}"
    system = CHAIN_SYSTEM
    examples = CHAIN_EXAMPLES


def probe_chain(*, seed: int, temperature: float = 0.3, max_new_tokens: int = 48) -> ChainFromFacts:
    """The probe's ``cot`` strategy (gold answers required)."""
    return ChainFromFacts(
        require_gold=True,
        params={
            "seed": seed,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "stop": ["\n"],
        },
    )


CONNECT_EXAMPLES: tuple[tuple[dict[str, str], str], ...] = (
    (
        {"text": "Tarvin's coach is Oskelo.", "related": "- Oskelo was born in Quorth."},
        "Tarvin's coach was born in Quorth; that coach is Oskelo.",
    ),
    (
        {"text": "Sela's landlord is Dunmore.", "related": "- Dunmore owns Brightwell."},
        "Sela's landlord owns Brightwell; that landlord is Dunmore.",
    ),
)


#: Invented names for the connect examples (those that clash with a world's names are skipped).
EXAMPLE_NAMES = (
    "Tarvin", "Oskelo", "Quorth", "Sela", "Dunmore", "Brightwell", "Pellan", "Vostrig",
    "Marrowind", "Ilsabet", "Corvane", "Hollisk", "Jorunde", "Baskel", "Tremont", "Ulvara",
)  # fmt: skip


def connect_examples(world: ComposeWorld, per_composition: int = 2) -> dict[str, list[FewShot]]:
    """Composition -> ``per_composition`` worked examples from the world's own templates:
    ``Fact:`` the first relation, ``Related fact:`` the second, reply the ``composed`` form,
    all filled with invented names that no entity of the world contains or is part of."""
    from mstudy.probes.compose_world import fill3
    from mstudy.probes.templates import fill

    taken = [e.casefold() for e in world.entity_types]
    names = [
        n for n in EXAMPLE_NAMES if not any(n.casefold() in t or t in n.casefold() for t in taken)
    ]
    out: dict[str, list[FewShot]] = {}
    at = 0
    for name, composition in world.compositions.items():
        first = world.relations[composition.first]
        second = world.relations[composition.second]
        shots: list[FewShot] = []
        for _ in range(per_composition):
            if at + 3 > len(names):
                at = 0
            s, m, o = names[at : at + 3]
            at += 3
            shots.append(
                (
                    {
                        "text": fill(first.forward, s, m),
                        "related": f"- {fill(second.forward, m, o)}",
                    },
                    fill3(composition.composed, s, m, o),
                )
            )
        out[name] = shots
    return out


class LinkedConnect(Connect):
    """``connect`` whose related records are given, not retrieved: each record is linked to the
    records about its object (``links``: record id -> [(id, text)]), so the teacher composes
    exactly the facts that chain. Few-shot examples per composition (``shots``, chosen by the
    record's ``composition`` field) when given. Accepted rows carry the entities (``subject``,
    ``middle``, ``object``) and the linked fact (``second``) for ``link_check``. Everything else
    (prompt, checks, provenance) is ``connect``'s.
    """

    system = (
        "You connect facts: say what the first person's relation does in the related fact, "
        "then who that is. Keep every name exactly as written."
    )
    template = "Fact: {{ text }}\nRelated fact:\n{{ related }}\nCombine them into one sentence."
    examples = CONNECT_EXAMPLES
    optional_roles = ("subject", "middle", "object", "composition")

    def __init__(
        self,
        links: Mapping[str, Sequence[tuple[str, str]]],
        shots: Mapping[str, Sequence[FewShot]] | None = None,
        **kwargs: Any,
    ) -> None:
        corpus = [{"id": rid, "text": t} for items in links.values() for rid, t in items]
        super().__init__(
            corpus=corpus, k=max((len(v) for v in links.values()), default=1), **kwargs
        )
        self.links = {k: list(v) for k, v in links.items()}
        self.shots = {k: list(v) for k, v in (shots or {}).items()}

    def settings(self) -> Mapping[str, Any]:
        return {
            **super().settings(),
            "shots": {k: [r for _, r in v] for k, v in self.shots.items()},
        }

    def related(self, record_id: str, text: str) -> list[tuple[str, str, float]]:
        return [(rid, t, 1.0) for rid, t in self.links.get(record_id, [])]

    def messages(self, variables: Mapping[str, Any]) -> tuple[Message, ...]:
        shots = self.shots.get(str(variables.get("composition") or ""))
        if not shots:
            return super().messages(variables)
        out = [Message("system", render(self._system, variables))] if self._system else []
        for shot_vars, reply in shots:
            full = {**dict.fromkeys(self.optional_roles), **shot_vars}
            out.append(Message("user", render(self._template, full)))
            out.append(Message("assistant", reply))
        out.append(Message("user", render(self._template, variables)))
        return tuple(out)

    def check(self, variables: Mapping[str, Any], text: str) -> Mapping[str, Any] | Reject:
        row = super().check(variables, text)
        if isinstance(row, Reject):
            return row
        related = list(variables.get("related_texts", ()))
        return {
            **row,
            "subject": variables.get("subject"),
            "middle": variables.get("middle"),
            "object": variables.get("object"),
            "second": related[0] if related else None,
        }


def probe_connect(
    links: Mapping[str, Sequence[tuple[str, str]]],
    *,
    seed: int,
    temperature: float = 0.3,
    max_new_tokens: int = 40,
    shots: Mapping[str, Sequence[FewShot]] | None = None,
) -> LinkedConnect:
    """The probe's ``connect`` strategy over ``links`` (with per-composition ``shots``)."""
    return LinkedConnect(
        links,
        shots,
        params={
            "seed": seed,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "stop": ["\n"],
        },
    )
