"""Verification filters: keep only solutions whose answer is right.

* ``answer_check``: the final answer of a step-by-step solution (``cot``) against the gold
  answer, both normalised (``1,000`` == ``1000.0`` == ``$1000``; ``\\boxed{12}`` == ``12``;
  ``x = 3`` == ``3``; ``41 books`` == ``41``; case, punctuation and articles ignored).
* ``pot_check``: program of thought. The teacher's Python program runs in the sandbox
  (:mod:`mstudy.sandbox`: a separate process with a wall-clock timeout, a memory cap, no
  network, a fresh temporary folder and an empty environment); the last line it prints is
  the answer. It never runs in the caller's process, not even to check its syntax.

The gold answer comes from the example's ``gold`` field when present (the ``pot`` strategy
puts it there), otherwise from ``gold`` (a mapping of source id to answer) or ``gold_path``
(a JSONL/Parquet file of ``{"id": ..., "answer": ...}`` rows).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mstudy.records import Example, Record, Rejection
from mstudy.sandbox import SandboxLimits, SandboxResult, run_python
from mstudy.strategies.cot import extract_final_answer
from mstudy.text import answers_match, normalize_answer

__all__ = [
    "AnswerCheck",
    "ProgramCheck",
    "ProgramOutcome",
    "answers_agree",
    "canonical_answer",
    "extract_code",
    "run_program",
]

_WRAPPERS = (
    re.compile(r"^\\boxed\{(.*)\}$", re.DOTALL),
    re.compile(r"^\\text\{(.*)\}$", re.DOTALL),
    re.compile(r"^\\mathrm\{(.*)\}$", re.DOTALL),
    re.compile(r"^\$+(.*?)\$+$", re.DOTALL),
    re.compile(r"^\*\*(.*)\*\*$", re.DOTALL),
    re.compile(r"^`(.*)`$", re.DOTALL),
)
_LEADING_NUMBER = re.compile(
    r"^([-+]?\$?\s?(?:\d+(?:,\d{3})*|\d*)(?:\.\d+)?(?:/\d+)?%?)"  # a number
    r"\s+([^\W\d_]+(?:\s+[^\W\d_]+){0,2})$"  # then up to three words of unit
)
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:\n```|$)", re.DOTALL)


def canonical_answer(text: str) -> str:
    """A canonical form of a short final answer (what :func:`answers_agree` compares).

    Wrappers (``\\boxed{}``, ``$...$``, bold, backticks) are removed, ``x = 3`` becomes
    ``3``, a number followed by up to three words of unit (``41 books``) becomes the number,
    and the rest is :func:`mstudy.text.normalize_answer`: numbers as exact fractions, words
    case-folded without punctuation or articles. Applying it twice changes nothing.
    """
    value = text
    for _ in range(8):  # each step may expose more to strip ("0:B" -> "0 b" -> "0")
        again = _canonical_step(value)
        if again == value:
            break
        value = again
    return value


def _canonical_step(text: str) -> str:
    value = text.strip().rstrip(".").strip()
    changed = True
    while changed and value:
        changed = False
        for pattern in _WRAPPERS:
            match = pattern.match(value)
            if match and match.group(1).strip() != value:
                value, changed = match.group(1).strip().rstrip(".").strip(), True
    if "=" in value and not value.endswith("="):
        value = value.rsplit("=", 1)[1].strip()
    match = _LEADING_NUMBER.match(value)
    if match and match.group(1).strip("$ "):
        value = match.group(1)
    return normalize_answer(value)


def answers_agree(got: str, gold: str) -> bool:
    """Whether two final answers agree after normalisation (numbers exactly, words loosely)."""
    if answers_match(got, gold):
        return True
    a, b = canonical_answer(got), canonical_answer(gold)
    return a != "" and a == b


def extract_code(text: str) -> str | None:
    """The Python program in a reply: its first fenced block, else the reply if it prints."""
    match = _FENCE.search(text)
    if match and match.group(1).strip():
        return match.group(1).strip("\n")
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
    if "print(" in stripped:
        return stripped
    return None


class _Gold:
    """Gold answers: on the example, in a mapping by source id, or in a file of rows."""

    def __init__(
        self,
        field: str,
        mapping: Mapping[str, Any] | None,
        path: str | None,
        id_field: str,
        answer_field: str,
    ) -> None:
        self.field, self.path = field, path
        self.id_field, self.answer_field = id_field, answer_field
        self._mapping: dict[str, str] | None = (
            {str(k): str(v) for k, v in mapping.items() if v is not None}
            if mapping is not None
            else None
        )

    def _load(self) -> dict[str, str]:
        from mstudy.sources import iter_source

        out: dict[str, str] = {}
        if self.path is not None:
            for item in iter_source(self.path, id_field=self.id_field):
                if isinstance(item, Record):
                    value = item.fields.get(self.answer_field)
                    if value is not None and str(value).strip():
                        out[item.id] = str(value)
        return out

    def get(self, example: Example) -> str | None:
        value = example.fields.get(self.field)
        if value is not None and str(value).strip():
            return str(value)
        if self._mapping is None:
            if self.path is None:
                return None
            self._mapping = self._load()
        return self._mapping.get(example.source_id)


def _check_missing(on_missing_gold: str, name: str) -> str:
    if on_missing_gold not in ("keep", "reject"):
        raise ValueError(
            f"{name}: on_missing_gold must be 'keep' or 'reject', got {on_missing_gold!r}"
        )
    return on_missing_gold


def _no_gold(stage: str, example: Example) -> Rejection:
    return example.reject(stage, "no gold answer", f"none for source {example.source_id!r}")


class AnswerCheck:
    """Keep solutions whose final answer matches the gold answer.

    The answer is the example's ``answer_field`` when set, otherwise the last "Final
    answer: X" (or ``\\boxed{X}``, ``#### X``, "the answer is X") in ``text_field``.
    Without a gold answer the example is kept or rejected by ``on_missing_gold``.
    """

    name = "answer_check"

    def __init__(
        self,
        *,
        strategies: Sequence[str] = ("cot",),
        answer_field: str = "answer",
        text_field: str = "text",
        gold_field: str = "gold",
        gold: Mapping[str, Any] | None = None,
        gold_path: str | None = None,
        gold_id_field: str = "id",
        gold_answer_field: str = "answer",
        on_missing_gold: str = "reject",
    ) -> None:
        self.strategies = tuple(strategies)
        self.answer_field, self.text_field = answer_field, text_field
        self.on_missing_gold = _check_missing(on_missing_gold, self.name)
        self._gold = _Gold(gold_field, gold, gold_path, gold_id_field, gold_answer_field)

    def __repr__(self) -> str:
        return (
            f"AnswerCheck(strategies={self.strategies!r}, on_missing_gold={self.on_missing_gold!r})"
        )

    @property
    def stage(self) -> str:
        return f"filter:{self.name}"

    def answer(self, example: Example) -> str | None:
        """The example's final answer, or None when it states none."""
        value = example.fields.get(self.answer_field)
        if value is not None and str(value).strip():
            return str(value).strip()
        text = example.fields.get(self.text_field)
        return extract_final_answer(text) if isinstance(text, str) else None

    def check(self, example: Example) -> Example | Rejection:
        if self.strategies and example.strategy not in self.strategies:
            return example
        got = self.answer(example)
        if got is None:
            text = str(example.fields.get(self.text_field, ""))
            return example.reject(self.stage, "no final answer", text[-120:])
        gold = self._gold.get(example)
        if gold is None:
            if self.on_missing_gold == "keep":
                return example
            return _no_gold(self.stage, example)
        if not answers_agree(got, gold):
            detail = f"got {got[:80]!r}, expected {gold[:80]!r}"
            return example.reject(self.stage, "wrong answer", detail)
        return example


