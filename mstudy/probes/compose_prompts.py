"""What the composition probe asks the teacher: ``cot`` solutions and ``connect`` statements.

Both are the library's strategies with the probe's few-shot examples, which use invented
names and relations the built-in world does not have (a coach, a landlord; born in, owns), so
the teacher is shown *how* to chain two facts, never an answer. Replies are one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mstudy.strategies.connect import Connect
from mstudy.strategies.cot import ChainOfThought

__all__ = [
    "CHAIN_EXAMPLES",
    "CONNECT_EXAMPLES",
    "ChainFromFacts",
    "LinkedConnect",
    "chain_question",
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
            "subject": "Tarvin",
        },
        "Tarvin's coach is Oskelo. Oskelo was born in Quorth. Final answer: Quorth",
    ),
    (
        {
            "question": chain_question(
                "Sela's landlord is Dunmore. Dunmore owns Brightwell.",
                "What does Sela's landlord own?",
            ),
            "subject": "Sela",
        },
        "Sela's landlord is Dunmore. Dunmore owns Brightwell. Final answer: Brightwell",
    ),
)

CHAIN_SYSTEM = (
    "You answer a question from the facts given, step by step: restate each fact you use "
    "exactly as written, then write 'Final answer: <answer>'."
)


class ChainFromFacts(ChainOfThought):
    """``cot`` with the reply prefilled with the question's subject (a small model then
    restates the facts in order), one line, checked against the gold ``answer``."""

    # cot declares its one optional role as a 1-tuple; this adds the subject for the prefill
    optional_roles = ("answer", "subject")  # type: ignore[assignment]
    prefill = "{{ subject or '' }}"
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


class LinkedConnect(Connect):
    """``connect`` whose related records are given, not retrieved: each record is linked to the
    records about its object (``links``: record id -> [(id, text)]), so the teacher composes
    exactly the facts that chain. Everything else (prompt, checks, provenance) is ``connect``'s.
    """

    system = (
        "You connect facts: say what the first person's relation does in the related fact, "
        "then who that is. Keep every name exactly as written."
    )
    template = "Fact: {{ text }}\nRelated fact:\n{{ related }}\nCombine them into one sentence."
    examples = CONNECT_EXAMPLES

    def __init__(self, links: Mapping[str, Sequence[tuple[str, str]]], **kwargs: Any) -> None:
        corpus = [{"id": rid, "text": t} for items in links.values() for rid, t in items]
        super().__init__(
            corpus=corpus, k=max((len(v) for v in links.values()), default=1), **kwargs
        )
        self.links = {k: list(v) for k, v in links.items()}

    def related(self, record_id: str, text: str) -> list[tuple[str, str, float]]:
        return [(rid, t, 1.0) for rid, t in self.links.get(record_id, [])]


def probe_connect(
    links: Mapping[str, Sequence[tuple[str, str]]],
    *,
    seed: int,
    temperature: float = 0.3,
    max_new_tokens: int = 40,
) -> LinkedConnect:
    """The probe's ``connect`` strategy over ``links``."""
    return LinkedConnect(
        links,
        params={
            "seed": seed,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "stop": ["\n"],
        },
    )
