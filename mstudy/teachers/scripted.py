"""``scripted``: a deterministic teacher for tests, dry runs and rule-based enrichment.

It answers each request from a function, from a jinja2 template per strategy (rendered with
the request's variables), or by echoing the last user message. It is not a model: use it to
exercise a study's logic, never to claim a backend works.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache

from mstudy._hashing import stable_hash
from mstudy._templates import render
from mstudy.records import Completion, Message, Request

Reply = str | tuple[str, str]
"""A reply: its text, or ``(text, finish_reason)``."""
ReplyFunction = Callable[[Request], Reply]


class ScriptedTeacher:
    """A teacher whose replies are scripted.

    ``reply`` may be:
      * a function ``request -> text`` (or ``(text, finish_reason)``); an exception it raises
        becomes an error completion for that request;
      * a mapping from strategy name (``"*"`` for any other) to a jinja2 template rendered
        with the request's variables plus ``sample``;
      * a single template string for every request;
      * ``None``: echo the last user message.

    The reply starts with the request's prefill (added when missing), is cut at the first stop
    string, and at ``max_new_tokens`` whitespace tokens (``finish_reason="length"``). Token
    counts are whitespace tokens.

    It cannot constrain a reply to a request's response schema and does not declare
    :class:`~mstudy.interfaces.SchemaConstrained`: the parse step validates its replies as
    any teacher's, so a script that writes the wrong JSON exercises the ``schema`` rejection.
    """

    name = "scripted"

    def __init__(
        self,
        reply: ReplyFunction | Mapping[str, str] | str | None = None,
        *,
        fingerprint: str | None = None,
    ) -> None:
        self._reply = reply
        self._fingerprint = fingerprint or self._default_fingerprint(reply)
        self.calls = 0

    @staticmethod
    def _default_fingerprint(reply: ReplyFunction | Mapping[str, str] | str | None) -> str:
        if callable(reply):
            try:
                source = inspect.getsource(reply)
            except (OSError, TypeError):
                source = getattr(reply, "__qualname__", repr(type(reply)))
            return stable_hash(["scripted", "function", source])
        if isinstance(reply, Mapping):
            return stable_hash(["scripted", "templates", dict(reply)])
        return stable_hash(["scripted", "template", reply])

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def __repr__(self) -> str:
        kind = "function" if callable(self._reply) else type(self._reply).__name__
        return f"ScriptedTeacher({kind}, fingerprint={self._fingerprint!r})"

    def _text(self, request: Request) -> Reply:
        reply = self._reply
        if callable(reply):
            return reply(request)
        variables = {**request.variables, "sample": request.sample}
        if isinstance(reply, Mapping):
            template = reply.get(request.strategy, reply.get("*"))
            if template is None:
                raise KeyError(f"no scripted reply for strategy {request.strategy!r}")
            return render(template, variables)
        if isinstance(reply, str):
            return render(reply, variables)
        users = [m.content for m in request.messages if m.role == "user"]
        return users[-1] if users else ""

    def complete(self, request: Request) -> Completion:
        """The scripted completion of one request."""
        self.calls += 1
        prompt_tokens = _words_before_last(request.messages[:-1]) + sum(
            len(m.content.split()) for m in request.messages[-1:]
        )
        try:
            result = self._text(request)
        except Exception as exc:  # a scripted failure stands for a failed call
            return Completion(
                request.key,
                "",
                "error",
                prompt_tokens,
                0,
                self._fingerprint,
                error=f"{type(exc).__name__}: {exc}",
            )
        text, finish = (result, "stop") if isinstance(result, str) else result
        prefill = request.prefill or ""
        if prefill and not text.startswith(prefill):
            text = prefill + text
        body = text[len(prefill) :]
        for stop in request.params.stop:
            cut = body.find(stop)
            if cut >= 0:
                body = body[:cut]
        completion_tokens = len(body.split())
        if completion_tokens > request.params.max_new_tokens:
            words = body.split(" ")
            body, finish = " ".join(words[: request.params.max_new_tokens]), "length"
            completion_tokens = len(body.split())
        return Completion(
            key=request.key,
            text=prefill + body,
            finish_reason="length"
            if finish == "length"
            else ("error" if finish == "error" else "stop"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            teacher=self._fingerprint,
        )

    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        """Answer requests one at a time, in order."""
        for request in requests:
            yield self.complete(request)


@lru_cache(maxsize=64)
def _words_before_last(messages: tuple[Message, ...]) -> int:
    """Words (the scripted teacher's tokens) in the turns before the last: the system and
    few-shot turns, which every request of a strategy repeats."""
    return sum(len(m.content.split()) for m in messages)


__all__ = ["ScriptedTeacher"]
