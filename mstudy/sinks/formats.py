"""Training formats: an mstudy row as the row a trainer reads.

Every row first becomes a :class:`Sample`: a conversation (an optional system message, then
user and assistant turns), its single-turn view (``instruction``, ``input``, ``output``) and
a ``passage`` (the text for continued pretraining). Where that comes from, first match wins:

1. a ``messages`` field (a list of ``{"role", "content"}``, ending with an assistant turn):
   the conversation as it is;
2. ``prompt`` and ``completion`` text fields: one user turn and the reply;
3. a strategy with an instruction (:data:`INSTRUCTIONS`, or the ``instructions`` given):
   the instruction, the row's ``input`` (the studied text) and its ``text`` (the teacher's
   output); the user turn is the instruction, a blank line, then the input. ``cot`` has no
   instruction: the question is the whole prompt;
4. any other row with ``input`` and ``text``: the input is the prompt, the text the reply.

The passage is the row's ``text`` (``statement`` when it has no ``text``); for ``cot`` and
``pot`` it is the question, a blank line, then the solution. A row that gives neither
(no text at all, or text without a prompt for a prompt-reply format) is skipped with a
reason (:class:`Skip`); sinks and ``mstudy export`` count those.

The formats (``FORMATS``):

- ``sft_messages``: TRL's conversational language-modeling format, ``{"messages": [...]}``.
- ``sft_prompt_completion``: TRL's prompt-completion format, ``{"prompt": str, "completion":
  str}`` (the system message, if any, opens the prompt), or with ``conversational=True``
  message lists (``prompt`` all turns but the last, ``completion`` the last).
- ``text``: ``{"text": passage}``, one statement or passage a row.
- ``alpaca``: ``{"instruction", "input", "output"}`` (plus ``system`` when there is one).
- ``sharegpt``: ``{"conversations": [{"from": "system"|"human"|"gpt", "value": ...}]}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FORMATS",
    "INSTRUCTIONS",
    "Sample",
    "Skip",
    "format_row",
    "sample_of",
]

INSTRUCTIONS: dict[str, str] = {
    "explain": "Explain the following.",
    "reverse": "State this fact the other way round.",
    "paraphrase": "Say this in other words.",
    "cot": "",
    "pot": "Write a Python program that computes the answer to this problem.",
    "connect": "Say how this fact relates to other facts you know.",
    "facts": "State one fact that this passage gives.",
}
"""The instruction each built-in strategy's rows are given (``""``: the input alone)."""
_PROBLEMS = frozenset({"cot", "pot"})
"""Strategies whose passage is the problem and its solution."""


@dataclass(frozen=True, slots=True)
class Skip:
    """Why a row has no place in a format: a stable ``reason`` and the row's ``id``."""

    reason: str
    row_id: str | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """A row in the shapes the formats need."""

    messages: tuple[tuple[str, str], ...]
    """``(role, content)`` turns; a system message first if any; the last is the reply."""
    instruction: str
    input: str
    output: str
    passage: str

    @property
    def system(self) -> str | None:
        return self.messages[0][1] if self.messages and self.messages[0][0] == "system" else None


def _text(row: Mapping[str, Any], name: str) -> str | None:
    value = row.get(name)
    return value if isinstance(value, str) and value.strip() else None


def _conversation(value: object) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(value, list) or not value:
        return None
    turns = []
    for message in value:
        if not isinstance(message, Mapping):
            return None
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            return None
        turns.append((str(role), content))
    if turns[-1][0] != "assistant" or not any(r == "user" for r, _ in turns):
        return None
    return tuple(turns)


