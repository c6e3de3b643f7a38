"""JSON Lines sink: one UTF-8 JSON object per line, committed atomically on close."""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import enum
import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Any

from mstudy.sinks.base import _STR_KEYS, AtomicFile, BaseSink, _as_row
from mstudy.sinks.sharded import ShardWriter

__all__ = ["JSONLSink", "dumps_row", "dumps_rows", "to_jsonable"]


def _json_default(value: Any) -> Any:
    """Convert one non-JSON value to a JSON-ready one (called by ``json.dumps``)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"$base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, (set, frozenset)):
        items = [to_jsonable(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, default=str))
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (Decimal, uuid.UUID, PurePath)):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    for method in ("to_row", "to_dict"):
        convert = getattr(value, method, None)
        if callable(convert):
            return convert()
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, pyarrow scalars
    if callable(tolist):
        return tolist()
    as_py = getattr(value, "as_py", None)
    if callable(as_py):
        return as_py()
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__"):
        try:
            return list(value)
        except TypeError:
            pass
    return str(value)


_MAX_DEPTH = 200


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """Reduce ``value`` to strict JSON types: non-finite floats become None, keys strings.

    Structures nested deeper than 200 levels (or circular ones) are cut off as ``str``.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if _depth > _MAX_DEPTH:
        return str(value)
    if isinstance(value, Mapping):
        return {_key(k): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, _depth + 1) for v in value]
    converted = _json_default(value)
    if isinstance(converted, str):
        return converted
    return to_jsonable(converted, _depth + 1)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    plain = to_jsonable(key)
    return plain if isinstance(plain, str) else json.dumps(plain, ensure_ascii=False)


_encode = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, default=_json_default, check_circular=False
).encode
"""A cycle ends in RecursionError, and :func:`to_jsonable` cuts it off instead."""


def dumps_row(row: Mapping[str, Any]) -> bytes:
    """One row as a UTF-8 JSON line (with the trailing newline); never raises on odd values.

    Text is kept as it is (``ensure_ascii=False``); non-JSON values are converted (numpy to
    Python numbers/lists, bytes to text or ``{"$base64": ...}``, sets to sorted lists, dates
    to ISO strings, anything else to ``str``); NaN and infinities become ``null``. Strings
    that cannot be UTF-8 encoded (lone surrogates) are written as ``\\u`` escapes.
    """
    text = _row_text(row)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(json.loads(text), ensure_ascii=True).encode("ascii") + b"\n"


def dumps_rows(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """``b"".join(map(dumps_row, rows))``, with the text of all rows encoded at once."""
    rows = list(rows)
    texts = list(map(_row_text, rows))
    texts.append("")
    try:
        return "\n".join(texts).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate somewhere: escape those rows alone
        return b"".join(map(dumps_row, rows))


def _row_text(row: Mapping[str, Any]) -> str:
    try:
        text: str = _encode(row)
    except (TypeError, ValueError, RecursionError):
        text = json.dumps(to_jsonable(row), ensure_ascii=False, allow_nan=False)
    return text


class JSONLSink(BaseSink):
    """Writes rows as JSON Lines to ``path``, atomically replacing it on ``close()``.

    With ``append=True`` the rows are added after the existing file's content (the whole
    file is still replaced atomically on close, so readers never see a half-written line).
    With ``rows_per_shard`` the output is a directory of parts and a ``manifest.json``
    written by ``workers`` threads and committed as a whole (:mod:`mstudy.sinks.sharded`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        append: bool = False,
        rows_per_shard: int | None = None,
        workers: int | None = None,
        executor: str = "thread",
    ) -> None:
        super().__init__()
        self.append = append
        self._file: AtomicFile | None = None
        self._shards: ShardWriter | None = None
        if rows_per_shard is None:
            if workers is not None or executor != "thread":
                raise ValueError("workers and executor need rows_per_shard (a sharded output)")
            self._file = AtomicFile(path, append=append, newline_terminated=True)
            self.path: Path = self._file.target
            return
        if append:
            raise ValueError("append=True cannot be used with rows_per_shard")
        self._shards = ShardWriter(
            path,
            suffix=".jsonl",
            encode=dumps_rows,
            rows_per_shard=rows_per_shard,
            workers=workers,
            executor=executor,
        )
        self.path = self._shards.path

    def _describe(self) -> str:
        return str(self.path)

    def label_study(self, study: str) -> None:
        """Record the study (the sha256 of its fingerprint) in a sharded output's manifest."""
        if self._shards is not None:
            self._shards.study = study

    def _batch(self, rows: Iterable[Any]) -> list[Any]:
        # rows are encoded at once and not kept (sharded too): plain dicts need no copy
        return [
            row if type(row) is dict and _STR_KEYS.issuperset(map(type, row)) else _as_row(row, i)
            for i, row in enumerate(rows)
        ]

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if self._shards is not None:
            self._shards.add(rows)
        else:
            assert self._file is not None
            self._file.write(dumps_rows(rows))

    def _prepare(self) -> None:
        if self._shards is not None:
            self._shards.prepare()

    def _commit(self) -> None:
        if self._shards is not None:
            self._shards.commit()
        else:
            assert self._file is not None
            self._file.commit()

    def _discard(self) -> None:
        if self._shards is not None:
            self._shards.discard()
        else:
            assert self._file is not None
            self._file.discard()
