"""The four interfaces of mstudy and its optional capabilities, as structural protocols.

A third-party object that has the right attributes and methods plugs in as it is; the helper
classes in :mod:`mstudy.strategies.base`, :mod:`mstudy.filters.base` and
:mod:`mstudy.sinks.base` only save typing. Every optional hook (a filter's state, a batch
check, a teacher's token counter, a declared fingerprint) is a protocol of its own below,
checked with ``isinstance`` where it is used; :data:`CAPABILITIES` lists them per kind, and the
plugin registry checks plugins against :data:`CORE`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mstudy.records import Completion, Example, GenerationParams, Record, Rejection, Request

if TYPE_CHECKING:
    from mstudy.offload import Parsed, ParseJob
    from mstudy.report import EndpointStats


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
    """Stores rows. ``close`` commits them; ``abort`` leaves nothing that looks complete.

    ``write`` receives flat, JSON-ready dicts: :meth:`Example.to_row
    <mstudy.records.Example.to_row>` for accepted rows, :meth:`Rejection.to_row
    <mstudy.records.Rejection.to_row>` for a rejects sink. Every sink, built in or not, gets
    exactly these.
    """

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


# -- optional capabilities ----------------------------------------------------------------
# Each is checked with ``isinstance`` where it is used; nothing is found by ``getattr``.


@runtime_checkable
class Fingerprinted(Protocol):
    """Declares what about it changes outputs, as a stable string (never a secret).

    A strategy or filter without one is fingerprinted from its declared settings (see
    :func:`mstudy.fingerprints.fingerprint`); a teacher must have one.
    """

    @property
    def fingerprint(self) -> str: ...


@runtime_checkable
class Resettable(Protocol):
    """Keeps state over the stream (what it saw); ``reset`` forgets it. A study resets each
    such filter at the start of every run."""

    def reset(self) -> None: ...


@runtime_checkable
class Stateful(Resettable, Protocol):
    """State that survives a resumed run: ``get_state`` returns a JSON value (dicts, lists,
    strings, finite numbers, booleans, None) and ``set_state`` takes it back after a JSON round
    trip. A journaled study refuses a :class:`Resettable` filter that is not ``Stateful``."""

    def get_state(self) -> Any: ...

    def set_state(self, state: Any) -> None: ...


@runtime_checkable
class BatchFilter(Protocol):
    """Checks one record's examples in one call; the verdicts are those ``check`` would give
    one by one, in order."""

    def check_many(self, examples: Sequence[Example]) -> Sequence[Example | Rejection]: ...


@runtime_checkable
class TokenCounter(Protocol):
    """Counts a request's prompt tokens exactly (a local tokenizer), for dry runs and budgets."""

    def count_prompt_tokens(self, request: Request) -> int: ...


@runtime_checkable
class Memoizable(Protocol):
    """A strategy whose outcome for a record depends on the record and its settings alone, and
    whose verdicts are the same on every run (``memoizable`` is ``True``): a re-run with a call
    cache reads the outcome back instead of parsing again (:mod:`mstudy._memo`)."""

    memoizable: bool


@runtime_checkable
class Parametrised(Protocol):
    """A strategy whose requests all share one set of generation params (``params``); the
    outcome memo stores them once per strategy instead of once per example."""

    params: GenerationParams


@runtime_checkable
class SchemaConstrained(Protocol):
    """A teacher that constrains decoding to a request's ``params.response_schema`` with its
    engine's own mechanism (a server's JSON-schema ``response_format``, guided decoding, a
    grammar), so that replies are valid JSON of that schema. ``constrains_schema`` is
    ``False`` where this instance cannot (a server without the feature, say). Without it the
    parse step still validates every reply against the schema."""

    @property
    def constrains_schema(self) -> bool: ...


@runtime_checkable
class Discounted(Protocol):
    """A teacher whose calls cost a share of the listed price (a provider's batch API):
    a study's budget and its dry-run estimate multiply prices by ``price_factor``."""

    @property
    def price_factor(self) -> float: ...


@runtime_checkable
class ReportsEndpoints(Protocol):
    """A teacher that spreads requests over servers and counts, per server, what it sent,
    what came back and its concurrency window. A study puts them in its report; ``reset``
    starts the counts afresh (a new run) and keeps what the teacher learned."""

    def endpoint_stats(self, *, reset: bool = False) -> list[EndpointStats]: ...


