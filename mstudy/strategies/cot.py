"""``cot``: step-by-step solutions ending in a final answer, checked against the gold answer."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from mstudy.records import GenerationParams
from mstudy.strategies.base import FewShot, Reject, TemplateStrategy
from mstudy.text import answers_match, strip_label

_FINAL = (
    re.compile(r"final answer\s*(?:is)?\s*[:：]?\s*(.+)", re.IGNORECASE),
    re.compile(r"\\boxed\{([^{}]+)\}"),
    re.compile(r"^####\s*(.+)$", re.MULTILINE),
    re.compile(r"the answer is\s*[:：]?\s*(.+)", re.IGNORECASE),
)


def extract_final_answer(text: str) -> str | None:
    """The last final answer stated in ``text`` ("Final answer: X", ``\\boxed{X}``, "#### X")."""
    for pattern in _FINAL:
        matches = pattern.findall(text)
        if matches:
            answer = str(matches[-1]).strip().splitlines()[0].strip()
            answer = answer.rstrip(".").strip().strip("*_`").strip().rstrip(".").strip()
            if answer:
                return answer
    return None


class ChainOfThought(TemplateStrategy):
    """Solve a question step by step; keep solutions whose final answer matches the gold one."""

    name = "cot"
    version = "1"
    roles = ("question",)
    optional_roles = ("answer",)
    system = (
        "You solve problems step by step. Write short numbered steps, then a last line of "
        "the form 'Final answer: <answer>'."
    )
    template = "Solve this step by step.\nProblem: {{ question }}"
    examples: ClassVar[Sequence[FewShot]] = (
        (
            {
                "question": "A shelf holds 4 rows of 12 books. 7 books are lent out. "
                "How many books are left on the shelf?"
            },
            "1. The shelf holds 4 x 12 = 48 books.\n2. 7 are lent out, so 48 - 7 = 41 remain.\n"
            "Final answer: 41",
        ),
        (
            {"question": "Which is heavier, a kilogram of feathers or a kilogram of iron?"},
            "1. Both weigh one kilogram.\n2. A kilogram is the same mass whatever the material.\n"
            "Final answer: neither, they weigh the same",
        ),
    )
    default_params = GenerationParams(max_new_tokens=256, temperature=0.7)

    def __init__(self, *, require_gold: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.require_gold = require_gold

    def settings(self) -> Mapping[str, Any]:
        return {**super().settings(), "require_gold": self.require_gold}

    def check(self, variables: Mapping[str, Any], text: str) -> Mapping[str, Any] | Reject:
        solution = strip_label(text)
        answer = extract_final_answer(solution)
        if answer is None:
            return Reject("no final answer", solution[-120:])
        gold = variables.get("answer")
        if gold is None and self.require_gold:
            return Reject("no gold answer", "require_gold is set but the record has none")
        if gold is not None and not answers_match(answer, str(gold)):
            return Reject("wrong answer", f"got {answer!r}, expected {gold!r}")
        return {
            "input": variables["question"],
            "text": solution,
            "answer": answer,
            "gold": None if gold is None else str(gold),
        }


__all__ = ["ChainOfThought", "extract_final_answer"]
