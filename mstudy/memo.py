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
study, and an example that matches it is stored as its id, fields, template hash, sample and
finish reason alone. The key already holds the teacher's and the strategies' fingerprints, so
a payload is only ever read back under the same shared values.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import sys
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mstudy.hashing import canonical_json
from mstudy.jsoncodec import reusable
from mstudy.records import (
    Completion,
    Example,
    GenerationParams,
    Provenance,
    Record,
    Rejection,
    _params_dict,
)

if TYPE_CHECKING:
    from mstudy.interfaces import Strategy

FORMAT = "mstudy.outcome.v2"
_JSON = reusable(json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False))
_PLAIN_SCALARS = (str, int, bool, type(None))
_DECODER = json.JSONDecoder()
_scan: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _loads(payload: str) -> Any:
    """``json.loads(payload)`` for the compact JSON ``encode`` writes, without the decoder's
    white-space matching; anything else takes the full decoder (and its error)."""
    try:
        value, end = _scan(payload, 0)
    except (StopIteration, ValueError):
        end = -1
    return value if end == len(payload) else _DECODER.decode(payload)


Results = dict[tuple[int, int], list[Example | Rejection]]


class Shared:
    """Per strategy (by index in the study): the name, version, teacher fingerprint and
    generation params its examples carry unless they say otherwise."""

    __slots__ = ("strategies",)

    def __init__(self, teacher_fingerprint: str, strategies: Sequence[Strategy]) -> None:
        self.strategies: list[tuple[str, str, str, dict[str, Any] | None]] = []
        for strategy in strategies:
            params = getattr(strategy, "params", None)
            self.strategies.append(
                (
                    strategy.name,
                    str(strategy.version),
                    teacher_fingerprint,
                    _params_dict(params) if isinstance(params, GenerationParams) else None,
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


def memo_prefix(teacher_fingerprint: str, strategies: Sequence[Strategy]) -> str | None:
    """The part of every outcome key that the study fixes; None when a strategy opts out."""
    if not strategies or not all(getattr(s, "memoizable", False) for s in strategies):
        return None
    fingerprints = [getattr(s, "fingerprint", None) for s in strategies]
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
    """A record's outcome as JSON; None when it must not be stored (a failed call, a value
    that JSON would change). Examples that match ``shared`` for ``record_id`` are stored
    without the shared values; :func:`decode` needs the same two to read them back."""
    if any(not c.ok for _, c in completions):
        return None
    items: list[Any] = []
    for (s_index, r_index), found in results.items():
        row: list[Any] = [s_index, r_index]
        for item in found:
            if isinstance(item, Example):
                p = item.provenance
                entry = ["e", item.id, item.fields, p.template_hash, p.sample, p.finish_reason]
                if shared is None or not shared.matches(s_index, record_id, p):
                    entry[0] = "E"
                    entry += [
                        p.source_id,
                        p.strategy,
                        p.strategy_version,
                        p.teacher,
                        dict(p.params),
                        list(p.source_ids),
                    ]
                row.append(entry)
            else:
                if item.stage == "teacher":
                    return None
                row.append(
                    [
                        "r",
                        item.source_id,
                        item.stage,
                        item.reason,
                        item.detail,
                        item.strategy,
                        item.field,
                        None if item.row is None else dict(item.row),
                    ]
                )
        items.append(row)
    calls = [
        [name, c.finish_reason, c.prompt_tokens, c.completion_tokens] for name, c in completions
    ]
    payload = [items, requests, calls]
    if not _plain(payload):
        return None
    return _JSON(payload)


def decode(
    payload: str, record_id: str = "", shared: Shared | None = None
) -> tuple[Results, dict[str, int], dict[str, tuple[int, int, int]]]:
    """The outcome ``encode`` stored: results, requests per strategy, and the calls per
    strategy as ``(calls, prompt_tokens, completion_tokens)``, all of them cached now.
    ``record_id`` and ``shared`` must be those it was encoded with."""
    items, requests, calls = _loads(payload)
    results: Results = {}
    for row in items:
        out: list[Example | Rejection] = []
        s_index = row[0]
        common: tuple[str, str, str, dict[str, Any] | None] | None = None
        for v in row[2:]:
            kind = v[0]
            if kind == "e":
                if common is None:
                    if shared is None:
                        raise ValueError("this outcome was stored with shared values; pass them")
                    common = shared.strategies[s_index]
                name, version, teacher, params = common
                p = Provenance(
                    record_id, name, version, v[3], teacher, dict(params or ()), v[4], v[5]
                )
                out.append(Example(v[1], v[2], p))
            elif kind == "E":
                p = Provenance(v[6], v[7], v[8], v[3], v[9], v[10], v[4], v[5], tuple(v[11]))
                out.append(Example(v[1], v[2], p))
            else:
                out.append(Rejection(v[1], v[2], v[3], v[4], v[5], v[6], v[7]))
        results[(s_index, row[1])] = out
    totals: dict[str, tuple[int, int, int]] = {}
    for name, _finish, prompt, completion in calls:
        n, p_sum, c_sum = totals.get(name, (0, 0, 0))
        totals[name] = (n + 1, p_sum + prompt, c_sum + completion)
    return results, requests, totals


def _plain(value: Any) -> bool:
    """Whether JSON gives ``value`` back unchanged (lists, str-keyed dicts, finite numbers)."""
    if isinstance(value, _PLAIN_SCALARS):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if type(value) is list:
        return all(_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


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
