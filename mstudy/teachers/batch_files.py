"""The OpenAI batch file format: requests out as JSON Lines, results back as completions.

One input line per request::

    {"custom_id": <request key>, "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": ..., "messages": [...], "max_tokens": ..., ...}}

The ``custom_id`` is the request's key, so results map back whatever order they come in.
The same files run through OpenAI's and other providers' batch APIs (see
:mod:`mstudy.teachers.batch`) and through vLLM's offline runner
(``python -m vllm.entrypoints.openai.run_batch -i in.jsonl -o out.jsonl --model ...``).

A result line carries ``custom_id`` and either ``response`` (``status_code`` and the chat
completion as ``body``) or ``error``. :func:`read_results` sorts each into an answer or a
failure that says whether asking again could help.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, NamedTuple

from mstudy.errors import RemoteCallError
from mstudy.records import Completion, FinishReason, Request
from mstudy.teachers.remote import (
    _LENGTH_REASONS,
    _STOP_REASONS,
    RETRY_STATUSES,
    _read_json_answer,
)

__all__ = [
    "BatchFailure",
    "BatchResult",
    "completion_for",
    "input_line",
    "read_results",
    "request_body",
    "write_input",
]

ENDPOINT = "/v1/chat/completions"

PrefillMode = Literal["continue", "assistant"]


def request_body(
    request: Request,
    model: str,
    *,
    prefill_mode: PrefillMode = "continue",
    extra_body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The chat-completions body of one request, as the streaming remote teacher sends it."""
    messages = request.chat()
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": request.params.max_new_tokens,
        "temperature": request.params.temperature,
        "top_p": request.params.top_p,
    }
    if request.seed is not None:
        body["seed"] = request.seed
    if request.params.stop:
        body["stop"] = list(request.params.stop)
    schema = request.params.schema()
    if schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": schema, "strict": True},
        }
    body.update(extra_body or {})
    if request.prefill is not None:
        messages.append({"role": "assistant", "content": request.prefill})
        if prefill_mode == "continue":
            body.update(continue_final_message=True, add_generation_prompt=False)
    return body


def input_line(request: Request, model: str, **options: Any) -> bytes:
    """One request as a line of a batch input file (newline included)."""
    line = {
        "custom_id": request.key,
        "method": "POST",
        "url": ENDPOINT,
        "body": request_body(request, model, **options),
    }
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def write_input(requests: Iterable[Request], path: Any, model: str, **options: Any) -> int:
    """Write a batch input file; returns the number of requests written."""
    count = 0
    with open(path, "wb") as out:
        for request in requests:
            out.write(input_line(request, model, **options))
            count += 1
    return count


class BatchResult(NamedTuple):
    """A request answered: the chat completion's body."""

    custom_id: str
    body: Mapping[str, Any]


class BatchFailure(NamedTuple):
    """A request not answered: why, and whether submitting it again could help."""

    custom_id: str
    reason: str
    retryable: bool


def read_results(lines: Iterable[bytes | str]) -> Iterator[BatchResult | BatchFailure]:
    """The answers and failures in an output or error file, line by line.

    Lines that are not JSON objects with a ``custom_id`` are skipped: without the id nothing
    can be mapped back, and the request they belonged to ends as missing (asked again).
    """
    for raw in lines:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            continue
        custom_id = line["custom_id"]
        response = line.get("response")
        error = line.get("error")
        status = response.get("status_code") if isinstance(response, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        if error is None and status == 200 and isinstance(body, dict):
            yield BatchResult(custom_id, body)
            continue
        yield _failure(custom_id, status, body, error)


def _failure(custom_id: str, status: object, body: object, error: object) -> BatchFailure:
    message = ""
    code = None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code = error.get("code")
    elif error is not None:
        message = str(error)
    if not message and isinstance(body, dict):
        detail = body.get("error")
        message = str(detail.get("message") if isinstance(detail, dict) else detail or "")
    if isinstance(status, int) and not isinstance(status, bool):
        retryable = status in RETRY_STATUSES
        reason = f"HTTP {status}" + (f": {message}" if message else "")
    else:
        # No status: the provider could not run it (expired, cancelled, an internal error).
        retryable = code not in ("invalid_request", "invalid_request_error", "validation_error")
        reason = str(code or "failed") + (f": {message}" if message else "")
    return BatchFailure(custom_id, " ".join(reason.split())[:300], retryable)


def completion_for(request: Request, result: BatchResult, teacher: str) -> Completion:
    """The completion a result stands for; an unreadable body gives an error completion."""
    try:
        answer = _read_json_answer(result.body)
    except RemoteCallError as exc:
        return Completion(
            key=request.key, text="", finish_reason="error", teacher=teacher, error=exc.reason
        )
    raw_reason = (answer.finish_reason or "stop").lower()
    finish: FinishReason = "stop"
    error = None
    if raw_reason in _LENGTH_REASONS:
        finish = "length"
    elif raw_reason not in _STOP_REASONS:
        finish, error = "error", f"finish_reason {raw_reason!r}"
    content = answer.content or ""
    prompt_chars = sum(len(m.content) for m in request.messages) + len(request.prefill or "")
    return Completion(
        key=request.key,
        text=(request.prefill or "") + content,
        finish_reason=finish,
        prompt_tokens=answer.prompt_tokens
        if answer.prompt_tokens is not None
        else math.ceil(prompt_chars / 4),
        completion_tokens=answer.completion_tokens
        if answer.completion_tokens is not None
        else math.ceil(len(content) / 4),
        teacher=teacher,
        error=error,
    )
