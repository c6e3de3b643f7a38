"""A teacher through an OpenAI-style batch API: half the price, answers within a day.

``generate`` takes the requests a study hands it (one round: up to the study's
``max_backlog`` records), writes them as a batch input file (:mod:`mstudy.teachers.batch_files`,
``custom_id`` = request key), uploads it through the files API, creates a batch, polls it,
and downloads the results and errors; files over the provider's limits are split into several
batches. Completions are yielded batch by batch as each ends.

No call is paid twice. The :class:`~mstudy.teachers.batch_ledger.Ledger` records each
submission before and after it is created (with an id in the batch's metadata, so a batch
created just before a kill is found again), and a run that is killed while waiting picks its
batches up again: requests already submitted are not submitted again, and results that came
back are downloaded again rather than asked for again. Items that fail retryably (429, 5xx,
expired, missing from the results) are submitted again alone, up to ``max_submissions`` times
in all; others end as error completions with the provider's reason. Results land in the
study's call cache like any other call.

The HTTP side is the official ``openai`` client (``pip install 'mstudy[batch]'``).
"""

from __future__ import annotations

import io
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mstudy.errors import ConfigError, TeacherError
from mstudy.records import Completion, Request
from mstudy.teachers.base import cache_root, fingerprint
from mstudy.teachers.batch_files import (
    BatchFailure,
    BatchResult,
    PrefillMode,
    completion_for,
    input_line,
    read_results,
)
from mstudy.teachers.batch_ledger import Ledger, Submission
from mstudy.teachers.remote import _clean_url, _endpoint

__all__ = ["BatchTeacher"]

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})
"""Batch statuses after which nothing more comes."""

OPENAI_MAX_REQUESTS = 50_000
OPENAI_MAX_BYTES = 200 * 1024 * 1024