@runtime_checkable
class Closable(Protocol):
    """Holds resources (a model, a connection pool, temporary files) that ``close`` frees."""

    def close(self) -> None: ...


@runtime_checkable
class Preparable(Protocol):
    """A sink whose commit can be split: ``prepare`` does everything that can fail (flush,
    convert, check), so that ``close`` afterwards only publishes. A study prepares every such
    sink before it closes any, so one failing sink leaves no other committed."""

    def prepare(self) -> None: ...


@runtime_checkable
class ParsesReplies(Protocol):
    """A teacher that parses its replies where it makes them (in its workers), and checks the
    examples with the study's per-record filters there (:mod:`mstudy.offload`).

    ``bind_parsing`` takes the study's strategies and the leading per-record filters once a
    run; it returns a binding to pass to ``generate_parsed``, or None when they cannot go to
    the workers (then the study parses in its own process). ``generate_parsed`` is
    ``generate`` for jobs (a request with its record and strategy): it yields a
    :class:`~mstudy.offload.Parsed` per completion, in any order."""

    def bind_parsing(self, strategies: Sequence[Strategy], filters: Sequence[Filter]) -> Any: ...

    def generate_parsed(self, jobs: Iterable[ParseJob], binding: Any) -> Iterator[Parsed]: ...


@runtime_checkable
class Portable(Protocol):
    """A strategy or filter that says whether it may run in a teacher's workers
    (:class:`ParsesReplies`): ``portable`` False keeps it in the study's own process (a
    filter that calls a model of its own, say). Without it, a strategy is portable, and so is
    a filter that is neither :class:`Resettable` nor :class:`Closable`."""

    portable: bool


CORE: dict[str, type] = {
    "teachers": Teacher,
    "strategies": Strategy,
    "filters": Filter,
    "sinks": Sink,
}
"""The protocol a plugin of each kind must satisfy."""

CAPABILITIES: dict[str, tuple[type, ...]] = {
    "teachers": (
        TokenCounter,
        SchemaConstrained,
        Discounted,
        ReportsEndpoints,
        Closable,
        ParsesReplies,
    ),
    "strategies": (Fingerprinted, Memoizable, Parametrised, Portable),
    "filters": (Fingerprinted, Resettable, Stateful, BatchFilter, Closable, Portable),
    "sinks": (Preparable,),
}
"""The optional capabilities a component of each kind may declare."""

_PROTOCOL_MACHINERY = frozenset({"__init__", "__subclasshook__", "__class_getitem__"})


def members(protocol: type) -> tuple[str, ...]:
    """The attributes and methods ``protocol`` asks for, in the order it declares them."""
    names: list[str] = []
    for cls in reversed(protocol.__mro__):
        if cls.__module__ in ("builtins", "typing", "typing_extensions", "abc"):
            continue
        declared = [*inspect.get_annotations(cls), *vars(cls)]
        for name in declared:
            value = vars(cls).get(name)
            public = not name.startswith("_")
            dunder_method = name.startswith("__") and callable(value)
            if name in _PROTOCOL_MACHINERY or not (public or dunder_method):
                continue
            if name not in names:
                names.append(name)
    return tuple(names)


def missing_members(component: object, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``component`` lacks (empty when it satisfies it)."""
    return [name for name in members(protocol) if not hasattr(component, name)]


def declared_capabilities(component: object, kind: str) -> list[str]:
    """The names of the optional capabilities ``component`` (a plugin of ``kind``) declares."""
    return [cap.__name__ for cap in CAPABILITIES[kind] if isinstance(component, cap)]


__all__ = [
    "CAPABILITIES",
    "CORE",
    "BatchFilter",
    "Closable",
    "Discounted",
    "Filter",
    "Fingerprinted",
    "Memoizable",
    "Parametrised",
    "ParsesReplies",
    "Portable",
    "Preparable",
    "ReportsEndpoints",
    "Resettable",
    "SchemaConstrained",
    "Sink",
    "Stateful",
    "Strategy",
    "Teacher",
    "TokenCounter",
    "declared_capabilities",
    "members",
    "missing_members",
]
