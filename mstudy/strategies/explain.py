"""``explain``: a teacher-written explanation of a record, as Phi-1.5 and Orca learned from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from mstudy.records import GenerationParams
from mstudy.strategies.base import FewShot, Reject, TemplateStrategy, is_copy
from mstudy.text import strip_label


class Explain(TemplateStrategy):
    """Explain why a statement holds (or what a text means) in a few plain sentences."""

    name = "explain"
    version = "1"
    roles = ("text",)
    system = (
        "You are a patient teacher. Explain the statement to a student in two or three plain "
        "sentences: what it means and why it is so. Do not repeat the statement word for word."
    )
    template = "Explain this.\nStatement: {{ text }}"
    examples: ClassVar[Sequence[FewShot]] = (
        (
            {"text": "Water boils at a lower temperature on a high mountain."},
            "Water boils when its vapour pressure matches the pressure of the air above it. "
            "High up, the air is thinner and presses less, so the water reaches that point "
            "at a lower temperature.",
        ),
    )
    default_params = GenerationParams(max_new_tokens=160, temperature=0.7)

    def __init__(self, *, min_words: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_words = min_words

    def settings(self) -> Mapping[str, Any]:
        return {**super().settings(), "min_words": self.min_words}

    def check(self, variables: Mapping[str, Any], text: str) -> Mapping[str, Any] | Reject:
        source = variables["text"]
        reply = strip_label(text)
        words = len(reply.split())
        if words < self.min_words:
            return Reject("too short", f"{words} words, need {self.min_words}")
        if is_copy(reply, source):
            return Reject("copy of the source", reply[:120])
        return {"input": source, "text": reply, "answer": None}


__all__ = ["Explain"]
