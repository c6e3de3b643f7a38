"""Token counters for chunking: a tokenizer, a teacher's, or a stated approximation.

:func:`token_counter` turns what a user gives into a :class:`Counter`:

- ``None``: the approximation, one token per 4 bytes of UTF-8, rounded up. English text
  averages ~4 characters a token in BPE vocabularies; text in non-Latin scripts takes 2-4
  bytes a character, which keeps the estimate from undercounting it badly.
- a teacher that declares :class:`~mstudy.interfaces.TokenCounter` (the local
  ``transformers`` teacher): its tokenizer, through ``count_prompt_tokens`` of a one-message
  request less that of an empty one (the chat template's own tokens).
- a ``transformers`` tokenizer (anything with ``encode``), or a model name or folder
  (``str``) whose tokenizer ``AutoTokenizer`` loads when the first document is chunked.
- a function ``text -> int``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from mstudy.errors import ConfigError
from mstudy.interfaces import TokenCounter
from mstudy.records import Message, Request

__all__ = ["APPROXIMATION", "Counter", "approx_tokens", "token_counter"]

APPROXIMATION = "approximate: 1 token per 4 bytes of UTF-8"


def approx_tokens(text: str) -> int:
    """Tokens of ``text`` by the approximation: UTF-8 bytes / 4, rounded up."""
    return (len(text.encode("utf-8", "surrogatepass")) + 3) // 4


@runtime_checkable
class _Encoder(Protocol):
    """A ``transformers``-style tokenizer."""

    def encode(self, text: str, *args: Any, **kwargs: Any) -> Any: ...


class Counter:
    """Counts tokens of texts; ``name`` says how (for reports and fingerprints)."""

    def __init__(self, name: str, count_many: Callable[[Sequence[str]], list[int]]) -> None:
        self.name = name
        self._count_many = count_many

    def __call__(self, texts: Sequence[str]) -> list[int]:
        return self._count_many(texts) if texts else []

    def __repr__(self) -> str:
        return f"Counter({self.name!r})"


def _approx_many(texts: Sequence[str]) -> list[int]:
    return [approx_tokens(t) for t in texts]


def _teacher_counter(teacher: TokenCounter) -> Counter:
    def request(text: str) -> Request:
        return Request(messages=(Message("user", text),))

    overhead: list[int] = []

    def count_many(texts: Sequence[str]) -> list[int]:
        if not overhead:
            overhead.append(teacher.count_prompt_tokens(request("")))
        return [max(0, teacher.count_prompt_tokens(request(t)) - overhead[0]) for t in texts]

    name = getattr(teacher, "name", type(teacher).__name__)
    return Counter(f"the {name} teacher's tokenizer", count_many)


def _tokenizer_counter(tokenizer: Any, label: str) -> Counter:
    def count_many(texts: Sequence[str]) -> list[int]:
        if callable(tokenizer):  # transformers: one call for the batch
            ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
            return [len(i) for i in ids]
        return [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]

    return Counter(label, count_many)


def _named_tokenizer_counter(name: str) -> Counter:
    loaded: list[Any] = []

    def count_many(texts: Sequence[str]) -> list[int]:
        if not loaded:
            from mstudy.sinks.base import import_optional

            transformers = import_optional("transformers", "local", f"the tokenizer {name!r}")
            try:
                loaded.append(transformers.AutoTokenizer.from_pretrained(name))
            except Exception as exc:
                raise ConfigError(
                    f"cannot load the tokenizer {name!r}: {exc}", parameter="tokenizer"
                ) from exc
        return _tokenizer_counter(loaded[0], name)(texts)

    return Counter(f"the tokenizer {name}", count_many)


def _function_counter(function: Callable[[str], int]) -> Counter:
    def count_many(texts: Sequence[str]) -> list[int]:
        counts = []
        for text in texts:
            value = function(text)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(
                    f"the tokenizer function returned {value!r} for a text; it must return "
                    "a token count (an integer >= 0)",
                    parameter="tokenizer",
                )
            counts.append(value)
        return counts

    return Counter(getattr(function, "__name__", "a function"), count_many)


def token_counter(tokenizer: object = None) -> Counter:
    """The :class:`Counter` for ``tokenizer`` (see the module docstring for what it takes)."""
    if tokenizer is None:
        return Counter(APPROXIMATION, _approx_many)
    if isinstance(tokenizer, Counter):
        return tokenizer
    if isinstance(tokenizer, TokenCounter):
        return _teacher_counter(tokenizer)
    if isinstance(tokenizer, (str, os.PathLike)):
        return _named_tokenizer_counter(os.fspath(tokenizer))
    if isinstance(tokenizer, _Encoder):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        return _tokenizer_counter(tokenizer, f"the tokenizer {name}")
    if callable(tokenizer):
        return _function_counter(tokenizer)
    raise ConfigError(
        f"tokenizer must be None (the approximation), a teacher with a tokenizer, a "
        f"transformers tokenizer, a tokenizer name or folder, or a function text -> int; got "
        f"{type(tokenizer).__name__}",
        parameter="tokenizer",
    )
