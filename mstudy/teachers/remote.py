"""A teacher behind an OpenAI-compatible chat API: vLLM, TGI, SGLang, HF Inference Providers.

The client keeps a window of ``concurrency`` requests in flight and refills it as each one
returns, so a server with continuous batching stays busy; a slow request holds one slot, not
the whole batch. ``generate`` is a plain (sync) iterator: the HTTP work runs on an asyncio loop
in a background thread of the teacher's own, so it works the same in scripts and in notebooks
whose event loop is already running. Requests are pulled from the caller's iterable in the
caller's thread, a bounded number ahead.

Failures: 408/429/500/502/503/504/529, connection errors, timeouts and unreadable answers
(bad JSON, no choices) are retried with exponential backoff and full jitter, honouring
``Retry-After`` (which also pauses every other request: the server is saturated). Other
statuses (400, 401, 404, ...) are not retried. A request that fails for good yields a
``Completion`` with ``finish_reason="error"`` and the reason. When the server looks down (it
was never reached, or ``max_consecutive_failures`` requests in a row failed for good on
connection errors, timeouts, 401, 403, 404 or an unexpected error), ``generate`` raises
:class:`~mstudy.errors.TeacherError` instead of turning a whole run into error rows. A request
that failed for good in one of those ways is held back until the server answers another
request (then it is yielded with its error): when the breaker trips first it is never yielded,
so an outage does not turn the requests caught in it into rejections, and a resumed run asks
them again. Answers that arrived before the breaker tripped are yielded before it raises.

The API key is held in a wrapper whose ``repr`` is ``***``; it is sent in the
``Authorization`` header and masked in every message this module writes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import math
import os
import queue
import random
import threading
import time
import urllib.request
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from mstudy.errors import ConfigError, TeacherError
from mstudy.hashing import stable_hash
from mstudy.records import Completion, FinishReason, Request
from mstudy.teachers.ratelimit import RateLimiter

__all__ = ["RemoteTeacher"]

logger = logging.getLogger(__name__)

PrefillMode = Literal["continue", "assistant"]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
# Statuses that say "this server/model/key cannot serve us", not "this request is wrong".
_TEACHER_WIDE_STATUSES = frozenset({401, 403, 404})
_MAX_RETRY_AFTER = 300.0
_STOP_REASONS = frozenset({"stop", "eos", "eos_token", "stop_sequence", "end_turn", "tool_calls"})
_LENGTH_REASONS = frozenset({"length", "max_tokens", "model_length"})


class _Secret:
    """A string that never shows itself in ``repr``/``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("an API key is not pickled; pass it again where the teacher is rebuilt")


