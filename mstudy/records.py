"""The values on the data path: Record -> Request -> Completion -> Example | Rejection."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from mstudy._hashing import canonical_json, stable_hash
from mstudy.errors import ConfigError, RecordError

FinishReason = Literal["stop", "length", "error"]
RESERVED_COLUMNS = frozenset({"id", "source_id", "strategy", "provenance"})


def id_problem(fields: Mapping[Any, Any], id_field: str) -> str | None:
    """Why a row's id field cannot be its id (None when it can, or when it is absent): an id
    is a string or an integer, and not blank."""
    raw = fields.get(id_field)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return f"field {id_field!r} must be a string or integer id, got {type(raw).__name__}"
    if not str(raw).strip():
        return f"field {id_field!r} is empty"
    return None


@dataclass(frozen=True, slots=True)
class Record:
    """One source row: a stable ``id`` and its fields.

    The id is taken from the data (``id_field``) when present, otherwise it is a content hash of
    the fields, identical across runs, processes and machines.
    """

    id: str
    fields: Mapping[str, Any]
    index: int = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], index: int = 0, id_field: str = "id") -> Record:
        """Build a record from a source row, deriving its id."""
        if not isinstance(data, Mapping):
            raise RecordError(
                f"record #{index}: expected a mapping of fields, got {type(data).__name__}",
                record_id=f"#{index}",
                reason="not_a_mapping",
            )
        fields = dict(data)
        if id_field in fields and fields[id_field] is not None:
            problem = id_problem(fields, id_field)
            if problem is not None:
                raise RecordError(
                    f"record #{index}: {problem}",
                    record_id=f"#{index}",
                    field=id_field,
                    reason="invalid_record",
                )
            record_id = str(fields[id_field])
        else:
            record_id = stable_hash(fields)
        return cls(id=record_id, fields=fields, index=index)

    def text(self, name: str, *, max_chars: int | None = None) -> str:
        """Return field ``name`` as a non-empty string, or raise a RecordError naming it."""
        if name not in self.fields:
            available = ", ".join(sorted(map(str, self.fields))) or "none"
            raise RecordError(
                f"record {self.id!r}: missing field {name!r} (fields present: {available})",
                record_id=self.id,
                field=name,
                reason="missing field",
            )
        value = self.fields[name]
        if not isinstance(value, str):
            raise RecordError(
                f"record {self.id!r}: field {name!r} must be a string, got {type(value).__name__}",
                record_id=self.id,
                field=name,
                reason="bad field",
            )
        if not value.strip():
            raise RecordError(
                f"record {self.id!r}: field {name!r} is empty",
                record_id=self.id,
                field=name,
                reason="bad field",
            )
        if max_chars is not None and len(value) > max_chars:
            raise RecordError(
                f"record {self.id!r}: field {name!r} has {len(value)} characters, "
                f"more than the limit of {max_chars}",
                record_id=self.id,
                field=name,
                reason="bad field",
            )
        return value


class Message(NamedTuple):
    """One chat message (immutable; compared and hashed by its content)."""

    role: Literal["system", "user", "assistant"]
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling settings of one request. ``seed`` makes sampling reproducible where supported."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    response_schema: str | None = None
    """A JSON Schema the reply must satisfy, as canonical JSON (a mapping is converted), or
    ``None``. Teachers that declare :class:`~mstudy.interfaces.SchemaConstrained` constrain
    decoding to it; the parse step validates against it either way."""
    _dict: dict[str, Any] = field(init=False, repr=False, compare=False, hash=False)
    _canonical: bytes = field(init=False, repr=False, compare=False, hash=False)
    """The canonical JSON that request keys hash, computed once."""

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ConfigError:
            return ConfigError(
                f"{name} must be {rule}, got {getattr(self, name)!r}", parameter=name
            )

        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise bad("max_new_tokens", "an integer >= 1")
        if not _is_number(self.temperature) or not self.temperature >= 0:
            raise bad("temperature", "a number >= 0")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise bad("top_p", "a number in (0, 1]")
        if self.seed is not None and not _is_int(self.seed):
            raise bad("seed", "an integer")
        if not isinstance(self.stop, (str, list, tuple)) or not all(
            isinstance(s, str) for s in ([self.stop] if isinstance(self.stop, str) else self.stop)
        ):
            raise bad("stop", "a string or a list of strings")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if isinstance(self.response_schema, Mapping):
            object.__setattr__(self, "response_schema", canonical_json(dict(self.response_schema)))
        elif self.response_schema is not None and not isinstance(self.response_schema, str):
            raise bad("response_schema", "a JSON Schema (a mapping or its JSON text)")
        as_dict: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop),
        }
        if self.response_schema is not None:
            # Only when set, so that the keys of requests without a schema stay as they were.
            as_dict["response_schema"] = self.response_schema
        object.__setattr__(self, "_dict", as_dict)
        object.__setattr__(self, "_canonical", canonical_json(as_dict).encode("utf-8"))

    def schema(self) -> dict[str, Any] | None:
        """The response schema as a new dict, or ``None``."""
        return None if self.response_schema is None else json.loads(self.response_schema)

    def to_dict(self) -> dict[str, Any]:
        """The params as a new plain dict (the form provenance and JSON rows carry)."""
        return {**self._dict, "stop": list(self.stop)}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> GenerationParams:
        """Build from a mapping; unknown keys raise a ValueError naming them."""
        if not data:
            return cls()
        known = {"max_new_tokens", "temperature", "top_p", "seed", "stop", "response_schema"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown generation parameter(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(known))}",
                parameter=unknown[0],
            )
        return cls(**dict(data))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _digest_message(digest: Any, message: Message) -> None:
    content = message.content.encode("utf-8")
    digest.update(f"{message.role}:{len(content)}:".encode())
    digest.update(content)


@lru_cache(maxsize=64)
def _head_digest(messages: tuple[Message, ...]) -> Any:
    """SHA-256 state after all messages but the last: the system and few-shot turns that
    every request of a strategy repeats are hashed once (callers copy the state)."""
    digest = hashlib.sha256(b"mstudy.request.v1\x00")
    for message in messages:
        _digest_message(digest, message)
    return digest


@dataclass(frozen=True, slots=True)
class Request:
    """A chat request to a teacher, for one sample of one record under one strategy.

    ``key`` is a content hash of everything that shapes the reply (messages, params, sample,
    prefill); completions carry it back, so they may arrive in any order. ``prefill`` is text
    the reply is forced to begin with. ``variables`` are the rendered template's inputs, kept
    for parsers and scripted teachers; they do not enter the key.
    """

    messages: tuple[Message, ...]
    params: GenerationParams = field(default_factory=GenerationParams)
    sample: int = 0
    prefill: str | None = None
    source_id: str = ""
    strategy: str = ""
    strategy_version: str = ""
    variables: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    key: str = field(init=False, default="")
    template_hash: str = field(init=False, default="")

    def __post_init__(self) -> None:
        digest = _head_digest(self.messages[:-1]).copy()
        for message in self.messages[-1:]:
            _digest_message(digest, message)
        prefill = b"-" if self.prefill is None else b"+" + self.prefill.encode("utf-8")
        digest.update(f"prefill:{len(prefill)}:".encode())
        digest.update(prefill)
        object.__setattr__(self, "template_hash", digest.copy().hexdigest()[:16])
        digest.update(self.params._canonical)
        digest.update(f"sample:{self.sample}".encode())
        object.__setattr__(self, "key", digest.hexdigest()[:32])

    @property
    def seed(self) -> int | None:
        """Per-sample seed derived from ``params.seed``: distinct samples, reproducible runs."""
        if self.params.seed is None:
            return None
        return int(stable_hash([self.params.seed, self.sample, self.template_hash], 8), 16) % (
            2**31 - 1
        )

    def chat(self) -> list[dict[str, str]]:
        """Messages as plain dicts, the shape chat templates and APIs take."""
        return [m.to_dict() for m in self.messages]


@dataclass(frozen=True, slots=True)
class Completion:
    """A teacher's reply to one request, matched to it by ``key``.

    ``text`` includes the request's prefill when there was one. ``finish_reason`` is
    ``"error"`` when the call failed for good; ``error`` then says why.
    """

    key: str
    text: str
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    teacher: str = ""
    error: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.finish_reason != "error"


class Provenance(NamedTuple):
    """Where an example came from; every output row carries one (immutable; ``_replace``
    makes a changed copy)."""

    source_id: str
    strategy: str
    strategy_version: str
    template_hash: str
    teacher: str
    params: Mapping[str, Any]
    sample: int
    finish_reason: str = "stop"
    source_ids: tuple[str, ...] = ()
    generation: int = 1
    """How many studies away from original data: an example of a source record is generation
    1, an example of a generation-1 row generation 2 (:mod:`mstudy.lineage`)."""
    parents: tuple[str, ...] = ()
    """The ids of the rows it came from, oldest first, back to the source record (empty:
    ``source_ids``, or ``source_id``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "source_ids": list(self.source_ids or (self.source_id,)),
            "generation": self.generation,
            "parents": list(self.parents or self.source_ids or (self.source_id,)),
            "strategy": self.strategy,
            "strategy_version": self.strategy_version,
            "template_hash": self.template_hash,
            "teacher": self.teacher,
            "params": dict(self.params),
            "sample": self.sample,
            "finish_reason": self.finish_reason,
        }


