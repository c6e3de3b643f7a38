"""``pot``: program of thought. The teacher writes a Python program that computes the answer.

The program runs in :mod:`mstudy.sandbox` (a separate, confined process, never the caller's)
and the last line it prints is the answer; with a gold answer on the record, only programs
whose answer matches it are kept. ``execute=False`` leaves running to the ``pot_check``
filter, which runs several programs at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from mstudy.filters.verify import answers_agree, extract_code, run_program
from mstudy.records import GenerationParams
from mstudy.sandbox import SandboxLimits
from mstudy.strategies.base import FewShot, Reject, TemplateStrategy


class ProgramOfThought(TemplateStrategy):
    """Solve a problem with a short Python program; keep programs that print the gold answer.

    Rows: ``input`` (the question), ``text`` (the program), ``answer`` (what it printed;
    None with ``execute=False``) and ``gold`` (the record's answer, or None).
    """

    name = "pot"
    version = "1"
    roles = ("question",)
    optional_roles = ("answer",)
    system = (
        "You solve problems by writing a short Python program that computes the answer. Use "
        "only the Python standard library; do not read files, use the network or ask for "
        "input. The last line the program prints must be the final answer alone."
    )
    template = (
        "Write a Python program that solves this problem and prints the answer.\n"
        "Problem: {{ question }}"
    )
    examples: ClassVar[Sequence[FewShot]] = (
        (
            {
                "question": "A shelf holds 4 rows of 12 books. 7 books are lent out. "
                "How many books are left on the shelf?"
            },
            "```python\nbooks = 4 * 12\nleft = books - 7\nprint(left)\n```",
        ),
        (
            {"question": "What is the sum of the integers from 1 to 100 that are divisible by 7?"},
            "```python\ntotal = sum(n for n in range(1, 101) if n % 7 == 0)\nprint(total)\n```",
        ),
    )
    prefill = "```python\n"
    default_params = GenerationParams(max_new_tokens=256, temperature=0.7)
    # Verdicts come from running programs under a time limit, which may vary between runs.
    memoizable = False

    def __init__(
        self,
        *,
        execute: bool = True,
        require_gold: bool = False,
        timeout: float = 5.0,
        memory_mb: int = 256,
        max_code_chars: int = 8_000,
        require: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if max_code_chars < 1:
            raise ValueError(f"pot: max_code_chars must be >= 1, got {max_code_chars}")
        self.execute, self.require_gold = execute, require_gold
        self.limits = SandboxLimits(timeout=timeout, memory_mb=memory_mb, max_output=16_384)
        self.max_code_chars = max_code_chars
        self.require = tuple(require)

    def settings(self) -> Mapping[str, Any]:
        return {
            **super().settings(),
            "execute": self.execute,
            "require_gold": self.require_gold,
            "timeout": self.limits.timeout,
            "memory_mb": self.limits.memory_mb,
            "max_code_chars": self.max_code_chars,
            "require": list(self.require),
        }

    def check(self, variables: Mapping[str, Any], text: str) -> Mapping[str, Any] | Reject:
        code = extract_code(text)
        if code is None or not code.strip():
            return Reject("no code", text[:120])
        if len(code) > self.max_code_chars:
            return Reject("code too long", f"{len(code)} characters > {self.max_code_chars}")
        gold = variables.get("answer")
        if gold is None and self.require_gold:
            return Reject("no gold answer", "require_gold is set but the record has none")
        fields: dict[str, Any] = {
            "input": variables["question"],
            "text": code,
            "answer": None,
            "gold": gold,
        }
        if not self.execute:
            return fields
        outcome = run_program(code, limits=self.limits, require=self.require)
        if outcome.reason is not None:
            return Reject(outcome.reason, outcome.detail)
        assert outcome.result is not None
        if gold is not None and not answers_agree(outcome.result, str(gold)):
            return Reject("wrong answer", f"printed {outcome.result[:80]!r}, expected {gold!r}")
        fields["answer"] = outcome.result
        return fields


__all__ = ["ProgramOfThought"]