FailureKind = Literal["unreachable", "timeout", "http", "response", "other"]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What became of one request: its completion, or why the whole teacher must stop.

    ``suspect``: it failed for good in a way that may mean the server is down (connection
    error, timeout, 401/403/404, unexpected error), so it waits for proof of the contrary.
    ``down``: the circuit breaker tripped on it; the TeacherError message.
    """

    completion: Completion
    suspect: bool = False
    down: str | None = None


_Future = concurrent.futures.Future[_Outcome]


class _Failure(Exception):
    """One failed attempt, classified.

    ``kind``: ``unreachable`` (no connection), ``timeout``, ``http`` (an error status),
    ``response`` (an answer that cannot be read), ``other`` (anything else; not retried).
    """

    def __init__(
        self,
        reason: str,
        retryable: bool,
        kind: FailureKind,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.kind = kind
        self.status = status
        self.retry_after = retry_after


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _estimate_tokens(text: str) -> int:
    """Rough token count (4 characters a token) for servers that report no usage."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _clean_url(url: str) -> str:
    """``url`` without credentials, query or fragment, and without a trailing slash."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme.lower(), host.lower(), parts.path.rstrip("/"), "", ""))


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def _stop_loop(loop: asyncio.AbstractEventLoop) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


class RemoteTeacher:
    """Teacher backed by an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        model: model name sent with every request (vLLM's ``--served-model-name``, an HF model
            id for Inference Providers). With ``base_url`` and no model, the server's only
            model from ``GET /models`` is used.
        base_url: a self-hosted server, e.g. ``http://127.0.0.1:8000/v1``.
        provider: an HF Inference Provider (``"together"``, ``"auto"``, ...) when there is no
            ``base_url``.
        api_key: the key; otherwise read from the environment variable ``api_key_env``, by
            default ``MSTUDY_API_KEY``, then ``OPENAI_API_KEY`` (``base_url``) or ``HF_TOKEN``
            (providers, which also fall back to the saved ``hf auth login`` token). A
            self-hosted server never gets the saved HF token implicitly.
        concurrency: requests in flight at most; the window is refilled as each returns.
        timeout: seconds per attempt.
        max_retries: retries after the first attempt for retryable failures.
        backoff_base, backoff_max: exponential backoff with full jitter:
            ``uniform(0, min(backoff_max, backoff_base * 2**attempt))``.
        requests_per_minute, tokens_per_minute: optional client-side limits (token buckets;
            tokens are estimated before the call and settled with the reported usage).
        extra_body: extra JSON fields sent with every request (``top_k``, ...).
        prefill_mode: how a request's prefill is sent. ``"continue"`` (vLLM, SGLang): as a
            trailing assistant message with ``continue_final_message=True`` and
            ``add_generation_prompt=False``. ``"assistant"``: the trailing assistant message
            only, for servers that continue it by themselves. Either way the completion text
            starts with the prefill.
        max_consecutive_failures: requests in a row that fail for good on connection errors,
            timeouts, 401, 403, 404 or unexpected errors before ``generate`` gives up with a
            ``TeacherError`` (at once when the server was never reached).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        provider: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        prefill_mode: PrefillMode = "continue",
        max_consecutive_failures: int = 3,
    ) -> None:
        if base_url is not None and provider is not None:
            raise ConfigError("RemoteTeacher takes base_url= or provider=, not both")
        if base_url is None and model is None:
            raise ConfigError(
                "RemoteTeacher needs model= (an HF model id for Inference Providers) or "
                "base_url= (a self-hosted OpenAI-compatible server)"
            )
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        for label, value in (
            ("concurrency", concurrency),
            ("max_consecutive_failures", max_consecutive_failures),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be an integer >= 1, got {value!r}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if not timeout > 0:
            raise ConfigError(f"timeout must be > 0, got {timeout}")
        if backoff_base < 0 or backoff_max < 0:
            raise ConfigError("backoff_base and backoff_max must be >= 0")
        for label, rate in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
        ):
            if rate is not None and not rate > 0:
                raise ConfigError(f"{label} must be > 0, got {rate}")
        if prefill_mode not in ("continue", "assistant"):
            raise ConfigError(
                f"prefill_mode must be 'continue' or 'assistant', got {prefill_mode!r}"
            )
        try:
            import huggingface_hub  # noqa: F401  (checked now, used on the loop thread)
        except ImportError as exc:  # pragma: no cover - a dependency of mstudy
            raise TeacherError(
                "RemoteTeacher needs huggingface_hub: pip install huggingface-hub"
            ) from exc

        self.model = model
        self.base_url = base_url.rstrip("/") if base_url is not None else None
        self.provider = provider
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.extra_body = dict(extra_body or {})
        self.prefill_mode: PrefillMode = prefill_mode
        self.max_consecutive_failures = max_consecutive_failures
        self._api_key = self._resolve_key(api_key, api_key_env)

        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None
        self._limiter: RateLimiter | None = None
        self._cooldown_until = 0.0
        self._consecutive_failures = 0
        self._reached = False  # got any HTTP answer from the server
        self._fingerprint: str | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- identity -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return "remote"

    @property
    def fingerprint(self) -> str:
        """Hash of endpoint, model, prompt format and extra body; never the key."""
        if self._fingerprint is None:
            model = self._model_name()
            self._fingerprint = stable_hash(
                {
                    "teacher": "remote",
                    "endpoint": _clean_url(self.base_url) if self.base_url else None,
                    "provider": None if self.base_url else (self.provider or "auto"),
                    "model": model,
                    "prefill_mode": self.prefill_mode,
                    "extra_body": self.extra_body,
                }
            )
        return self._fingerprint

    def __repr__(self) -> str:
        where = f"base_url={self.base_url!r}" if self.base_url else f"provider={self.provider!r}"
        key = "'***'" if self._api_key is not None else "None"
        return (
            f"RemoteTeacher(model={self.model!r}, {where}, concurrency={self.concurrency}, "
            f"api_key={key})"
        )

    # -- configuration helpers ------------------------------------------------------------
    def _resolve_key(self, api_key: str | None, api_key_env: str | None) -> _Secret | None:
        if api_key is not None:
            return _Secret(api_key) if api_key else None
        if api_key_env is not None:
            names = [api_key_env]
        elif self.base_url is not None:
            names = ["MSTUDY_API_KEY", "OPENAI_API_KEY"]
        else:
            names = ["MSTUDY_API_KEY", "HF_TOKEN"]
        for env_name in names:
            value = os.environ.get(env_name)
            if value:
                return _Secret(value)
        return None

    def _redact(self, text: str) -> str:
        key = self._api_key.get() if self._api_key is not None else ""
        return text.replace(key, "***") if len(key) >= 4 else text

    def _model_name(self) -> str | None:
        """The model to name in requests; asks a self-hosted server when none was given."""
        if self.model is not None or self.base_url is None:
            return self.model
        headers = {"Authorization": f"Bearer {self._api_key.get()}"} if self._api_key else {}
        listing = urllib.request.Request(f"{self.base_url}/models", headers=headers)
        try:
            with urllib.request.urlopen(listing, timeout=self.timeout) as response:
                ids = [str(m["id"]) for m in json.loads(response.read())["data"]]
        except Exception as exc:
            raise TeacherError(
                f"RemoteTeacher: no model= given and {self.base_url}/models could not be read "
                f"({type(exc).__name__}: {self._redact(str(exc))}); pass model="
            ) from None
        if len(ids) != 1:
            raise TeacherError(
                f"RemoteTeacher: no model= given and {self.base_url} serves "
                f"{len(ids)} models ({', '.join(ids) or 'none'}); pass model="
            )
        self.model = ids[0]
        return self.model

    # -- lifecycle ----------------------------------------------------------------------
    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._model_name()
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_run_loop, args=(loop,), name="mstudy-remote-teacher", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
                self._finalizer = weakref.finalize(self, _stop_loop, loop)
                asyncio.run_coroutine_threadsafe(self._start_async(), loop).result()
            return self._loop

    async def _start_async(self) -> None:
        from huggingface_hub import AsyncInferenceClient

        key = self._api_key.get() if self._api_key is not None else None
        if self.base_url is not None:
            # An ``authorization: None`` header stops huggingface_hub from sending the saved HF
            # token to a server that is not Hugging Face's.
            headers: dict[str, Any] = {} if key else {"authorization": None}
            self._client = AsyncInferenceClient(
                base_url=self.base_url, api_key=key, timeout=self.timeout, headers=headers
            )
            await self._use_own_http_client(self._client)
        else:
            self._client = AsyncInferenceClient(
                provider=self.provider,  # type: ignore[arg-type]
                api_key=key,
                timeout=self.timeout,
            )
        self._semaphore = asyncio.Semaphore(self.concurrency)
        self._limiter = RateLimiter(self.requests_per_minute, self.tokens_per_minute)

    async def _use_own_http_client(self, client: Any) -> None:
        """Give a self-hosted endpoint a connection pool sized to the window.

        huggingface_hub's default async client refuses every request when ``HF_HUB_OFFLINE``
        is set, which is meant for the Hub, not for a server on this machine, and pools at
        most 100 connections. Falls back to the default quietly where its internals differ.
        """
        if getattr(client, "_async_client", "missing") is not None:
            return
        try:
            import httpx2

            session = httpx2.AsyncClient(
                limits=httpx2.Limits(
                    max_connections=self.concurrency,
                    max_keepalive_connections=self.concurrency,
                ),
                follow_redirects=True,
                timeout=self.timeout,
            )
            client._async_client = await client.exit_stack.enter_async_context(session)
        except Exception:  # pragma: no cover - other huggingface_hub versions
            logger.debug("keeping huggingface_hub's default HTTP client", exc_info=True)

    def close(self) -> None:
        """Close connections and stop the background loop; the teacher may be used again."""
        with self._lock:
            loop, thread, client = self._loop, self._thread, self._client
            self._loop = self._thread = self._client = None
            self._semaphore = None
            self._limiter = None
        if loop is None:
            return
        if client is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
            except Exception:  # pragma: no cover - best effort
                logger.debug("closing the HTTP client failed", exc_info=True)
        if self._finalizer is not None:
            self._finalizer.detach()
        _stop_loop(loop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()

    def __enter__(self) -> RemoteTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generation ---------------------------------------------------------------------
    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        """Yield one completion per request, as they finish (any order; each has its key).

        Pulls requests lazily (at most ``2 * concurrency`` ahead of what was yielded) and keeps
        ``concurrency`` in flight. Raises TeacherError when the server looks down; requests
        that failed for good on what looked like an outage are then not yielded at all (see
        the module docstring), while answers already received are.
        """
        loop = self._ensure_started()
        source = iter(requests)
        done: queue.SimpleQueue[_Future] = queue.SimpleQueue()
        pending: set[_Future] = set()
        held: list[Completion] = []  # suspect failures, until the server answers again
        ahead = 2 * self.concurrency
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < ahead:
                    try:
                        request = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    future = asyncio.run_coroutine_threadsafe(self._complete(request), loop)
                    pending.add(future)
                    future.add_done_callback(done.put)
                if not pending:
                    yield from held  # too few in a row to call the server down
                    return
                future = self._next_done(done)
                pending.discard(future)
                outcome = future.result()
                if outcome.down is not None:
                    yield from self._already_answered(done, pending)
                    raise TeacherError(outcome.down)
                if outcome.suspect:
                    held.append(outcome.completion)
                    continue
                released, held = held, []
                yield from released
                yield outcome.completion
        finally:
            for future in pending:
                future.cancel()

    @staticmethod
    def _already_answered(
        done: queue.SimpleQueue[_Future], pending: set[_Future]
    ) -> Iterator[Completion]:
        """Completions that are back already and not suspect (the run keeps what it paid for)."""
        while True:
            try:
                future = done.get_nowait()
            except queue.Empty:
                return
            pending.discard(future)
            if future.cancelled() or future.exception() is not None:
                continue
            outcome = future.result()
            if outcome.down is None and not outcome.suspect:
                yield outcome.completion

    def _next_done(self, done: queue.SimpleQueue[_Future]) -> _Future:
        while True:
            try:
                return done.get(timeout=1.0)
            except queue.Empty:
                thread = self._thread
                if thread is None or not thread.is_alive():
                    raise TeacherError("RemoteTeacher: the background loop stopped") from None

    async def _complete(self, request: Request) -> _Outcome:
        """All attempts for one request; never raises (but for cancellation)."""
        assert self._semaphore is not None and self._limiter is not None
        messages = request.chat()
        body = dict(self.extra_body)
        if request.prefill is not None:
            messages.append({"role": "assistant", "content": request.prefill})
            if self.prefill_mode == "continue":
                body.update(continue_final_message=True, add_generation_prompt=False)
        prompt_chars = sum(len(m["content"]) for m in messages)
        estimate = math.ceil(prompt_chars / 4) + request.params.max_new_tokens
        failure: _Failure | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff(attempt))
            await self._wait_cooldown()
            async with self._semaphore:
                await self._wait_cooldown()
                await self._limiter.acquire(estimate)
                try:
                    output = await asyncio.wait_for(
                        self._client.chat_completion(
                            messages,
                            model=self.model,
                            max_tokens=request.params.max_new_tokens,
                            temperature=request.params.temperature,
                            top_p=request.params.top_p,
                            seed=request.seed,
                            stop=list(request.params.stop) or None,
                            extra_body=body or None,
                        ),
                        timeout=self.timeout,
                    )
                    completion = self._to_completion(request, output, prompt_chars)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # classified below; nothing escapes for one request
                    failure = self._classify(exc)
                else:
                    self._reached = True
                    self._consecutive_failures = 0
                    self._limiter.settle(
                        estimate, completion.prompt_tokens + completion.completion_tokens
                    )
                    return _Outcome(completion)
            if failure.status is not None or failure.kind == "response":
                self._reached = True
            if failure.retry_after is not None:
                self._cooldown_until = max(
                    self._cooldown_until, time.monotonic() + failure.retry_after
                )
            if not failure.retryable:
                break
            logger.info(
                "remote teacher: attempt %d/%d failed (%s)%s",
                attempt + 1,
                self.max_retries + 1,
                failure.reason,
                "; retrying" if attempt < self.max_retries else "",
            )
        assert failure is not None
        completion = Completion(
            key=request.key,
            text="",
            finish_reason="error",
            teacher=self.fingerprint,
            error=failure.reason,
        )
        suspect, down = self._note_final_failure(failure)
        if down is None:
            logger.warning("remote teacher: request %s failed: %s", request.key, failure.reason)
        return _Outcome(completion, suspect, down)

    def _note_final_failure(self, failure: _Failure) -> tuple[bool, str | None]:
        """The circuit breaker: (whether the failure is teacher-wide, the message if down)."""
        teacher_wide = (
            failure.kind in ("unreachable", "timeout", "other")
            or failure.status in _TEACHER_WIDE_STATUSES
        )
        if not teacher_wide:
            self._consecutive_failures = 0
            return False, None
        self._consecutive_failures += 1
        never = failure.kind == "unreachable" and not self._reached
        if never or self._consecutive_failures >= self.max_consecutive_failures:
            where = self.base_url or f"provider {self.provider or 'auto'}"
            if never:
                summary = f"could not reach {where}"
            else:
                summary = (
                    f"{self._consecutive_failures} requests in a row to {where} failed for good"
                )
            return True, (
                f"RemoteTeacher: {summary} (model {self.model!r}); last error: {failure.reason}. "
                "Is the server running, and are base_url, model and the API key right?"
            )
        return True, None

    async def _wait_cooldown(self) -> None:
        delay = self._cooldown_until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff; a Retry-After is a floor (waited via cooldown)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)

    # -- answers and errors -------------------------------------------------------------
    def _to_completion(self, request: Request, output: Any, prompt_chars: int) -> Completion:
        choices = getattr(output, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise _Failure("the server answered with no choices", True, "response")
        choice = choices[0]
        message = getattr(choice, "message", None)
        if message is None:
            raise _Failure("the server answered a choice without a message", True, "response")
        content = getattr(message, "content", None)
        if content is not None and not isinstance(content, str):
            raise _Failure("the answer's message content is not text", True, "response")
        text = (request.prefill or "") + (content or "")
        raw_reason = str(getattr(choice, "finish_reason", None) or "stop").lower()
        finish: FinishReason
        error: str | None = None
        if raw_reason in _LENGTH_REASONS:
            finish = "length"
        elif raw_reason in _STOP_REASONS:
            finish = "stop"
        else:
            finish, error = "error", f"finish_reason {raw_reason!r}"
        usage = getattr(output, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        return Completion(
            key=request.key,
            text=text,
            finish_reason=finish,
            prompt_tokens=int(prompt_tokens)
            if isinstance(prompt_tokens, (int, float))
            else math.ceil(prompt_chars / 4),
            completion_tokens=int(completion_tokens)
            if isinstance(completion_tokens, (int, float))
            else _estimate_tokens(content or ""),
            teacher=self.fingerprint,
            error=error,
        )

    def _classify(self, exc: BaseException) -> _Failure:
        """Sort one attempt's exception into retryable or not, and why."""
        if isinstance(exc, _Failure):
            exc.reason = self._redact(exc.reason)
            return exc
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or _is_timeout(exc):
            names = {type(exc).__name__, type(exc.__cause__).__name__}
            if "ConnectTimeout" in names:
                return _Failure("connection error: could not connect in time", True, "unreachable")
            return _Failure(f"timed out after {self.timeout:g} s", True, "timeout")
        response = _response_of(exc)
        if response is not None:
            status = int(response.status_code)
            detail = _server_message(exc, response)
            reason = self._redact(f"HTTP {status}" + (f": {detail}" if detail else ""))
            retry_after = None
            if status in (429, 503, 529):
                retry_after = _parse_retry_after(response.headers.get("retry-after"))
            return _Failure(reason, status in RETRY_STATUSES, "http", status, retry_after)
        if _is_transport_error(exc):
            text = str(exc) or type(exc).__name__
            return _Failure(
                self._redact(f"connection error: {type(exc).__name__}: {text}"),
                True,
                "unreachable",
            )
        if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
            return _Failure(f"unreadable answer (not JSON): {exc}", True, "response")
        if isinstance(exc, ValueError) and str(exc).startswith("Invalid"):
            # huggingface_hub's parser on JSON of the wrong shape
            return _Failure(f"unreadable answer: {exc}", True, "response")
        # A setting the client rejects before sending, or a bug: it would recur for every
        # request, so it is not retried and counts towards the circuit breaker.
        return _Failure(self._redact(f"{type(exc).__name__}: {exc}"), False, "other")


def _response_of(exc: BaseException) -> Any:
    """The HTTP response carried by an HTTP status error (httpx/httpx2/requests), if any."""
    try:
        response = getattr(exc, "response", None)
    except Exception:
        return None
    if response is None or not isinstance(getattr(response, "status_code", None), int):
        return None
    return response


def _server_message(exc: BaseException, response: Any) -> str:
    message = getattr(exc, "server_message", None)
    if not message:
        try:
            message = response.text
        except Exception:
            message = ""
    message = " ".join(str(message).split())
    return message[:300] + ("..." if len(message) > 300 else "")


def _exception_types(*names: str) -> tuple[type[BaseException], ...]:
    """The classes ``module.Name`` that can be imported here."""
    import importlib

    found: list[type[BaseException]] = []
    for dotted in names:
        module_name, _, attr = dotted.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, attr, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


_TIMEOUT_TYPES: tuple[type[BaseException], ...] | None = None
_TRANSPORT_TYPES: tuple[type[BaseException], ...] | None = None


def _is_timeout(exc: BaseException) -> bool:
    global _TIMEOUT_TYPES
    if _TIMEOUT_TYPES is None:
        _TIMEOUT_TYPES = _exception_types(
            "huggingface_hub.errors.InferenceTimeoutError",
            "httpx2.TimeoutException",
            "httpx.TimeoutException",
        )
    return isinstance(exc, _TIMEOUT_TYPES)


def _is_transport_error(exc: BaseException) -> bool:
    global _TRANSPORT_TYPES
    if _TRANSPORT_TYPES is None:
        _TRANSPORT_TYPES = (
            *_exception_types(
                "httpx2.TransportError", "httpx.TransportError", "aiohttp.ClientConnectionError"
            ),
            ConnectionError,
        )
    return isinstance(exc, _TRANSPORT_TYPES)