@dataclass(slots=True)
class Example:
    """An accepted output row: the strategy's ``fields`` plus provenance."""

    id: str
    fields: dict[str, Any]
    provenance: Provenance

    @classmethod
    def from_completion(
        cls,
        request: Request,
        completion: Completion,
        fields: Mapping[str, Any],
        index: int = 0,
        source_ids: tuple[str, ...] = (),
    ) -> Example:
        """Build an example for ``request``; ``index`` numbers several rows from one reply."""
        if not RESERVED_COLUMNS.isdisjoint(fields):
            clash = sorted(RESERVED_COLUMNS & set(fields))
            raise ValueError(f"example fields may not be named {', '.join(clash)}")
        provenance = Provenance(
            source_id=request.source_id,
            strategy=request.strategy,
            strategy_version=request.strategy_version,
            template_hash=request.template_hash,
            teacher=completion.teacher,
            params=request.params.to_dict(),
            sample=request.sample,
            finish_reason=completion.finish_reason,
            source_ids=source_ids,
        )
        example_id = stable_hash([request.source_id, request.strategy, request.key, index])
        return cls(id=example_id, fields=dict(fields), provenance=provenance)

    @property
    def source_id(self) -> str:
        return self.provenance.source_id

    @property
    def strategy(self) -> str:
        return self.provenance.strategy

    @property
    def text(self) -> str:
        """The example's ``text`` field ("" when it has none)."""
        value = self.fields.get("text", "")
        return value if isinstance(value, str) else str(value)

    def to_row(self) -> dict[str, Any]:
        """A flat, JSON-ready row: id, source_id, strategy, the fields, provenance."""
        return {
            "id": self.id,
            "source_id": self.source_id,
            "strategy": self.strategy,
            **self.fields,
            "provenance": self.provenance.to_dict(),
        }

    def reject(self, stage: str, reason: str, detail: str = "") -> Rejection:
        """A rejection of this example at ``stage``."""
        return Rejection(
            source_id=self.source_id,
            stage=stage,
            reason=reason,
            detail=detail,
            strategy=self.strategy,
            row=self.to_row(),
        )


@dataclass(frozen=True, slots=True)
class Rejection:
    """Something that did not become an example, and why.

    ``stage`` is where it stopped (``input``, ``render``, ``teacher``, ``parse`` or
    ``filter:<name>``); ``reason`` is a short stable category the report groups by and
    ``detail`` the specifics (which field, what value).
    """

    source_id: str
    stage: str
    reason: str
    detail: str = ""
    strategy: str | None = None
    field: str | None = None
    row: Mapping[str, Any] | None = None

    def to_row(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "stage": self.stage,
            "reason": self.reason,
            "detail": self.detail,
            "strategy": self.strategy,
            "field": self.field,
            "row": dict(self.row) if self.row is not None else None,
        }


__all__ = [
    "RESERVED_COLUMNS",
    "Completion",
    "Example",
    "GenerationParams",
    "Message",
    "Provenance",
    "Record",
    "Rejection",
    "Request",
]
