"""Outcome memo: a re-run with a call cache reads each record's parsed outcome back at once.

The call cache stores raw replies, so a re-run makes no teacher call; it would still render
every prompt, look up every call and parse every reply again. A record's *outcome* (the
examples its replies parse into, and its render/parse rejections, before any filter) is a
function of the record, the strategies, the teacher's replies and the code that parses them.
With a cache, each finished outcome is stored under a key of all four, and a re-run of the
same study reads a record's outcome back in one lookup. Filters and sinks always run again:
change a filter, re-run, and only the filtering is redone.

The key holds the record (id and fields), the teacher's and the strategies' fingerprints, and
a hash of the source files of mstudy and of each strategy's modules (for a class defined in a
notebook, its source; when that cannot be found, nothing is memoised), so editing a parser
invalidates its outcomes. Strategies whose requests depend on more than the record (the
corpus of ``connect``) or whose verdicts may vary between runs (programs that ``pot`` runs
under a time limit) set ``memoizable = False``, and records are then parsed afresh. Outcomes
with a failed call are never stored: the call is made again. Values that would not survive
JSON unchanged (tuples, non-string keys, NaN, other types) leave the record unmemoized.

What every example of a strategy shares (its name and version, the teacher, the generation
params, the record's id) is not repeated in each payload: :class:`Shared` takes it from the
study, and an example that matches it is stored without a ``provenance`` member. The key
already holds the teacher's and the strategies' fingerprints, so a payload is only ever read
back under the same shared values.

A payload is a JSON object of this documented, versioned form (``FORMAT``)::

    {"format": "mstudy.outcome.v3",
     "results": [{"strategy": 0, "request": 1, "items": [ITEM, ...]}, ...],
     "requests": {"reverse": 2, ...},
     "calls": {"reverse": {"calls": 2, "prompt_tokens": 80, "completion_tokens": 24}, ...}}

    ITEM = {"example": {"id", "fields", "template_hash",
                        "sample"? (default 0), "finish_reason"? (default "stop"),
                        "provenance"?: {the Provenance fields, when not the shared ones}}}
         | {"rejection": {the Rejection fields}}

``request`` is -1 for a strategy's render rejection. A payload of another format is not read:
the record is parsed afresh from the cached calls.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mstudy._hashing import canonical_json
from mstudy.interfaces import Fingerprinted, Memoizable, Parametrised
from mstudy.records import (
    Completion,
    Example,
    GenerationParams,
    Provenance,
    Record,
    Rejection,
)

if TYPE_CHECKING:
    from mstudy.interfaces import Strategy

FORMAT = "mstudy.outcome.v3"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_PLAIN_SCALARS = (str, int, bool, type(None))

Results = dict[tuple[int, int], list[Example | Rejection]]


class Shared:
    """Per strategy (by index in the study): the name, version, teacher fingerprint and
    generation params its examples carry unless they say otherwise."""

    __slots__ = ("strategies",)

    def __init__(self, teacher_fingerprint: str, strategies: Sequence[Strategy]) -> None:
        self.strategies: list[tuple[str, str, str, dict[str, Any] | None]] = []
        for strategy in strategies:
            params = strategy.params if isinstance(strategy, Parametrised) else None
            self.strategies.append(
                (
                    strategy.name,
                    str(strategy.version),
                    teacher_fingerprint,
                    params.to_dict() if isinstance(params, GenerationParams) else None,
                )
            )

    def matches(self, s_index: int, record_id: str, provenance: Provenance) -> bool:
        """Whether ``provenance`` holds nothing but the shared values and ``record_id``."""
        if not 0 <= s_index < len(self.strategies) or provenance.source_ids:
            return False
        name, version, teacher, params = self.strategies[s_index]
        return (
            params is not None
            and provenance.source_id == record_id
            and provenance.strategy == name
            and provenance.strategy_version == version
            and provenance.teacher == teacher
            and provenance.params == params
        )

    def provenance(self, s_index: int, record_id: str, entry: dict[str, Any]) -> Provenance:
        """The provenance of a stored example that left out the shared values."""
        name, version, teacher, params = self.strategies[s_index]
        return Provenance(
            record_id,
            name,
            version,
            entry["template_hash"],
            teacher,
            dict(params or ()),
            entry.get("sample", 0),
            entry.get("finish_reason", "stop"),
        )


def memo_prefix(teacher_fingerprint: str, strategies: Sequence[Strategy]) -> str | None:
    """The part of every outcome key that the study fixes; None when a strategy opts out."""
    if not strategies or not all(isinstance(s, Memoizable) and s.memoizable for s in strategies):
        return None
    fingerprints = [s.fingerprint if isinstance(s, Fingerprinted) else None for s in strategies]
    if not all(isinstance(f, str) for f in fingerprints):
        return None
    classes = {cls for s in strategies for cls in type(s).__mro__ if cls is not object}
    modules = tuple(sorted({cls.__module__ for cls in classes}))
    interactive = []  # classes defined where there is no source file (a notebook, a REPL)
    for cls in sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        if getattr(sys.modules.get(cls.__module__), "__file__", None) is None:
            try:
                interactive.append(inspect.getsource(cls))
            except (OSError, TypeError):
                return None  # its code cannot be hashed: parse afresh every time
    code = [_code_hash(modules), interactive]
    return canonical_json([FORMAT, teacher_fingerprint, fingerprints, code])


@lru_cache(maxsize=8)
def _prefix_state(prefix: str) -> Any:
    """SHA-256 state after ``prefix``, hashed once per study (callers copy it)."""
    return hashlib.sha256(prefix.encode("utf-8"))


def outcome_key(prefix: str, record: Record) -> str:
    """The key of ``record``'s outcome under a study's ``prefix``."""
    digest = _prefix_state(prefix).copy()
    digest.update(b"\x00" + record.id.encode("utf-8") + b"\x00")
    digest.update(canonical_json(record.fields).encode("utf-8"))
    key: str = digest.hexdigest()[:32]
    return key


def encode(
    results: Results,
    requests: dict[str, int],
    completions: list[tuple[str, Completion]],
    record_id: str = "",
    shared: Shared | None = None,
) -> str | None:
    """A record's outcome as a payload (see the module doc); None when it must not be stored
    (a failed call, a value that JSON would change). Examples that match ``shared`` for
    ``record_id`` leave out the shared values; :func:`decode` needs the same two."""
    if any(not c.ok for _, c in completions):
        return None
    rows: list[dict[str, Any]] = []
    for (s_index, r_index), found in results.items():
        items: list[dict[str, Any]] = []
        for item in found:
            if isinstance(item, Rejection):
                if item.stage == "teacher":
                    return None
                items.append({"rejection": item.to_row()})
                continue
            p = item.provenance
            entry: dict[str, Any] = {
                "id": item.id,
                "fields": item.fields,
                "template_hash": p.template_hash,
            }
            if p.sample != 0:
                entry["sample"] = p.sample
            if p.finish_reason != "stop":
                entry["finish_reason"] = p.finish_reason
            if shared is None or not shared.matches(s_index, record_id, p):
                entry["provenance"] = {
                    "source_id": p.source_id,
                    "strategy": p.strategy,
                    "strategy_version": p.strategy_version,
                    "teacher": p.teacher,
                    "params": dict(p.params),
                    "source_ids": list(p.source_ids),
                }
            items.append({"example": entry})
        rows.append({"strategy": s_index, "request": r_index, "items": items})
    calls: dict[str, dict[str, int]] = {}
    for name, c in completions:
        total = calls.get(name)
        if total is None:
            total = calls[name] = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
        total["calls"] += 1
        total["prompt_tokens"] += c.prompt_tokens
        total["completion_tokens"] += c.completion_tokens
    payload = {"format": FORMAT, "results": rows, "requests": requests, "calls": calls}
    if not _plain(payload):
        return None
    text: str = _dumps(payload)
    return text


def decode(
    payload: str, record_id: str = "", shared: Shared | None = None
) -> tuple[Results, dict[str, int], dict[str, tuple[int, int, int]]] | None:
    """The outcome ``encode`` stored: results, requests per strategy, and the calls per
    strategy as ``(calls, prompt_tokens, completion_tokens)``, all of them cached now; None
    for a payload of another format. ``record_id`` and ``shared`` must be those it was
    encoded with."""
    data = json.loads(payload)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    results: Results = {}
    for row in data["results"]:
        s_index = row["strategy"]
        out: list[Example | Rejection] = []
        for item in row["items"]:
            entry = item.get("example")
            if entry is None:
                r = item["rejection"]
                out.append(
                    Rejection(
                        r["source_id"],
                        r["stage"],
                        r["reason"],
                        r["detail"],
                        r["strategy"],
                        r["field"],
                        r["row"],
                    )
                )
                continue
            own = entry.get("provenance")
            if own is None:
                if shared is None:
                    raise ValueError("this outcome was stored with shared values; pass them")
                provenance = shared.provenance(s_index, record_id, entry)
            else:
                provenance = Provenance(
                    own["source_id"],
                    own["strategy"],
                    own["strategy_version"],
                    entry["template_hash"],
                    own["teacher"],
                    own["params"],
                    entry.get("sample", 0),
                    entry.get("finish_reason", "stop"),
                    tuple(own["source_ids"]),
                )
            out.append(Example(entry["id"], entry["fields"], provenance))
        results[(s_index, row["request"])] = out
    totals = {
        name: (call["calls"], call["prompt_tokens"], call["completion_tokens"])
        for name, call in data["calls"].items()
    }
    return results, data["requests"], totals


def _plain(value: Any) -> bool:
    """Whether JSON gives ``value`` back unchanged (lists, str-keyed dicts, finite numbers),
    checked without recursion (a deeply nested field must not end the run)."""
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, _PLAIN_SCALARS):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                return False
        elif type(value) is list:
            stack.extend(value)
        elif type(value) is dict:
            if not all(type(k) is str for k in value):
                return False
            stack.extend(value.values())
        else:
            return False
    return True


@lru_cache(maxsize=16)
def _code_hash(modules: tuple[str, ...]) -> str:
    """A hash of the source of mstudy and of ``modules`` (the strategies' own code)."""
    digest = hashlib.sha256()
    files = sorted(Path(__file__).parent.rglob("*.py"))
    for name in modules:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path and not Path(path).is_relative_to(Path(__file__).parent):
            files.append(Path(path))
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            data = b"?"
        digest.update(f"{path.name}:{len(data)}:".encode())
        digest.update(data)
    return digest.hexdigest()[:32]


__all__ = ["Shared", "decode", "encode", "memo_prefix", "outcome_key"]