@dataclass(frozen=True, slots=True)
class ProgramOutcome:
    """What running a program gave: its answer, or why there is none (``reason``)."""

    result: str | None
    reason: str | None = None
    detail: str = ""
    run: SandboxResult | None = None


_LIMIT_REASONS = {
    "timeout": "timeout",
    "cpu": "timeout",
    "memory": "memory limit",
    "output": "output limit",
    "file size": "file size limit",
    "isolation": "isolation unavailable",
}


def run_program(
    code: str | None,
    *,
    limits: SandboxLimits | None = None,
    require: Sequence[str] = (),
) -> ProgramOutcome:
    """Run a teacher's program in the sandbox; its answer is the last line it prints."""
    if code is None or not code.strip():
        return ProgramOutcome(None, "no code", "the reply holds no Python program")
    run = run_python(code, limits=limits, require=require)
    if run.limit is not None:
        return ProgramOutcome(None, _LIMIT_REASONS.get(run.limit, run.limit), run.error(), run)
    if run.returncode != 0:
        reason = "syntax error" if "SyntaxError" in run.stderr else "runtime error"
        return ProgramOutcome(None, reason, run.error(), run)
    answer = run.last_line
    if not answer:
        return ProgramOutcome(None, "no output", "the program printed nothing", run)
    return ProgramOutcome(answer, None, "", run)


