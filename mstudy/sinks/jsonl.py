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

from mstudy.jsoncodec import reusable
from mstudy.records import RESERVED_COLUMNS, Example
from mstudy.sinks.base import AtomicFile, BaseSink, _as_row

__all__ = ["JSONLSink", "dumps_example", "dumps_row", "to_jsonable"]


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


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_json_default)
_encode = reusable(_ENCODER)


def dumps_row(row: Mapping[str, Any]) -> bytes:
    """One row as a UTF-8 JSON line (with the trailing newline); never raises on odd values.

    Text is kept as it is (``ensure_ascii=False``); non-JSON values are converted (numpy to
    Python numbers/lists, bytes to text or ``{"$base64": ...}``, sets to sorted lists, dates
    to ISO strings, anything else to ``str``); NaN and infinities become ``null``. Strings
    that cannot be UTF-8 encoded (lone surrogates) are written as ``\\u`` escapes.
    """
    try:
        text = _encode(row)
    except (TypeError, ValueError, RecursionError):
        text = json.dumps(to_jsonable(row), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(json.loads(text), ensure_ascii=True).encode("ascii") + b"\n"


_quote = json.encoder.encode_basestring
_STR = frozenset({str})


def dumps_example(example: Example) -> bytes:
    """``dumps_row(example.to_row())``, byte for byte, without building the row's dicts.

    The row's columns are written around the example's own encoded fields. Anything the
    direct path does not cover (a field named like a column, a non-string key or id, a
    value the encoder rejects) takes ``dumps_row``.
    """
    fields, p = example.fields, example.provenance
    if (
        type(fields) is not dict
        or not RESERVED_COLUMNS.isdisjoint(fields)
        or not _STR.issuperset(map(type, fields))
        or type(p.sample) is not int
    ):
        return dumps_row(example.to_row())
    try:
        own = _encode(fields)[1:-1]
        source = _quote(p.source_id)
        strategy = _quote(p.strategy)
        ids = _encode(list(p.source_ids)) if p.source_ids else f"[{source}]"
        text = (
            f'{{"id": {_quote(example.id)}, "source_id": {source}, "strategy": {strategy}, '
            f"{own}{', ' if own else ''}"
            f'"provenance": {{"source_id": {source}, "source_ids": {ids}, '
            f'"strategy": {strategy}, "strategy_version": {_quote(p.strategy_version)}, '
            f'"template_hash": {_quote(p.template_hash)}, "teacher": {_quote(p.teacher)}, '
            f'"params": {_encoded_params(p.params, p.strategy)}, "sample": {p.sample}, '
            f'"finish_reason": {_quote(p.finish_reason)}}}}}\n'
        )
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError):
        return dumps_row(example.to_row())


_KEPT_PARAMS = 256
_kept_params: dict[tuple[Any, ...], tuple[dict[str, Any], str]] = {}


def _encoded_params(params: Mapping[str, Any], owner: str = "") -> str:
    """``params`` encoded; the text of a recent equal value is reused where that is exact.

    Every example of a strategy (``owner``) carries the same generation params, each in a
    dict of its own. A kept text is reused for a dict with the same owner, the same keys in
    the same order, values of the same types, and equal values; it is kept only for values
    whose equality implies an equal encoding (strings, ints, bools, None, finite non-zero
    floats, lists of strings): ``1 == True`` and ``0.0 == -0.0`` are equal but are written
    differently.
    """
    if type(params) is not dict:
        return _encode(params)
    shape = (owner, *params, *map(type, params.values()))
    kept = _kept_params.get(shape)
    if kept is not None and kept[0] == params:
        return kept[1]
    text = _encode(params)
    if _settled(params):
        if len(_kept_params) >= _KEPT_PARAMS:
            _kept_params.clear()
        snapshot = {k: list(v) if type(v) is list else v for k, v in params.items()}
        _kept_params[shape] = (snapshot, text)
    return text


def _settled(params: dict[Any, Any]) -> bool:
    """Whether every dict equal to ``params`` with the same key order and value types is
    encoded as ``params`` is."""
    for key, value in params.items():
        kind = type(value)
        if type(key) is not str:
            return False
        if kind is float:
            if value == 0 or not math.isfinite(value):
                return False
        elif kind is list or kind is tuple:
            if not all(type(item) is str for item in value):
                return False
        elif kind is not str and kind is not int and kind is not bool and value is not None:
            return False
    return True


class JSONLSink(BaseSink):
    """Writes rows as JSON Lines to ``path``, atomically replacing it on ``close()``.

    With ``append=True`` the rows are added after the existing file's content (the whole
    file is still replaced atomically on close, so readers never see a half-written line).
    """

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        super().__init__()
        self._file = AtomicFile(path, append=append, newline_terminated=True)
        self.path: Path = self._file.target
        self.append = append

    def _describe(self) -> str:
        return str(self.path)

    def _batch(self, rows: Iterable[Any]) -> list[Any]:
        # Examples stay as they are: dumps_example writes them without a row dict
        return [row if type(row) is Example else _as_row(row, i) for i, row in enumerate(rows)]

    def _write(self, rows: list[Any]) -> None:
        self._file.write(
            b"".join(dumps_example(row) if type(row) is Example else dumps_row(row) for row in rows)
        )

    def _commit(self) -> None:
        self._file.commit()

    def _discard(self) -> None:
        self._file.discard()