def sample_of(
    row: Mapping[str, Any], instructions: Mapping[str, str], system: str | None = None
) -> Sample | Skip:
    """The :class:`Sample` of an mstudy row (see the module docstring), or why there is none."""
    row_id = row.get("id")
    row_id = None if row_id is None else str(row_id)
    strategy = row.get("strategy")
    strategy = strategy if isinstance(strategy, str) else ""
    text = _text(row, "text") or _text(row, "statement")
    source = _text(row, "input")
    passage = text
    if passage is not None and strategy in _PROBLEMS and source is not None:
        passage = f"{source}\n\n{passage}"
    head: tuple[tuple[str, str], ...] = (("system", system),) if system else ()

    conversation = _conversation(row.get("messages"))
    if conversation is not None:
        if system and conversation[0][0] != "system":
            conversation = head + conversation
        users = [c for r, c in conversation if r == "user"]
        reply = conversation[-1][1]
        return Sample(conversation, users[-1], "", reply, passage or reply)
    prompt, completion = _text(row, "prompt"), _text(row, "completion")
    if prompt is not None and completion is not None:
        turns = (*head, ("user", prompt), ("assistant", completion))
        return Sample(turns, prompt, "", completion, passage or completion)
    if text is None:
        return Skip("no_text", row_id)
    assert passage is not None
    if source is None:  # text without a prompt: fit for ``text`` alone (no conversation)
        return Sample((), "", "", "", passage)
    instruction = instructions.get(strategy, instructions.get("*", ""))
    source_input = source if instruction else ""
    instruction = instruction or source
    user = f"{instruction}\n\n{source_input}" if source_input else instruction
    turns = (*head, ("user", user), ("assistant", text))
    return Sample(turns, instruction, source_input, text, passage)


# -- the formats ------------------------------------------------------------------------------


def _messages(sample: Sample, conversational: bool) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in sample.messages]}


def _prompt_completion(sample: Sample, conversational: bool) -> dict[str, Any]:
    *prompt, (_, completion) = sample.messages
    if conversational:
        return {
            "prompt": [{"role": r, "content": c} for r, c in prompt],
            "completion": [{"role": "assistant", "content": completion}],
        }
    if any(role == "assistant" for role, _ in prompt):
        raise _Unfit("multi_turn")  # several exchanges do not fit one prompt string
    return {"prompt": "\n\n".join(c for _, c in prompt), "completion": completion}


def _text_format(sample: Sample, conversational: bool) -> dict[str, Any]:
    return {"text": sample.passage}


def _alpaca(sample: Sample, conversational: bool) -> dict[str, Any]:
    if sum(role == "assistant" for role, _ in sample.messages) > 1:
        raise _Unfit("multi_turn")
    out = {"instruction": sample.instruction, "input": sample.input, "output": sample.output}
    if sample.system is not None:
        out["system"] = sample.system
    return out


_SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def _sharegpt(sample: Sample, conversational: bool) -> dict[str, Any]:
    return {"conversations": [{"from": _SHAREGPT_ROLES[r], "value": c} for r, c in sample.messages]}


class _Unfit(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


FORMATS: dict[str, Callable[[Sample, bool], dict[str, Any]]] = {
    "sft_messages": _messages,
    "sft_prompt_completion": _prompt_completion,
    "text": _text_format,
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
}
"""Each format's name and the function that writes a :class:`Sample` in it."""
_NEEDS_REPLY = frozenset(FORMATS) - {"text"}


def format_row(
    row: Mapping[str, Any],
    fmt: str,
    *,
    instructions: Mapping[str, str] | None = None,
    system: str | None = None,
    conversational: bool = False,
    keep: tuple[str, ...] = (),
) -> dict[str, Any] | Skip:
    """``row`` in format ``fmt`` (plus the ``keep`` fields of the row), or a :class:`Skip`.

    ``instructions`` add to or replace :data:`INSTRUCTIONS` (``"*"``: for other strategies).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown training format {fmt!r}; formats: {', '.join(FORMATS)}")
    table = {**INSTRUCTIONS, **(instructions or {})}
    sample = sample_of(row, table, system)
    if isinstance(sample, Skip):
        return sample
    if fmt in _NEEDS_REPLY and not sample.messages:
        return Skip("no_prompt", None if row.get("id") is None else str(row.get("id")))
    try:
        out = FORMATS[fmt](sample, conversational)
    except _Unfit as unfit:
        return Skip(unfit.reason, None if row.get("id") is None else str(row.get("id")))
    for name in keep:
        if name in row and name not in out:
            out[name] = row[name]
    return out