class BatchTeacher:
    """Teacher backed by an OpenAI-compatible batch API (files + batches endpoints).

    Args:
        model: the model named in every request.
        base_url: the API's base URL (``https://api.openai.com/v1`` when not given).
        api_key: the key; else read from ``api_key_env`` (default ``MSTUDY_API_KEY``, then
            ``OPENAI_API_KEY``).
        ledger: the file that records submitted batches; by default one per teacher
            fingerprint in mstudy's cache folder, so running the same command again after a
            kill picks the batches up.
        poll_interval: seconds between status checks of unfinished batches.
        max_wait: give up waiting after this many seconds (``TeacherError``; the batches are
            kept in the ledger and a later run picks them up). ``None``: wait as long as it
            takes.
        max_batch_requests, max_batch_bytes: the provider's limits per batch (OpenAI: 50,000
            requests, 200 MB); bigger rounds are split into several batches.
        max_submissions: how many times one request may be submitted in all, when its items
            fail retryably, expire or go missing.
        price_factor: the batch price as a share of the synchronous price (0.5 at OpenAI);
            budgets and ``--dry-run`` apply it.
        prefill_mode, extra_body: as for :class:`~mstudy.teachers.remote.RemoteTeacher`.
        completion_window: the provider's window (``"24h"``).
    """

    name = "batch"
    constrains_schema = True
    """Requests with a response schema carry ``response_format`` (JSON schema), which OpenAI
    and vLLM enforce in batches as in streaming calls."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        ledger: str | os.PathLike[str] | None = None,
        poll_interval: float = 30.0,
        max_wait: float | None = None,
        max_batch_requests: int = OPENAI_MAX_REQUESTS,
        max_batch_bytes: int = OPENAI_MAX_BYTES,
        max_submissions: int = 3,
        price_factor: float = 0.5,
        prefill_mode: PrefillMode = "continue",
        extra_body: Mapping[str, Any] | None = None,
        completion_window: str = "24h",
        timeout: float = 120.0,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigError("BatchTeacher needs model= (a model name)", parameter="model")
        for name, value, low in (
            ("poll_interval", poll_interval, 0.0),
            ("max_batch_requests", max_batch_requests, 1),
            ("max_batch_bytes", max_batch_bytes, 1),
            ("max_submissions", max_submissions, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
                raise ConfigError(
                    f"{name} must be a number >= {low}, got {value!r}", parameter=name
                )
        if not 0 < price_factor <= 1:
            raise ConfigError(
                f"price_factor must be in (0, 1], got {price_factor!r}", parameter="price_factor"
            )
        if prefill_mode not in ("continue", "assistant"):
            raise ConfigError(
                f"prefill_mode must be 'continue' or 'assistant', got {prefill_mode!r}",
                parameter="prefill_mode",
            )
        self.model = model
        self._endpoint = _endpoint(base_url) if base_url else None
        self.base_url = self._endpoint.shown if self._endpoint else None
        self._api_key = api_key if api_key is not None else _key_from_env(api_key_env)
        self.poll_interval = float(poll_interval)
        self.max_wait = max_wait
        self.max_batch_requests = int(max_batch_requests)
        self.max_batch_bytes = int(max_batch_bytes)
        self.max_submissions = int(max_submissions)
        self.price_factor = float(price_factor)
        self.prefill_mode: PrefillMode = prefill_mode
        self.extra_body = dict(extra_body or {})
        self.completion_window = completion_window
        self.timeout = timeout
        self._ledger_path = Path(ledger) if ledger is not None else None
        self._client: Any = None
        self.stats = {"batches_created": 0, "batches_adopted": 0, "resubmitted": 0, "polls": 0}

    # -- identity -----------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """Endpoint (without credentials), model, prompt format and extra body."""
        return fingerprint(
            "batch",
            {
                "endpoint": _clean_url(self._endpoint.url) if self._endpoint else None,
                "model": self.model,
                "prefill_mode": self.prefill_mode,
                "extra_body": self.extra_body,
            },
        )

    @property
    def ledger_path(self) -> Path:
        if self._ledger_path is not None:
            return self._ledger_path
        return cache_root() / "batches" / f"{self.fingerprint}.jsonl"

    def __repr__(self) -> str:
        key = "'***'" if self._api_key else "None"
        return f"BatchTeacher(model={self.model!r}, base_url={self.base_url!r}, api_key={key})"

    def _redact(self, text: str) -> str:
        secrets = [self._api_key] if self._api_key else []
        if self._endpoint is not None:
            text = text.replace(self._endpoint.url, self._endpoint.shown)
            secrets += list(self._endpoint.secrets)
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    # -- the client ---------------------------------------------------------------------
    def _openai(self) -> Any:
        if self._client is None:
            try:
                from openai import OpenAI
            except ImportError:
                raise TeacherError(
                    "the batch teacher needs the openai client: pip install 'mstudy[batch]'"
                ) from None
            self._client = OpenAI(
                api_key=self._api_key or "none",
                base_url=self._endpoint.url if self._endpoint else None,
                timeout=self.timeout,
                max_retries=5,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> BatchTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        """One API call; a failure (after the client's own retries) ends the run clearly,
        with the batches kept in the ledger for the next run."""
        try:
            return call()
        except Exception as exc:
            raise TeacherError(
                self._redact(f"batch teacher: could not {what}: {type(exc).__name__}: {exc}")
            ) from None

    # -- generate -----------------------------------------------------------------------
    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        """Submit what is new, pick up what was submitted before, yield as batches end."""
        with Ledger(self.ledger_path) as ledger:
            pending: dict[str, Request] = {}
            fresh: list[Request] = []
            for request in requests:
                if request.key in pending:
                    continue
                pending[request.key] = request
                if ledger.submission_of(request.key) is None:
                    fresh.append(request)
            self._submit(ledger, fresh, attempt=1)
            yield from self._wait(ledger, pending)

    def _submit(self, ledger: Ledger, requests: list[Request], attempt: int) -> None:
        """Write, upload and create batches for ``requests``, split at the provider's limits."""
        chunk: list[bytes] = []
        keys: list[str] = []
        size = 0
        for request in requests:
            line = input_line(
                request, self.model, prefill_mode=self.prefill_mode, extra_body=self.extra_body
            )
            if chunk and (
                len(chunk) >= self.max_batch_requests or size + len(line) > self.max_batch_bytes
            ):
                self._create(ledger, chunk, keys, attempt)
                chunk, keys, size = [], [], 0
            chunk.append(line)
            keys.append(request.key)
            size += len(line)
        if chunk:
            self._create(ledger, chunk, keys, attempt)

    def _create(self, ledger: Ledger, lines: list[bytes], keys: list[str], attempt: int) -> None:
        client = self._openai()
        upload = io.BytesIO(b"".join(lines))
        sid = uuid.uuid4().hex
        file = self._call(
            "upload a batch input file",
            lambda: client.files.create(file=(f"mstudy-{sid}.jsonl", upload), purpose="batch"),
        )
        ledger.intend(sid, file.id, keys, attempt)
        self._start(ledger, ledger.submissions[sid])

    def _start(self, ledger: Ledger, submission: Submission) -> None:
        """Create the batch of an intended submission (paid from here on)."""
        client = self._openai()
        batch = self._call(
            "create a batch",
            lambda: client.batches.create(
                input_file_id=submission.input_file_id,
                endpoint="/v1/chat/completions",
                completion_window=self.completion_window,
                metadata={"mstudy_submission": submission.id},
            ),
        )
        ledger.submitted(submission.id, batch.id)
        self.stats["batches_created"] += 1

    def _adopt(self, ledger: Ledger, submission: Submission) -> None:
        """A submission intended but not known to be created: find its batch (created just
        before a kill) by the id in its metadata, else create it now."""
        client = self._openai()
        for batch in self._call("list batches", lambda: client.batches.list(limit=100)):
            metadata = getattr(batch, "metadata", None) or {}
            if metadata.get("mstudy_submission") == submission.id:
                ledger.submitted(submission.id, batch.id)
                self.stats["batches_adopted"] += 1
                return
        self._start(ledger, submission)

    def _wait(self, ledger: Ledger, pending: dict[str, Request]) -> Iterator[Completion]:
        started = time.monotonic()
        while pending:
            open_ids: dict[str, Submission] = {}
            for key in pending:
                submission = ledger.submission_of(key)
                assert submission is not None
                open_ids.setdefault(submission.id, submission)
            progressed = False
            for submission in open_ids.values():
                if submission.batch_id is None:
                    self._adopt(ledger, submission)
                if not submission.resolved:
                    self._poll(ledger, submission)
                if submission.resolved:
                    progressed = True
                    yield from self._collect(ledger, submission, pending)
            if pending and not progressed:
                if self.max_wait is not None and time.monotonic() - started > self.max_wait:
                    raise TeacherError(
                        f"batch teacher: {len(pending)} requests still waiting after "
                        f"{self.max_wait:g} s; their batches are kept in {self.ledger_path} "
                        "and a later run picks them up"
                    )
                time.sleep(self.poll_interval)

    def _poll(self, ledger: Ledger, submission: Submission) -> None:
        client = self._openai()
        batch_id = submission.batch_id
        batch = self._call("check a batch", lambda: client.batches.retrieve(batch_id))
        self.stats["polls"] += 1
        status = str(batch.status)
        if status not in TERMINAL:
            return
        errors = []
        for error in getattr(getattr(batch, "errors", None), "data", None) or []:
            errors.append(
                " ".join(f"{getattr(error, 'code', '') or ''}: {error.message or ''}".split())
            )
        ledger.resolved(submission.id, status, batch.output_file_id, batch.error_file_id, errors)

    def _collect(
        self, ledger: Ledger, submission: Submission, pending: dict[str, Request]
    ) -> Iterator[Completion]:
        """Completions for the pending keys of a resolved submission; the rest resubmitted."""
        mine = [key for key in submission.keys if key in pending]
        found: dict[str, BatchResult | BatchFailure] = {}
        for file_id in (submission.output_file_id, submission.error_file_id):
            if file_id:
                for line in read_results(self._download(file_id)):
                    found.setdefault(line.custom_id, line)
        again: list[Request] = []
        for key in mine:
            request = pending[key]
            item = found.get(key)
            if isinstance(item, BatchResult):
                del pending[key]
                yield completion_for(request, item, self.fingerprint)
                continue
            if item is None:
                why = (
                    f"batch {submission.status}: " + "; ".join(submission.errors)
                    if submission.status == "failed"
                    else f"missing from the results of a {submission.status} batch"
                )
                retryable = submission.status != "failed"
            else:
                why, retryable = item.reason, item.retryable
            if retryable and submission.attempt < self.max_submissions:
                again.append(request)
                continue
            del pending[key]
            yield Completion(
                key=key,
                text="",
                finish_reason="error",
                teacher=self.fingerprint,
                error=self._redact(f"{why} (submitted {submission.attempt} times)"),
            )
        if again:
            logger.info("batch teacher: submitting %d requests again", len(again))
            self.stats["resubmitted"] += len(again)
            self._submit(ledger, again, attempt=submission.attempt + 1)

    def _download(self, file_id: str) -> list[bytes]:
        """A results file's lines; none when the provider no longer has it (its items are
        then missing, and submitted again)."""
        from openai import NotFoundError

        client = self._openai()
        try:
            content = client.files.content(file_id)
        except NotFoundError:
            logger.warning("batch teacher: results file %s is gone; asking again", file_id)
            return []
        except Exception as exc:
            raise TeacherError(
                self._redact(f"batch teacher: could not download results: {type(exc).__name__}")
            ) from None
        data: bytes = content.content
        return data.split(b"\n")


def _key_from_env(name: str | None) -> str | None:
    for env_name in [name] if name else ["MSTUDY_API_KEY", "OPENAI_API_KEY"]:
        value = os.environ.get(env_name)
        if value:
            return value
    return None
