"""The four interfaces of mstudy, as structural protocols: no base class is required.

A third-party object that has the right attributes and methods plugs in as it is; the helper
classes in :mod:`mstudy.strategies.base`, :mod:`mstudy.filters.base` and
:mod:`mstudy.sinks.base` only save typing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from mstudy.records import Completion, Example, Record, Rejection, Request


@runtime_checkable
class Teacher(Protocol):
    """Turns requests into completions.

    ``generate`` pulls requests lazily from the iterable and yields completions as they are
    done, in any order; each carries its request's ``key``. A remote backend keeps N requests
    in flight and refills the window as each returns; a local backend takes batches of B. A
    request that fails for good yields a completion with ``finish_reason="error"``, never
    nothing. ``fingerprint`` is stable and covers everything that changes outputs (model,
    revision, dtype, prompt format, defaults), never secrets.
    """

    @property
    def name(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]: ...


@runtime_checkable
class Strategy(Protocol):
    """Renders a record into requests, and parses each completion into examples or rejections.

    ``requests`` raises :class:`~mstudy.errors.RecordError` when the record lacks what the
    strategy needs; the study records that as a rejection and goes on.
    """

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def requests(self, record: Record) -> Sequence[Request]: ...

    def parse(
        self, record: Record, request: Request, completion: Completion
    ) -> Sequence[Example | Rejection]: ...


@runtime_checkable
class Filter(Protocol):
    """Keeps an example (possibly annotated) or rejects it with a reason.

    Filters see examples in stream order and may keep state across them (deduplication).
    """

    @property
    def name(self) -> str: ...

    def check(self, example: Example) -> Example | Rejection: ...


@runtime_checkable
class Sink(Protocol):
    """Stores rows. ``close`` commits them; ``abort`` leaves nothing that looks complete."""

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def __enter__(self) -> Sink: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
