"""``facts``: free text -> atomic facts (subject, relation, object, one-sentence statement).

The teacher answers with JSON of :data:`FACTS_SCHEMA` (constrained where the teacher can, and
validated by the parse step either way). Each fact becomes one output row whose fields feed
``reverse`` (and ``reverse_check``) directly: ``text`` is the statement, ``subject`` and
``object`` the entities, ``input`` the source text. A fact is kept only when both entities
occur in the source text and in its statement (compared case-folded, NFKC, whitespace
collapsed); otherwise it is rejected with a reason, as is a repeat of an earlier fact of the
same reply.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from mstudy.errors import ConfigError
from mstudy.records import GenerationParams
from mstudy.strategies.base import FewShot, Reject, TemplateStrategy

__all__ = ["FACTS_SCHEMA", "Facts", "facts_schema"]

_TEXT = {"type": "string", "minLength": 1, "maxLength": 300}


def facts_schema(max_facts: int = 8) -> dict[str, Any]:
    """The JSON Schema of a ``facts`` reply: an object with 1 to ``max_facts`` facts."""
    fact = {
        "type": "object",
        "properties": {
            "subject": _TEXT,
            "relation": _TEXT,
            "object": _TEXT,
            "statement": _TEXT,
        },
        "required": ["subject", "relation", "object", "statement"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "facts": {"type": "array", "items": fact, "minItems": 1, "maxItems": max_facts}
        },
        "required": ["facts"],
        "additionalProperties": False,
    }


FACTS_SCHEMA = facts_schema()
"""The default response schema (at most 8 facts a reply)."""


def _shot(text: str, *facts: tuple[str, str, str, str]) -> FewShot:
    keys = ("subject", "relation", "object", "statement")
    reply = {"facts": [dict(zip(keys, fact, strict=True)) for fact in facts]}
    return ({"text": text}, json.dumps(reply, ensure_ascii=False))


def _fold(text: str) -> str:
    """Case-folded NFKC text with whitespace runs collapsed to one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


class Facts(TemplateStrategy):
    """Split a sentence or paragraph into atomic facts, one output row each.

    Parameters (besides :class:`TemplateStrategy`'s): ``max_facts`` caps the facts a reply may
    hold (the schema's ``maxItems``).
    """

    name = "facts"
    version = "1"
    roles = ("text",)
    system = (
        "You split a text into atomic facts. Each fact links two entities named in the text: "
        "a subject, a short relation and an object, copied exactly as the text writes them, "
        "and a statement: one short sentence that says the fact and names both entities. "
        'Answer with JSON only: {"facts": [{"subject": ..., "relation": ..., "object": ..., '
        '"statement": ...}]}.'
    )
    template = "Text: {{ text }}"
    examples: ClassVar[Sequence[FewShot]] = (
        _shot(
            "Marie Curie discovered polonium in Paris.",
            ("Marie Curie", "discovered", "polonium", "Marie Curie discovered polonium."),
            ("Marie Curie", "worked in", "Paris", "Marie Curie worked in Paris."),
        ),
        _shot(
            "Olaf Brandt is the father of Lena Brandt.",
            ("Olaf Brandt", "father of", "Lena Brandt", "Olaf Brandt is Lena Brandt's father."),
        ),
        _shot(
            "The Zorvath Tower, built by Ines Moreau, stands in Meridia.",
            (
                "The Zorvath Tower",
                "built by",
                "Ines Moreau",
                "Ines Moreau built the Zorvath Tower.",
            ),
            ("The Zorvath Tower", "stands in", "Meridia", "The Zorvath Tower stands in Meridia."),
        ),
    )
    response_schema = FACTS_SCHEMA
    default_params = GenerationParams(max_new_tokens=256, temperature=0.0)

    def __init__(self, *, max_facts: int = 8, **kwargs: Any) -> None:
        if isinstance(max_facts, bool) or not isinstance(max_facts, int) or max_facts < 1:
            raise ConfigError(
                f"strategy 'facts': max_facts must be an integer >= 1, got {max_facts!r}",
                parameter="max_facts",
            )
        if kwargs.get("response_schema") is None:
            kwargs["response_schema"] = facts_schema(max_facts)
        super().__init__(**kwargs)
        self.max_facts = max_facts

    def settings(self) -> Mapping[str, Any]:
        return {**super().settings(), "max_facts": self.max_facts}

    def check_json(
        self, variables: Mapping[str, Any], data: Any
    ) -> Sequence[Mapping[str, Any] | Reject]:
        source = str(variables["text"])
        folded = _fold(source)
        rows: list[Mapping[str, Any] | Reject] = []
        seen: set[tuple[str, str, str]] = set()
        for fact in data["facts"]:
            subject, relation, obj = fact["subject"], fact["relation"], fact["object"]
            statement = " ".join(fact["statement"].split())
            problem = _fact_problem(subject, obj, statement, folded)
            key = (_fold(subject), _fold(relation), _fold(obj))
            if problem is None and key in seen:
                problem = ("duplicate fact", f"{subject!r} {relation!r} {obj!r} again")
            if problem is not None:
                rows.append(Reject(*problem))
                continue
            seen.add(key)
            rows.append(
                {
                    "input": source,
                    "text": statement,
                    "answer": None,
                    "subject": subject.strip(),
                    "relation": " ".join(relation.split()),
                    "object": obj.strip(),
                }
            )
        return rows


def _fact_problem(
    subject: str, obj: str, statement: str, folded_source: str
) -> tuple[str, str] | None:
    """What is wrong with one fact: (reason, detail), or None."""
    said = _fold(statement)
    for role, entity in (("subject", subject), ("object", obj)):
        name = _fold(entity)
        if not name:
            return (f"{role} empty", f"{role} {entity!r} has no characters but spaces")
        if name not in folded_source:
            return (f"{role} not in text", f"{entity!r} does not occur in the source text")
        if name not in said:
            return (f"{role} not in statement", f"{entity!r} not in {statement[:120]!r}")
    if _fold(subject) == _fold(obj):
        return ("same entity", f"subject and object are both {subject!r}")
    return None
