"""Parsing: a completion becomes the Examples and Rejections of its request.

A strategy that raises on one reply (its own error, or a plugin's bug) rejects that reply at
stage ``parse``; the run goes on.

Every reply of a request whose params carry a response schema is validated against it here,
before its strategy sees it, whichever strategy and teacher: this is the one place schemas are
enforced, so a teacher that cannot constrain decoding (or a plugin strategy that forgets)
still yields only valid rows. A reply that is not JSON or violates the schema is rejected
with reason ``schema`` and the validation error as detail.
"""

from __future__ import annotations

import dataclasses
import logging
import re

from mstudy._schema import check_reply
from mstudy.errors import MstudyError
from mstudy.records import Completion, Example, Rejection

from .slots import Pending

log = logging.getLogger("mstudy")
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse(entry: Pending, completion: Completion) -> list[Example | Rejection]:
    """What ``entry``'s strategy makes of ``completion``."""
    strategy = entry.strategy
    schema = entry.request.params.response_schema
    if schema is not None and completion.ok:
        verdict = check_reply(schema, completion.text)
        if not verdict.ok:
            return [schema_rejection(entry, completion, verdict.problem or "")]
    try:
        return list(strategy.parse(entry.record, entry.request, completion))
    except MstudyError as exc:
        detail = str(exc)
    except Exception as exc:  # a plugin's bug must not sink the whole run unseen
        log.warning("strategy %r failed to parse a completion: %r", strategy.name, exc)
        detail = f"{type(exc).__name__}: {exc}"
    return [Rejection(entry.record.id, "parse", "parser error", detail, strategy.name)]


def schema_rejection(entry: Pending, completion: Completion, problem: str) -> Rejection:
    """The rejection of a reply that does not satisfy its request's response schema."""
    if completion.finish_reason == "length":
        limit = entry.request.params.max_new_tokens
        problem = f"{problem}; the reply was cut off at max_new_tokens={limit}"
    return Rejection(
        entry.record.id,
        "parse",
        "schema",
        problem,
        entry.strategy.name,
        None,
        {"reply": completion.text, "finish_reason": completion.finish_reason},
    )


def usable(completion: Completion) -> Completion:
    """``completion``, or a failed one when its text cannot be stored or written (a lone
    surrogate, which no UTF-8 file or cache can hold): that reply is rejected, the run goes
    on, and the call is not cached."""
    text = completion.text
    if text.isascii() or _SURROGATE.search(text) is None:
        return completion
    return dataclasses.replace(
        completion,
        text="",
        finish_reason="error",
        error="the reply holds a lone surrogate (not valid Unicode text)",
    )


def unanswered(entry: Pending) -> list[Example | Rejection]:
    """The rejection of a request the teacher returned nothing for."""
    return [
        Rejection(
            entry.request.source_id,
            "teacher",
            "no completion",
            "the teacher returned nothing for this request",
            entry.strategy.name,
        )
    ]
