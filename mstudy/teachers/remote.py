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
``Authorization`` header and masked in every message this module writes. Credentials in
``base_url`` (``http://user:KEY@host/v1``, ``?api_key=...``) are treated the same way: they are
sent (userinfo as HTTP Basic auth when there is no API key) and shown as ``***`` in
:attr:`RemoteTeacher.base_url`, ``repr``, errors and logs; the fingerprint holds no credential.

A self-hosted server (``base_url``) is spoken to over an ``httpx2`` connection pool the
teacher creates, sizes to its window and closes itself; a Hugging Face Inference Provider
through ``huggingface_hub``'s ``AsyncInferenceClient``. The exceptions of those libraries
are sorted in one table, :data:`FOREIGN_ERRORS`, at this boundary (in the manner of httpx's
own ``map_httpcore_exceptions``): nothing else here looks at a foreign exception.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import itertools
import json
import logging
import math
import os
import queue
import random
import re
import sys
import threading
import time
import urllib.request
import weakref
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple, TypeVar, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from mstudy._hashing import stable_hash
from mstudy.errors import ConfigError, RemoteCallError, RemoteFailureKind, TeacherError
from mstudy.records import Completion, FinishReason, Request
from mstudy.report import EndpointStats
from mstudy.teachers._endpoints import Dispatcher, Server
from mstudy.teachers._window import AdaptiveWindow, FixedWindow
from mstudy.teachers.ratelimit import RateLimiter

__all__ = ["RemoteTeacher"]

logger = logging.getLogger(__name__)

PrefillMode = Literal["continue", "assistant"]
Concurrency = int | Literal["adaptive"] | tuple[int, int]
_T = TypeVar("_T")

KEEPALIVE_EXPIRY = 3.0
"""Seconds an idle pooled connection is kept. Under the 5 s after which uvicorn (vLLM's,
SGLang's server) closes an idle one: with httpx's default of 5 s too, a connection idle for
about 5 s was reused just as the server closed it, and the request failed ("server
disconnected") and waited out a retry; most often at large windows, where many connections
idle at the end of a burst or while the window shrinks."""
ADAPTIVE_BOUNDS = (1, 256)
"""``concurrency="adaptive"``: the window's bounds per server."""
# Failures that say "slow down" to the adaptive window (on top of timeouts).
_OVERLOAD_STATUSES = frozenset({429, 503, 529})

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


class _Endpoint(NamedTuple):
    """A ``base_url`` taken apart: where requests go, and the secrets it held."""

    url: str
    """Without userinfo (sent as a header instead); query kept."""
    shown: str
    """For people: userinfo and every query value replaced by ``***``."""
    username: str | None
    password: str | None
    secrets: tuple[str, ...]
    """Every credential-like string in it (userinfo parts, query values), to mask in text."""


def _endpoint(base_url: str) -> _Endpoint:
    """Split credentials out of ``base_url``; a URL that does not parse is shown as ``***``."""
    raw = base_url.strip().rstrip("/")
    try:
        parts = urlsplit(raw)
        username, password = parts.username, parts.password
        hostname = parts.hostname or ""
        host = f"[{hostname}]" if ":" in hostname else hostname  # an IPv6 address
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:  # e.g. a port that is not a number: the netloc may hold a key
        return _Endpoint(raw, "***", None, None, (raw,))
    query = parse_qsl(parts.query, keep_blank_values=True)
    userinfo = "***@" if parts.username is not None or parts.password is not None else ""
    shown_query = urlencode([(k, "***") for k, _ in query], safe="*")
    url = urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
    shown = urlunsplit((parts.scheme, userinfo + host, parts.path, shown_query, ""))
    secrets = [s for s in (username, password, parts.netloc.rpartition("@")[0]) if s]
    if username or password:  # as sent, in a Basic auth header a server may quote back
        secrets.append(base64.b64encode(f"{username or ''}:{password or ''}".encode()).decode())
    secrets += [v for _, v in query if v]
    secrets += [quote(s, safe="") for s in list(secrets)]
    return _Endpoint(url, shown, username, password, tuple(dict.fromkeys(secrets)))


def _join(url: str, path: str) -> str:
    """``url`` with ``path`` appended to its path (its query kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path, parts.query, ""))


async def _within(call: Awaitable[_T], seconds: float) -> _T:
    """``call``'s result, or TimeoutError after ``seconds`` (no task of its own, unlike
    ``asyncio.wait_for`` before Python 3.12: that one is a task and a timer per request)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await call
    return await asyncio.wait_for(call, seconds)  # pragma: no cover - Python 3.10


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
        base_url: a self-hosted server, e.g. ``http://127.0.0.1:8000/v1``, or a list of them
            (one vLLM server per GPU, say): each attempt goes to the server with the fewest
            requests outstanding, and one that fails is left out while others answer.
        provider: an HF Inference Provider (``"together"``, ``"auto"``, ...) when there is no
            ``base_url``.
        api_key: the key; otherwise read from the environment variable ``api_key_env``, by
            default ``MSTUDY_API_KEY``, then ``OPENAI_API_KEY`` (``base_url``) or ``HF_TOKEN``
            (providers, which also fall back to the saved ``hf auth login`` token). A
            self-hosted server never gets the saved HF token implicitly.
        concurrency: requests in flight at most, per server; the window is refilled as each
            returns. ``"adaptive"`` (bounds 1-256) or ``(low, high)``: a window per server
            that grows while the server's throughput does and shrinks when its latency
            climbs or it answers 429/503 or times out (:mod:`mstudy.teachers._window`).
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
        structured_output: send a request's response schema as ``response_format``
            (``{"type": "json_schema", "json_schema": {..., "strict": true}}``, which vLLM,
            SGLang and OpenAI accept) so that the server constrains decoding to it. Turn it
            off for a server without the feature; replies are validated either way.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | Sequence[str] | None = None,
        provider: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        concurrency: Concurrency = 16,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        prefill_mode: PrefillMode = "continue",
        max_consecutive_failures: int = 3,
        structured_output: bool = True,
    ) -> None:
        if base_url is not None and provider is not None:
            raise ConfigError(
                "RemoteTeacher takes base_url= or provider=, not both", parameter="provider"
            )
        if base_url is None and model is None:
            raise ConfigError(
                "RemoteTeacher needs model= (an HF model id for Inference Providers) or "
                "base_url= (a self-hosted OpenAI-compatible server)",
                parameter="model",
            )
        self._endpoints = _endpoints(base_url)
        self._endpoint = self._endpoints[0] if self._endpoints else None
        self._bounds = _window_bounds(concurrency)
        if not _is_int(max_consecutive_failures) or max_consecutive_failures < 1:
            raise ConfigError(
                f"max_consecutive_failures must be an integer >= 1, got "
                f"{max_consecutive_failures!r}",
                parameter="max_consecutive_failures",
            )
        if not _is_int(max_retries) or max_retries < 0:
            raise ConfigError(
                f"max_retries must be an integer >= 0, got {max_retries!r}", parameter="max_retries"
            )
        numbers: tuple[tuple[str, float | None, bool], ...] = (
            ("timeout", timeout, False),  # (label, value, whether 0 is allowed)
            ("backoff_base", backoff_base, True),
            ("backoff_max", backoff_max, True),
            ("requests_per_minute", requests_per_minute, False),
            ("tokens_per_minute", tokens_per_minute, False),
        )
        for label, number, zero_ok in numbers:
            if number is None and label.endswith("_per_minute"):
                continue
            if not (_is_number(number) and math.isfinite(cast(float, number))) or not (
                cast(float, number) >= 0 if zero_ok else cast(float, number) > 0
            ):
                rule = "a finite number " + (">= 0" if zero_ok else "> 0")
                raise ConfigError(f"{label} must be {rule}, got {number!r}", parameter=label)
        if prefill_mode not in ("continue", "assistant"):
            raise ConfigError(
                f"prefill_mode must be 'continue' or 'assistant', got {prefill_mode!r}",
                parameter="prefill_mode",
            )
        try:
            import huggingface_hub  # noqa: F401  (checked now, used on the loop thread)
        except ImportError as exc:  # pragma: no cover - a dependency of mstudy
            raise TeacherError(
                "RemoteTeacher needs huggingface_hub: pip install huggingface-hub"
            ) from exc

        self.model = model
        self.base_url: str | None = None if self._endpoint is None else self._endpoint.shown
        """The (first) server's URL as shown to people: credentials and query values ``***``."""
        self.base_urls: tuple[str, ...] = tuple(e.shown for e in self._endpoints)
        """Every server's URL, shown the same way."""
        self.provider = provider
        self.concurrency: Concurrency = (
            concurrency if isinstance(concurrency, (int, str)) else self._bounds
        )
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.extra_body = dict(extra_body or {})
        self.prefill_mode: PrefillMode = prefill_mode
        self.max_consecutive_failures = max_consecutive_failures
        self.structured_output = bool(structured_output)
        self._api_key = self._resolve_key(api_key, api_key_env)

        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None  # huggingface_hub's client (providers)
        self._http: Any = None  # our own httpx2 pool (base_url)
        self._servers = self._make_servers()
        self._dispatch: Dispatcher | None = None
        self._limiter: RateLimiter | None = None
        self._consecutive_failures = 0
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
                    "endpoint": self._fingerprint_endpoint(),
                    "provider": None if self.base_url else (self.provider or "auto"),
                    "model": model,
                    "prefill_mode": self.prefill_mode,
                    "extra_body": self.extra_body,
                    # only when off, so that fingerprints made before it existed still hold
                    **({} if self.structured_output else {"structured_output": False}),
                }
            )
        return self._fingerprint

    @property
    def constrains_schema(self) -> bool:
        """Whether the server is asked to constrain replies to a request's response schema
        (:class:`~mstudy.interfaces.SchemaConstrained`)."""
        return self.structured_output

    def _fingerprint_endpoint(self) -> str | list[str] | None:
        """One server: its clean URL (as before several were possible); several: all, sorted."""
        urls = sorted(_clean_url(e.url) for e in self._endpoints)
        if not urls:
            return None
        return urls[0] if len(urls) == 1 else urls

    def __repr__(self) -> str:
        if len(self.base_urls) > 1:
            where = f"base_url={list(self.base_urls)!r}"
        elif self.base_url:
            where = f"base_url={self.base_url!r}"
        else:
            where = f"provider={self.provider!r}"
        key = "'***'" if self._api_key is not None else "None"
        return (
            f"RemoteTeacher(model={self.model!r}, {where}, concurrency={self.concurrency!r}, "
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
        """``text`` with the API key and every credential of ``base_url`` masked."""
        secrets = [self._api_key.get()] if self._api_key is not None else []
        for endpoint in self._endpoints:
            text = text.replace(endpoint.url, endpoint.shown)
            secrets += endpoint.secrets
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def _auth_headers(self, endpoint: _Endpoint | None = None) -> dict[str, str]:
        """The API key as a bearer token, else the userinfo of ``base_url`` as Basic auth."""
        if self._api_key is not None:
            return {"Authorization": f"Bearer {self._api_key.get()}"}
        endpoint = endpoint or self._endpoint
        if endpoint is not None and (endpoint.username or endpoint.password):
            pair = f"{endpoint.username or ''}:{endpoint.password or ''}".encode()
            return {"Authorization": f"Basic {base64.b64encode(pair).decode('ascii')}"}
        return {}

    def _model_name(self) -> str | None:
        """The model to name in requests; asks a self-hosted server when none was given."""
        if self.model is not None or self._endpoint is None:
            return self.model
        errors: list[str] = []
        for endpoint in self._endpoints:  # the first server that answers
            listing = urllib.request.Request(
                _join(endpoint.url, "/models"), headers=self._auth_headers(endpoint)
            )
            try:
                with urllib.request.urlopen(listing, timeout=self.timeout) as response:
                    ids = [str(m["id"]) for m in json.loads(response.read())["data"]]
                break
            except Exception as exc:
                errors.append(
                    f"{endpoint.shown}/models could not be read "
                    f"({type(exc).__name__}: {self._redact(str(exc))})"
                )
        else:
            raise TeacherError(
                f"RemoteTeacher: no model= given and {'; '.join(errors)}; pass model="
            ) from None
        if len(ids) != 1:
            raise TeacherError(
                f"RemoteTeacher: no model= given and {endpoint.shown} serves "
                f"{len(ids)} models ({', '.join(ids) or 'none'}); pass model="
            )
        self.model = ids[0]
        return self.model

    def _make_servers(self) -> list[Server]:
        low, high = self._bounds
        servers = []
        for index, endpoint in enumerate(self._endpoints or [None]):
            window: FixedWindow | AdaptiveWindow = (
                FixedWindow(high, time.monotonic)
                if low == high
                else AdaptiveWindow(low, high, time.monotonic)
            )
            servers.append(
                Server(
                    index,
                    None if endpoint is None else endpoint.url,
                    f"provider {self.provider or 'auto'}" if endpoint is None else endpoint.shown,
                    {} if endpoint is None else self._auth_headers(endpoint),
                    window,
                )
            )
        return servers

    def endpoint_stats(self, *, reset: bool = False) -> list[EndpointStats]:
        """Per server: attempts sent, answered, failed, latency, tokens, state and window.
        ``reset``: start the counts afresh (the windows keep what they learned)."""
        loop = self._loop
        if loop is not None and loop.is_running():  # the loop's thread owns the counts
            future = asyncio.run_coroutine_threadsafe(self._stats_on_loop(reset), loop)
            return future.result(timeout=10)
        return self._stats_now(reset)

    async def _stats_on_loop(self, reset: bool) -> list[EndpointStats]:
        return self._stats_now(reset)

    def _stats_now(self, reset: bool) -> list[EndpointStats]:
        stats = [server.stats() for server in self._servers]
        if reset:
            for server in self._servers:
                server.reset_counts()
        return stats

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
        key = self._api_key.get() if self._api_key is not None else None
        if self._endpoint is not None:
            # Our own pool, sized to the window: huggingface_hub's shared one refuses every
            # request when HF_HUB_OFFLINE is set (meant for the Hub, not a server here) and
            # holds at most 100 connections; and no saved HF token reaches another server.
            import httpx2

            connections = self._bounds[1] * len(self._servers)
            self._http = httpx2.AsyncClient(
                limits=httpx2.Limits(
                    max_connections=connections,
                    max_keepalive_connections=connections,
                    keepalive_expiry=KEEPALIVE_EXPIRY,
                ),
                follow_redirects=True,
                timeout=self.timeout,
            )
        else:
            from huggingface_hub import AsyncInferenceClient

            self._client = AsyncInferenceClient(
                provider=self.provider,  # type: ignore[arg-type]
                api_key=key,
                timeout=self.timeout,
            )
        self._dispatch = Dispatcher(self._servers)
        self._limiter = RateLimiter(self.requests_per_minute, self.tokens_per_minute)

    def close(self) -> None:
        """Close connections and stop the background loop; the teacher may be used again."""
        with self._lock:
            loop, thread = self._loop, self._thread
            client, http = self._client, self._http
            self._loop = self._thread = self._client = self._http = None
            self._dispatch = None
            self._limiter = None
        if loop is None:
            return
        closing = [c.close() for c in (client,) if c is not None]
        closing += [h.aclose() for h in (http,) if h is not None]
        for coroutine in closing:
            if not loop.is_running():
                coroutine.close()
                continue
            try:
                asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=10)
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

        Pulls requests lazily (at most twice the servers' windows ahead of what was yielded)
        and keeps each server's window full. Raises TeacherError when the servers look down;
        requests that failed for good on what looked like an outage are then not yielded at
        all (see the module docstring), while answers already received are.

        The caller's thread and the loop's thread meet in batches, not once per request:
        requests go over in chunks (one wake-up of the loop each), and the loop hands back
        every answer that came in during one turn of it at once (one wake-up of the caller).
        """
        loop = self._ensure_started()
        dispatch = self._dispatch
        assert dispatch is not None
        run = _Run(self, loop)
        source = iter(requests)
        exhausted = False
        sent = yielded = received = 0
        held: list[Completion] = []  # suspect failures, until the server answers again

        def top_up(least: int) -> None:
            """Send the loop what it may have ahead now, if that is at least ``least``."""
            nonlocal exhausted, sent
            room = 2 * dispatch.capacity() - (sent - yielded)
            if exhausted or room < max(1, least):
                return
            chunk: list[Request] = []
            for request in itertools.islice(source, room):
                chunk.append(request)
            if len(chunk) < room:
                exhausted = True
            if chunk:
                sent += len(chunk)
                loop.call_soon_threadsafe(run.submit, chunk)

        try:
            while True:
                top_up(1)
                if received == sent:
                    yield from held  # too few in a row to call the server down
                    return
                batch = self._next_batch(run)
                received += len(batch)
                for position, outcome in enumerate(batch):
                    if isinstance(outcome, BaseException):  # a bug on the loop: not hidden
                        raise outcome
                    if outcome.down is not None:
                        yield from _already_answered(batch[position + 1 :], run)
                        raise TeacherError(outcome.down)
                    if outcome.suspect:
                        held.append(outcome.completion)
                        yielded += 1  # taken off the loop's hands: it counts as yielded
                        continue
                    released, held = held, []
                    yield from released
                    yielded += 1
                    yield outcome.completion
                    # Keep the loop fed while the caller works, a few at a time.
                    top_up(dispatch.capacity() // 4)
        finally:
            if received < sent and not loop.is_closed():  # closed early: stop the rest
                loop.call_soon_threadsafe(run.cancel)

    def _next_batch(self, run: _Run) -> list[_Outcome | BaseException]:
        while True:
            try:
                return run.out.get(timeout=1.0)
            except queue.Empty:
                thread = self._thread
                if thread is None or not thread.is_alive():
                    raise TeacherError("RemoteTeacher: the background loop stopped") from None

    async def _complete(self, request: Request) -> _Outcome:
        """All attempts for one request; never raises (but for cancellation).

        Each attempt goes to the server the dispatcher picks; a retry prefers another server
        than the one that just failed, and a request a server refused to connect moves to
        another at once without using up an attempt."""
        assert self._dispatch is not None and self._limiter is not None
        dispatch, limiter = self._dispatch, self._limiter
        messages = request.chat()
        body = dict(self.extra_body)
        if request.params.response_schema is not None and self.structured_output:
            body["response_format"] = _response_format(request)
        if request.prefill is not None:
            messages.append({"role": "assistant", "content": request.prefill})
            if self.prefill_mode == "continue":
                body.update(continue_final_message=True, add_generation_prompt=False)
        prompt_chars = sum(len(m["content"]) for m in messages)
        estimate = math.ceil(prompt_chars / 4) + request.params.max_new_tokens
        failure: RemoteCallError | None = None
        server: Server | None = None
        attempt = moves = 0
        while attempt <= self.max_retries:
            if attempt and not moves:
                await asyncio.sleep(self._backoff(attempt))
            server = await dispatch.acquire(avoid=server)
            try:
                await self._wait_cooldown(server)
                await limiter.acquire(estimate)
                epoch = server.window.sent()
                area, started = server.area(), time.monotonic()
                try:
                    answer = await _within(
                        self._call(server, messages, request, body), self.timeout
                    )
                    completion = self._to_completion(request, answer, prompt_chars)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # classified below; nothing escapes for one request
                    failure = self._classify(exc)
                else:
                    latency = time.monotonic() - started
                    in_flight = (server.area() - area) / latency if latency > 0 else 1.0
                    server.window.answered(epoch, latency, completion.completion_tokens, in_flight)
                    server.succeeded(
                        latency, completion.prompt_tokens, completion.completion_tokens
                    )
                    self._consecutive_failures = 0
                    used = completion.prompt_tokens + completion.completion_tokens
                    limiter.settle(estimate, used)
                    return _Outcome(completion)
            finally:
                dispatch.release(server)
            moved = self._note_failed_attempt(server, failure)
            dispatch.wake()  # its state may have changed what the waiting requests can use
            if moved and moves < len(self._servers) - 1:
                moves += 1  # it never reached that server: another one gets it, free
                continue
            moves = 0
            if not failure.retryable:
                break
            logger.info(
                "remote teacher: attempt %d/%d failed (%s)%s",
                attempt + 1,
                self.max_retries + 1,
                failure.reason,
                "; retrying" if attempt < self.max_retries else "",
            )
            attempt += 1
        assert failure is not None and server is not None
        reason = failure.reason
        if len(self._servers) > 1:
            reason = f"{reason} (at {server.shown})"
        completion = Completion(
            key=request.key,
            text="",
            finish_reason="error",
            teacher=self.fingerprint,
            error=reason,
        )
        suspect, down = self._note_final_failure(failure)
        if down is None:
            logger.warning("remote teacher: request %s failed: %s", request.key, reason)
        return _Outcome(completion, suspect, down)

    def _note_failed_attempt(self, server: Server, failure: RemoteCallError) -> bool:
        """Count a failed attempt against its server (health, window, Retry-After); whether
        the request should move to another server at once (it never reached this one)."""
        reached = failure.status is not None or failure.kind == "response"
        status = failure.status or 0
        server_fault = (
            failure.kind in ("unreachable", "timeout", "other")
            or status in _TEACHER_WIDE_STATUSES
            or (status >= 500 and status not in _OVERLOAD_STATUSES)
        )
        server.failed(
            failure.reason,
            reached=reached,
            server_fault=server_fault,
            threshold=self.max_consecutive_failures,
            cooloff=max(self.backoff_base, 0.05),
        )
        if failure.kind == "timeout" or status in _OVERLOAD_STATUSES:
            server.window.overloaded()
        if failure.retry_after is not None:
            server.cooldown_until = max(
                server.cooldown_until, time.monotonic() + failure.retry_after
            )
        return (
            failure.kind == "unreachable"
            and len(self._servers) > 1
            and self._dispatch is not None
            and self._dispatch.any_up_but(server)
        )

    def _note_final_failure(self, failure: RemoteCallError) -> tuple[bool, str | None]:
        """The circuit breaker: (whether the failure is teacher-wide, the message if down)."""
        teacher_wide = (
            failure.kind in ("unreachable", "timeout", "other")
            or failure.status in _TEACHER_WIDE_STATUSES
        )
        if not teacher_wide:
            self._consecutive_failures = 0
            return False, None
        self._consecutive_failures += 1
        never = failure.kind == "unreachable" and not any(s.reached for s in self._servers)
        if never or self._consecutive_failures >= self.max_consecutive_failures:
            where = self._where()
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

    def _where(self) -> str:
        """The servers, for people (masked), each with its last error when there are several."""
        if not self._endpoints:
            return f"provider {self.provider or 'auto'}"
        if len(self._servers) == 1:
            return self._servers[0].shown
        return "any of " + ", ".join(
            f"{s.shown} ({s.last_error or 'no error'})" for s in self._servers
        )

    async def _wait_cooldown(self, server: Server) -> None:
        delay = server.cooldown_until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff; a Retry-After is a floor (waited via cooldown)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)

    # -- calls, answers and errors -----------------------------------------------------
    async def _call(
        self, server: Server, messages: list[dict[str, str]], request: Request, body: dict[str, Any]
    ) -> _Answer:
        """One attempt: the server's answer, read; raises for anything else."""
        if server.url is not None:
            if self._http is None:  # closed while this request was on its way: abandon it
                raise asyncio.CancelledError

            payload: dict[str, Any] = {
                "model": self.model,
                "messages": messages,
                "max_tokens": request.params.max_new_tokens,
                "temperature": request.params.temperature,
                "top_p": request.params.top_p,
                "seed": request.seed,
                "stop": list(request.params.stop) or None,
            }
            payload = {k: v for k, v in payload.items() if v is not None}
            payload.update(body)
            response = await self._http.post(
                _join(server.url, "/chat/completions"), json=payload, headers=server.headers
            )
            if response.status_code >= 400:
                raise self._status_error(response.status_code, response.headers, response.text)
            try:
                data = json.loads(response.content)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise RemoteCallError(
                    f"unreadable answer (not JSON): {exc}", retryable=True, kind="response"
                ) from exc
            return _read_json_answer(data)
        if self._client is None:  # closed while this request was on its way
            raise asyncio.CancelledError
        output = await self._client.chat_completion(
            messages,
            model=self.model,
            max_tokens=request.params.max_new_tokens,
            temperature=request.params.temperature,
            top_p=request.params.top_p,
            seed=request.seed,
            stop=list(request.params.stop) or None,
            extra_body=body or None,
        )
        return _read_hf_answer(output)

    def _status_error(self, status: int, headers: Mapping[str, str], text: str) -> RemoteCallError:
        detail = " ".join(str(text).split())
        detail = detail[:300] + ("..." if len(detail) > 300 else "")
        retry_after = None
        if status in (429, 503, 529):
            retry_after = _parse_retry_after(headers.get("retry-after"))
        return RemoteCallError(
            self._redact(f"HTTP {status}" + (f": {detail}" if detail else "")),
            retryable=status in RETRY_STATUSES,
            kind="http",
            status=status,
            retry_after=retry_after,
        )

    def _to_completion(self, request: Request, answer: _Answer, prompt_chars: int) -> Completion:
        text = (request.prefill or "") + (answer.content or "")
        raw_reason = (answer.finish_reason or "stop").lower()
        finish: FinishReason
        error: str | None = None
        if raw_reason in _LENGTH_REASONS:
            finish = "length"
        elif raw_reason in _STOP_REASONS:
            finish = "stop"
        else:
            finish, error = "error", f"finish_reason {raw_reason!r}"
        return Completion(
            key=request.key,
            text=text,
            finish_reason=finish,
            prompt_tokens=answer.prompt_tokens
            if answer.prompt_tokens is not None
            else math.ceil(prompt_chars / 4),
            completion_tokens=answer.completion_tokens
            if answer.completion_tokens is not None
            else _estimate_tokens(answer.content or ""),
            teacher=self.fingerprint,
            error=error,
        )

    def _classify(self, exc: BaseException) -> RemoteCallError:
        """Sort one attempt's exception by :data:`FOREIGN_ERRORS`; its reason masked."""
        if isinstance(exc, RemoteCallError):
            exc.reason = self._redact(exc.reason)
            return exc
        rule = _rule_for(exc)
        if rule is not None and rule.wraps and exc.__cause__ is not None:
            rule = _rule_for(exc.__cause__) or rule  # e.g. a timeout that was a connect timeout
        if rule is None:
            # A setting the client rejects before sending, or a bug: it would recur for every
            # request, so it is not retried and counts towards the circuit breaker.
            return RemoteCallError(
                self._redact(f"{type(exc).__name__}: {exc}"), retryable=False, kind="other"
            )
        if rule.kind == "http":
            response = exc.response  # type: ignore[attr-defined]  # the table's http types have it
            message = getattr(exc, "server_message", None) or _response_text(response)
            return self._status_error(int(response.status_code), response.headers, message)
        if rule.kind == "timeout":
            reason = f"timed out after {self.timeout:g} s"
        else:
            reason = f"{rule.reason}: {type(exc).__name__}: {str(exc) or type(exc).__name__}"
        return RemoteCallError(self._redact(reason), retryable=rule.retryable, kind=rule.kind)


class _Run:
    """The loop's side of one ``generate`` call: its tasks, and answers handed back in batches.

    Everything here but :attr:`out` runs on the loop's thread. Each finished request is added
    to a list that goes to :attr:`out` once per turn of the loop, so that the caller's thread
    wakes once for all the answers of that turn, not once per answer.
    """

    def __init__(self, teacher: RemoteTeacher, loop: asyncio.AbstractEventLoop) -> None:
        self._teacher = teacher
        self._loop = loop
        self.tasks: set[asyncio.Task[_Outcome]] = set()
        self.out: queue.SimpleQueue[list[_Outcome | BaseException]] = queue.SimpleQueue()
        self.closed = False
        self._ready: list[_Outcome | BaseException] = []

    def submit(self, requests: list[Request]) -> None:
        if self.closed:
            return
        for request in requests:
            task = self._loop.create_task(self._teacher._complete(request))
            self.tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[_Outcome]) -> None:
        self.tasks.discard(task)
        if self.closed:
            return
        item: _Outcome | BaseException
        if task.cancelled():  # not by us: the teacher was closed under the caller
            item = TeacherError("RemoteTeacher: closed while requests were on their way")
        else:
            item = task.exception() or task.result()
        if not self._ready:
            self._loop.call_soon(self._flush)
        self._ready.append(item)

    def _flush(self) -> None:
        batch, self._ready = self._ready, []
        if batch:
            self.out.put(batch)

    def cancel(self) -> None:
        """The caller stopped (closed the generator, or raised): drop what is left."""
        self.closed = True
        for task in list(self.tasks):
            task.cancel()


