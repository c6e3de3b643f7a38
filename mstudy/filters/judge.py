"""``judge``: a teacher scores each example against a rubric; low scores are dropped.

The rubric is a jinja2 template rendered with the example's fields (plus ``strategy``,
``source_id``, ``scale`` and ``threshold``); the teacher replies ``Score: N`` and a short
reason. Examples scoring at least ``threshold`` are kept; every judged row (kept or
rejected) carries ``judge_score`` and ``judge_reason``. ``check_many`` sends a batch of
examples to the teacher at once (a local teacher batches them, a remote one keeps them in
flight together); ``check`` judges one. With a ``cache`` nothing is judged twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mstudy._templates import render
from mstudy.cache import CallCache
from mstudy.errors import MstudyError
from mstudy.filters._asking import ask
from mstudy.interfaces import Teacher
from mstudy.records import Completion, Example, GenerationParams, Message, Rejection, Request

__all__ = ["DEFAULT_RUBRIC", "DEFAULT_SYSTEM", "LLMJudge", "parse_score"]

DEFAULT_SYSTEM = (
    "You are a strict grader of training data for a student model. You read one example and "
    "rate it. You answer with a first line 'Score: <number>' and then one short sentence of "
    "reasons."
)
DEFAULT_RUBRIC = """\
Rate this training example from 1 (useless or wrong) to {{ scale }} (excellent).
A good example is correct, faithful to its source, self-contained and clearly written.
{% if input %}Source: {{ input }}
{% endif %}Example ({{ strategy }}): {{ text }}
{% if answer %}Stated answer: {{ answer }}
{% endif %}Reply with 'Score: <number>' on the first line, then one sentence of reasons."""

_SCORE = re.compile(r"\bscore\s*(?:is|of)?\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_LEADING = re.compile(r"^\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*\d+)?\b")


def parse_score(text: str) -> float | None:
    """The score in a judge's reply: ``Score: 8``, ``score = 7.5``, or a leading ``8/10``."""
    match = _SCORE.search(text) or _LEADING.match(text)
    return float(match.group(1)) if match else None


