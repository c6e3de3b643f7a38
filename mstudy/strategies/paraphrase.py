"""``paraphrase``: the same content in other words, so a student does not learn one wording."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from mstudy.records import GenerationParams
from mstudy.strategies.base import FewShot, Reject, TemplateStrategy, is_copy
from mstudy.text import first_line, strip_label


class Paraphrase(TemplateStrategy):
    """Say the text again with different words, keeping names, numbers and meaning."""

    name = "paraphrase"
    version = "1"
    roles = ("text",)
    system = (
        "You paraphrase text: say exactly the same thing with different words and sentence "
        "structure. Keep all names and numbers. Do not add anything."
    )
    template = "Paraphrase this text.\nText: {{ text }}"
    examples: ClassVar[Sequence[FewShot]] = (
        (
            {"text": "The bridge was closed for repairs in 1998."},
            "In 1998, repair work shut the bridge.",
        ),
        (
            {"text": "Ada Lovelace wrote the first published computer program."},
            "The first computer program ever published was written by Ada Lovelace.",
        ),
    )
    default_params = GenerationParams(max_new_tokens=128, temperature=0.8)

    def __init__(self, *, min_ratio: float = 0.5, max_ratio: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 < min_ratio <= 1 <= max_ratio:
            raise ValueError("paraphrase: need 0 < min_ratio <= 1 <= max_ratio")
        self.min_ratio = min_ratio
        self.max_ratio = max_ratio

    def settings(self) -> Mapping[str, Any]:
        return {**super().settings(), "min_ratio": self.min_ratio, "max_ratio": self.max_ratio}

    def check(self, variables: Mapping[str, Any], text: str) -> Mapping[str, Any] | Reject:
        source: str = variables["text"]
        reply = strip_label(first_line(text) if "\n" not in source.strip() else text)
        if not reply:
            return Reject("empty reply")
        if is_copy(reply, source):
            return Reject("copy of the source", reply[:120])
        ratio = len(reply) / max(len(source), 1)
        if not self.min_ratio <= ratio <= self.max_ratio:
            return Reject(
                "length ratio out of bounds",
                f"{ratio:.2f} not in [{self.min_ratio}, {self.max_ratio}]",
            )
        return {"input": source, "text": reply, "answer": None}


__all__ = ["Paraphrase"]