def _already_answered(rest: list[_Outcome | BaseException], run: _Run) -> Iterator[Completion]:
    """Completions that are back already and not suspect (the run keeps what it paid for)."""
    batches = [rest]
    while True:
        try:
            batches.append(run.out.get_nowait())
        except queue.Empty:
            break
    for batch in batches:
        for outcome in batch:
            if isinstance(outcome, _Outcome) and outcome.down is None and not outcome.suspect:
                yield outcome.completion


def _response_format(request: Request) -> dict[str, Any]:
    """The OpenAI ``response_format`` of a request with a response schema."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.strategy)[:64] or "response"
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": request.params.schema(), "strict": True},
    }


class _Answer(NamedTuple):
    """What is read from a chat completion, whichever client fetched it."""

    content: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


def _unreadable(why: str) -> RemoteCallError:
    return RemoteCallError(f"unreadable answer: {why}", retryable=True, kind="response")


def _count(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _read_json_answer(data: object) -> _Answer:
    """The answer in an OpenAI-style JSON body; a RemoteCallError for any other shape."""
    if not isinstance(data, Mapping):
        raise _unreadable(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise RemoteCallError(
            "the server answered with no choices", retryable=True, kind="response"
        )
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, Mapping) else None
    if not isinstance(message, Mapping):
        raise RemoteCallError(
            "the server answered a choice without a message", retryable=True, kind="response"
        )
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise RemoteCallError(
            "the answer's message content is not text", retryable=True, kind="response"
        )
    usage = data.get("usage")
    usage = usage if isinstance(usage, Mapping) else {}
    reason = choice.get("finish_reason")
    return _Answer(
        content,
        None if reason is None else str(reason),
        _count(usage.get("prompt_tokens")),
        _count(usage.get("completion_tokens")),
    )


def _read_hf_answer(output: Any) -> _Answer:
    """The answer in huggingface_hub's ``ChatCompletionOutput`` (its declared fields)."""
    choices = output.choices
    if not isinstance(choices, list) or not choices:
        raise RemoteCallError(
            "the server answered with no choices", retryable=True, kind="response"
        )
    message = choices[0].message
    if message is None:
        raise RemoteCallError(
            "the server answered a choice without a message", retryable=True, kind="response"
        )
    content = message.content
    if content is not None and not isinstance(content, str):
        raise RemoteCallError(
            "the answer's message content is not text", retryable=True, kind="response"
        )
    usage = output.usage
    reason = choices[0].finish_reason
    return _Answer(
        content,
        None if reason is None else str(reason),
        None if usage is None else _count(usage.prompt_tokens),
        None if usage is None else _count(usage.completion_tokens),
    )


