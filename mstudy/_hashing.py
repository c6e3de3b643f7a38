"""Stable content hashes: the same value gives the same hash on every run and machine."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

_FLAT = frozenset({str, int, bool, type(None)})
_STR = frozenset({str})


def _canonical(value: Any) -> Any:
    """Reduce ``value`` to plain JSON types with a deterministic layout."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if (  # a flat record: string keys, and values that are their own canonical form
        type(value) is dict
        and _FLAT.issuperset(map(type, value.values()))
        and _STR.issuperset(map(type, value))
    ):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return {"__float__": repr(value)}
        return value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if _FLAT.issuperset(map(type, value)):  # ids, names, indices: their own canonical form
            return list(value)
        return [_canonical(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"__bytes__": bytes(value).hex()}
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return _canonical(tolist())
    return {"__repr__": f"{type(value).__module__}.{type(value).__qualname__}", "value": str(value)}


_encode = json.JSONEncoder(
    sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode


def canonical_json(value: Any) -> str:
    """JSON text with sorted keys and no insignificant whitespace."""
    return _encode(_canonical(value))


def stable_hash(value: Any, length: int = 16) -> str:
    """Hex SHA-256 of the canonical JSON of ``value``, cut to ``length`` characters."""
    digest = hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
    return digest[:length]
