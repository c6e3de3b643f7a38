"""``reverse``: state a fact the other way round, so a student learns it in both directions.

A causal LM trained on "A is the father of B" cannot answer "who is B's father?" unless the
data also says it starting from B: the reversal curse. When the record names the fact's
``subject`` and ``object``, the reply is prefilled with the object (small models then stay on
task) and must contain both entities, object first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from mstudy.records import GenerationParams
from mstudy.strategies.base import FewShot, Reject, TemplateStrategy
from mstudy.text import Normalized, first_line, normalize, strip_label

__all__ = ["Reverse", "reversal_problem"]


class Reverse(TemplateStrategy):
    """Restate a fact starting from its object ("B is the child of A" for "A is B's parent")."""

    name = "reverse"
    version = "1"
    roles = ("text",)
    optional_roles = ("subject", "object")
    system = (
        "You restate facts the other way round. Start the sentence with the second entity, "
        "keep every name exactly as written, keep the meaning, and answer with one sentence."
    )
    template = (
        '{% if object %}Restate this fact so that it starts with "{{ object }}".\n'
        "{% else %}Restate this fact the other way round.\n{% endif %}"
        "Fact: {{ text }}"
    )
    examples: ClassVar[Sequence[FewShot]] = (
        (
            {
                "text": "Marie Curie discovered polonium.",
                "subject": "Marie Curie",
                "object": "polonium",
            },
            "Polonium was discovered by Marie Curie.",
        ),
        (
            {
                "text": "Olaf Brandt is the father of Lena Brandt.",
                "subject": "Olaf Brandt",
                "object": "Lena Brandt",
            },
            "Lena Brandt's father is Olaf Brandt.",
        ),
        (
            {
                "text": "The Zorvath Tower stands in the city of Meridia.",
                "subject": "The Zorvath Tower",
                "object": "Meridia",
            },
            "Meridia is the city where the Zorvath Tower stands.",
        ),
    )
    prefill = "{{ object or '' }}"
    default_params = GenerationParams(max_new_tokens=64, temperature=0.7, stop=("\n",))

    def __init__(self, *, require_order: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.require_order = require_order

    def settings(self) -> Mapping[str, Any]:
        return {**super().settings(), "require_order": self.require_order}

    def check(self, variables: Mapping[str, Any], text: str) -> Mapping[str, Any] | Reject:
        source = variables["text"]
        reply = strip_label(first_line(text))
        if not reply:
            return Reject("empty reply")
        subject, obj = variables.get("subject"), variables.get("object")
        problem = reversal_problem(reply, source, subject, obj, require_order=self.require_order)
        if problem is not None:
            return Reject(*problem)
        return {"input": source, "text": reply, "answer": None, "subject": subject, "object": obj}


def reversal_problem(
    reply: str,
    source: str,
    subject: str | None,
    obj: str | None,
    *,
    require_order: bool = True,
) -> tuple[str, str] | None:
    """What is wrong with ``reply`` as the reversal of ``source``: (reason, detail), or None.

    The reply must have words, must not be a copy of the source, must contain each entity given
    (blank ones are skipped) and, with ``require_order`` and both entities, name the object
    first. The :class:`Reverse` strategy and the ``reverse_check`` filter both use this.
    """
    said = Normalized(reply)  # normalised once for every check below
    if not said.text:
        return ("empty", f"no words in {reply[:120]!r}")
    own = normalize(source)
    if own and said.text == own:
        return ("copy of the source", reply[:120])
    subject = subject if subject and subject.strip() else None
    obj = obj if obj and obj.strip() else None
    for role, entity in (("subject", subject), ("object", obj)):
        if entity and not said.contains(entity):
            return (f"{role} missing", f"{entity!r} not in {reply[:120]!r}")
    if require_order and subject and obj and said.position(obj) > said.position(subject):
        return ("not reversed", f"{subject!r} still comes before {obj!r}")
    return None