def _response_text(response: Any) -> str:
    try:
        return str(response.text)
    except Exception:  # a streamed body not read: no text to quote
        return ""


# -- foreign exceptions -------------------------------------------------------------------


class ForeignError(NamedTuple):
    """How one foreign exception type is taken: our kind, whether to retry, the reason."""

    kind: RemoteFailureKind
    retryable: bool
    reason: str
    wraps: bool = False
    """Classify by the exception's ``__cause__`` when that is in the table too."""


_UNREACHABLE = ForeignError("unreachable", True, "connection error")
_TIMEOUT = ForeignError("timeout", True, "timed out")
_HTTP = ForeignError("http", True, "HTTP error status")  # retryable by status
_RESPONSE = ForeignError("response", True, "unreadable answer")
_REFUSED = ForeignError("other", False, "the client refused the request")

FOREIGN_ERRORS: dict[str, ForeignError] = {
    # Python's own
    "builtins.TimeoutError": _TIMEOUT,
    "asyncio.TimeoutError": _TIMEOUT,  # the same class from 3.11
    "builtins.ConnectionError": _UNREACHABLE,
    "json.JSONDecodeError": _RESPONSE,
    "builtins.UnicodeDecodeError": _RESPONSE,
    # huggingface_hub (providers)
    "huggingface_hub.errors.InferenceTimeoutError": _TIMEOUT._replace(wraps=True),
    "huggingface_hub.errors.HfHubHTTPError": _HTTP,
    "huggingface_hub.errors.OfflineModeIsEnabled": _REFUSED,
    # httpx2 (our own pool, and huggingface_hub's), and httpx where it is installed
    **{
        f"{module}.{name}": rule
        for module in ("httpx2", "httpx")
        for name, rule in (
            ("ConnectTimeout", ForeignError("unreachable", True, "could not connect in time")),
            ("TimeoutException", _TIMEOUT),
            ("UnsupportedProtocol", _REFUSED),
            ("TransportError", _UNREACHABLE),
            ("DecodingError", _RESPONSE),
            ("TooManyRedirects", _REFUSED),
            ("HTTPStatusError", _HTTP),
        )
    },
    # aiohttp, where a client built on it is used
    "aiohttp.ServerTimeoutError": _TIMEOUT,
    "aiohttp.ClientConnectionError": _UNREACHABLE,
    "aiohttp.ClientPayloadError": _RESPONSE,
}
"""Every foreign exception this teacher understands, by ``module.Name``. An exception is
taken by the first class of its MRO listed here (so a subclass's entry beats its base's);
one whose MRO has none is ``other``: not retried, and counted by the circuit breaker.
A ``http`` entry's class carries the ``response`` (status, headers, body) it failed on."""