def _reason_of(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    rest = [line for line in lines if not _SCORE.search(line)] or lines
    return " ".join(rest)[:300]


class LLMJudge:
    """Keep examples a teacher scores at or above ``threshold`` on a rubric.

    Args:
        teacher: a Teacher object, a teacher plugin name, or a table ``{"name": ...,
            **params}`` (TOML). Built on first use.
        rubric: the user-message template (default :data:`DEFAULT_RUBRIC`).
        system: the system message (default :data:`DEFAULT_SYSTEM`; ``""`` for none).
        threshold: the lowest score kept.
        scale: the top of the scale; replies outside ``[0, scale]`` are unparseable.
        strategies: judge only these strategies' examples (default: all).
        score_field / reason_field: where the score and the reason go on the row.
        params: generation parameters (default: greedy, 96 new tokens).
        on_error: ``"reject"`` (default) or ``"keep"`` an example the teacher failed on or
            whose reply has no readable score.
        cache: a :class:`~mstudy.cache.CallCache` or a path to one.
    """

    name = "judge"
    version = "1"
    portable = False
    """It calls a teacher of its own: it stays in the study's process (never shipped to a
    teacher's workers, :class:`~mstudy.interfaces.Portable`)."""

    def __init__(
        self,
        *,
        teacher: Teacher | str | Mapping[str, Any] = "default",
        rubric: str | None = None,
        system: str | None = None,
        threshold: float = 7.0,
        scale: int = 10,
        strategies: Sequence[str] = (),
        score_field: str = "judge_score",
        reason_field: str = "judge_reason",
        params: GenerationParams | Mapping[str, Any] | None = None,
        on_error: str = "reject",
        cache: CallCache | str | Path | None = None,
    ) -> None:
        if scale < 1:
            raise ValueError(f"judge: scale must be >= 1, got {scale}")
        if not 0 <= threshold <= scale:
            raise ValueError(f"judge: threshold must be in [0, {scale}], got {threshold}")
        if on_error not in ("reject", "keep"):
            raise ValueError(f"judge: on_error must be 'reject' or 'keep', got {on_error!r}")
        self._teacher_spec = teacher
        self._teacher: Teacher | None = None
        if isinstance(teacher, (str, Mapping)):
            from mstudy import plugins

            name = teacher if isinstance(teacher, str) else teacher.get("name")
            if not isinstance(name, str):
                raise ValueError("judge: a teacher table needs a 'name'")
            try:
                plugins.find("teachers", name)
            except MstudyError as exc:
                raise ValueError(f"judge: {exc}") from exc
        else:
            self._teacher = teacher
        self.rubric = DEFAULT_RUBRIC if rubric is None else rubric
        self.system = DEFAULT_SYSTEM if system is None else (system or None)
        self.threshold, self.scale = float(threshold), scale
        self.strategies = tuple(strategies)
        self.score_field, self.reason_field = score_field, reason_field
        if isinstance(params, GenerationParams):
            self.params = params
        else:
            base = {"max_new_tokens": 96, "temperature": 0.0}
            self.params = GenerationParams.from_mapping({**base, **dict(params or {})})
        self.on_error = on_error
        self.cache = CallCache(cache) if isinstance(cache, (str, Path)) else cache

    def __repr__(self) -> str:
        return (
            f"LLMJudge(teacher={self._teacher_spec!r}, threshold={self.threshold}, "
            f"scale={self.scale}, strategies={self.strategies!r})"
        )

    @property
    def stage(self) -> str:
        return f"filter:{self.name}"

    @property
    def teacher(self) -> Teacher:
        """The judging teacher (built from its name on first use)."""
        if self._teacher is None:
            from mstudy import plugins

            spec = self._teacher_spec
            if isinstance(spec, Mapping):
                params = {k: v for k, v in spec.items() if k != "name"}
                built = plugins.create("teachers", str(spec["name"]), **params)
            else:
                built = plugins.create("teachers", str(spec))
            assert isinstance(built, Teacher)
            self._teacher = built
        return self._teacher

    def request(self, example: Example) -> Request:
        """The judging request for ``example``."""
        variables: dict[str, Any] = {"input": None, "text": None, "answer": None}
        variables.update(example.fields)
        variables.update(
            strategy=example.strategy,
            source_id=example.source_id,
            scale=self.scale,
            threshold=self.threshold,
        )
        messages = [Message("user", render(self.rubric, variables))]
        if self.system:
            messages.insert(0, Message("system", render(self.system, variables)))
        return Request(
            tuple(messages),
            self.params,
            source_id=example.source_id,
            strategy=self.name,
            strategy_version=self.version,
            variables=variables,
        )

    def check(self, example: Example) -> Example | Rejection:
        return self.check_many([example])[0]

    def check_many(self, examples: Sequence[Example]) -> list[Example | Rejection]:
        """Judge a batch in one pass through the teacher; verdicts in input order."""
        out: list[Example | Rejection] = list(examples)
        judged: list[tuple[int, Request]] = []
        for i, example in enumerate(examples):
            if self.strategies and example.strategy not in self.strategies:
                continue
            try:
                judged.append((i, self.request(example)))
            except MstudyError as exc:  # a rubric that does not render for this row
                out[i] = self._failed(example, "judge error", str(exc))
        if judged:
            replies = ask(self.teacher, (request for _, request in judged), self.cache)
            for i, request in judged:
                out[i] = self._verdict(examples[i], replies.get(request.key))
        return out

    def _failed(self, example: Example, reason: str, detail: str) -> Example | Rejection:
        example.fields[self.score_field] = None
        example.fields[self.reason_field] = detail[:300]
        if self.on_error == "keep":
            return example
        return example.reject(self.stage, reason, detail[:300])

    def _verdict(self, example: Example, reply: Completion | None) -> Example | Rejection:
        if reply is None:
            return self._failed(example, "judge error", "the teacher returned nothing")
        if not reply.ok:
            return self._failed(example, "judge error", reply.error or "teacher error")
        score = parse_score(reply.text)
        if score is None or not 0 <= score <= self.scale:
            return self._failed(example, "judge unparseable", reply.text[:200])
        example.fields[self.score_field] = score
        example.fields[self.reason_field] = _reason_of(reply.text)
        if score < self.threshold:
            detail = f"scored {score:g} < {self.threshold:g}: {_reason_of(reply.text)[:160]}"
            return example.reject(self.stage, "low judge score", detail)
        return example