class ProgramCheck:
    """Program of thought: run each example's program in the sandbox, keep right answers.

    The program is the example's ``code_field`` (default ``text``, where ``pot`` puts it),
    or the first fenced block in it. Its result (last printed line) goes to the ``answer``
    field of kept examples. Rejection reasons: ``no code``, ``syntax error``, ``runtime error``,
    ``timeout``, ``memory limit``, ``output limit``, ``file size limit``, ``no output``,
    ``no gold answer``, ``wrong answer``, ``isolation unavailable`` (a layer in ``require``
    is missing here). ``check_many`` runs up to ``workers`` programs at once.
    """

    name = "pot_check"

    def __init__(
        self,
        *,
        strategies: Sequence[str] = ("pot",),
        code_field: str = "text",
        gold_field: str = "gold",
        gold: Mapping[str, Any] | None = None,
        gold_path: str | None = None,
        gold_id_field: str = "id",
        gold_answer_field: str = "answer",
        on_missing_gold: str = "reject",
        timeout: float = 5.0,
        memory_mb: int = 256,
        max_output: int = 16_384,
        require: Sequence[str] = (),
        workers: int = 2,
    ) -> None:
        if workers < 1:
            raise ValueError(f"pot_check: workers must be >= 1, got {workers}")
        self.strategies = tuple(strategies)
        self.code_field = code_field
        self.on_missing_gold = _check_missing(on_missing_gold, self.name)
        self.limits = SandboxLimits(timeout=timeout, memory_mb=memory_mb, max_output=max_output)
        self.require = tuple(require)
        self.workers = workers
        self._gold = _Gold(gold_field, gold, gold_path, gold_id_field, gold_answer_field)

    def __repr__(self) -> str:
        return f"ProgramCheck(strategies={self.strategies!r}, limits={self.limits!r})"

    @property
    def stage(self) -> str:
        return f"filter:{self.name}"

    def code(self, example: Example) -> str | None:
        """The program: ``code_field`` as it is, or the first fenced block in it."""
        value = example.fields.get(self.code_field)
        if not isinstance(value, str) or not value.strip():
            return None
        return extract_code(value) if "```" in value else value

    def check(self, example: Example) -> Example | Rejection:
        return self.check_many([example])[0]

    def check_many(self, examples: Sequence[Example]) -> list[Example | Rejection]:
        """Verdicts in order; the programs run concurrently, each in its own sandbox."""
        todo = [
            i
            for i, e in enumerate(examples)
            if not self.strategies or e.strategy in self.strategies
        ]
        out: list[Example | Rejection] = list(examples)
        if not todo:
            return out
        golds = {i: self._gold.get(examples[i]) for i in todo}
        runnable = [i for i in todo if golds[i] is not None or self.on_missing_gold == "keep"]
        for i in todo:
            if i not in runnable:
                out[i] = _no_gold(self.stage, examples[i])
        codes = [self.code(examples[i]) for i in runnable]

        def run(code: str | None) -> ProgramOutcome:
            return run_program(code, limits=self.limits, require=self.require)

        if len(runnable) > 1 and self.workers > 1:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(runnable))) as pool:
                outcomes = list(pool.map(run, codes))
        else:
            outcomes = [run(c) for c in codes]
        for i, outcome in zip(runnable, outcomes, strict=True):
            out[i] = self._verdict(examples[i], outcome, golds[i])
        return out

    def _verdict(
        self, example: Example, outcome: ProgramOutcome, gold: str | None
    ) -> Example | Rejection:
        if outcome.reason is not None:
            return example.reject(self.stage, outcome.reason, outcome.detail)
        assert outcome.result is not None
        if gold is not None and not answers_agree(outcome.result, gold):
            detail = f"printed {outcome.result[:80]!r}, expected {gold[:80]!r}"
            return example.reject(self.stage, "wrong answer", detail)
        example.fields["answer"] = outcome.result
        return example