_RULES: dict[type, ForeignError] | None = None


def _rules() -> dict[type, ForeignError]:
    """:data:`FOREIGN_ERRORS` by class, for the libraries that can be imported here."""
    global _RULES
    if _RULES is None:
        import importlib

        rules: dict[type, ForeignError] = {}
        for dotted, rule in FOREIGN_ERRORS.items():
            module_name, _, attr = dotted.rpartition(".")
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            cls = getattr(module, attr, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                rules.setdefault(cls, rule)
        _RULES = rules
    return _RULES


def _rule_for(exc: BaseException) -> ForeignError | None:
    rules = _rules()
    for cls in type(exc).__mro__:
        rule = rules.get(cls)
        if rule is not None:
            return rule
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _endpoints(base_url: str | Sequence[str] | None) -> list[_Endpoint]:
    """``base_url`` (one URL or several) taken apart; a ConfigError for a bad one."""
    if base_url is None:
        return []
    urls = [base_url] if isinstance(base_url, str) else list(base_url)
    if not urls:
        raise ConfigError("base_url is an empty list; give at least one URL", parameter="base_url")
    endpoints = []
    for position, url in enumerate(urls):
        if not isinstance(url, str):
            raise ConfigError(
                f"base_url[{position}] must be a string, got {type(url).__name__}",
                parameter="base_url",
            )
        endpoint = _endpoint(url)
        if not endpoint.url.startswith(("http://", "https://")):
            where = "base_url" if len(urls) == 1 else f"base_url[{position}]"
            raise ConfigError(
                f"{where} must start with http:// or https://, got {endpoint.shown!r}",
                parameter="base_url",
            )
        endpoints.append(endpoint)
    clean = [_clean_url(e.url) for e in endpoints]
    twice = sorted({e.shown for e, c in zip(endpoints, clean, strict=True) if clean.count(c) > 1})
    if twice:
        raise ConfigError(
            f"base_url lists the same server more than once: {', '.join(twice)}",
            parameter="base_url",
        )
    return endpoints


def _window_bounds(concurrency: object) -> tuple[int, int]:
    """``(low, high)`` of the window per server: equal for a fixed ``concurrency``."""
    if _is_int(concurrency):
        bounds = (cast(int, concurrency),) * 2
    elif concurrency == "adaptive":
        bounds = ADAPTIVE_BOUNDS
    elif (
        isinstance(concurrency, (tuple, list))
        and len(concurrency) == 2
        and all(_is_int(v) for v in concurrency)
    ):
        bounds = (int(concurrency[0]), int(concurrency[1]))
    else:
        raise ConfigError(
            'concurrency must be an integer >= 1, "adaptive" or a pair (low, high) of '
            f"integers, got {concurrency!r}",
            parameter="concurrency",
        )
    if not 1 <= bounds[0] <= bounds[1]:
        raise ConfigError(
            f"concurrency must be >= 1 (and low <= high for a pair), got {concurrency!r}",
            parameter="concurrency",
        )
    return bounds
