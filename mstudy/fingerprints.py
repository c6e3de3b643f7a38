"""Component fingerprints: what a resumed run and the outcome memo compare.

A component that is :class:`~mstudy.interfaces.Fingerprinted` declares its own. Any other is
fingerprinted from its class and its *declared settings*: its public attributes (names without
a leading underscore), whose values must hash stably — ``None``, booleans, numbers, strings,
bytes, enums, paths, components that declare a fingerprint (a judge's teacher), and lists,
tuples, sets and string-keyed dicts of those. An attribute
holding anything else (a model, a hasher, a file handle) cannot be compared across processes,
so instead of guessing from ``repr()`` (which may carry a memory address) the component is
refused with :class:`~mstudy.errors.FingerprintError` naming it and the attribute: declare a
``fingerprint``, or keep such objects in private attributes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from mstudy._hashing import stable_hash
from mstudy.errors import FingerprintError
from mstudy.interfaces import Fingerprinted

__all__ = ["fingerprint", "settings"]


def fingerprint(component: object) -> str:
    """``component``'s declared fingerprint, else a hash of its class and declared settings."""
    if isinstance(component, Fingerprinted):
        own = component.fingerprint
        if not isinstance(own, str):
            raise FingerprintError(
                f"{_label(component)}: its fingerprint is a {type(own).__name__}, not a string",
                component=_label(component),
                attribute="fingerprint",
            )
        return own
    kind = type(component)
    return stable_hash([f"{kind.__module__}.{kind.__qualname__}", settings(component)])


def settings(component: object) -> dict[str, Any]:
    """The public attributes of ``component`` as stable plain values (see the module doc)."""
    attributes = getattr(component, "__dict__", None)
    if attributes is None:  # a class with __slots__: its slots are its settings
        names = [n for cls in type(component).__mro__ for n in getattr(cls, "__slots__", ())]
        attributes = {n: getattr(component, n) for n in names if hasattr(component, n)}
    out: dict[str, Any] = {}
    for name in sorted(attributes):
        if name.startswith("_"):
            continue
        try:
            out[name] = _plain(attributes[name], 0)
        except _Unstable as exc:
            label = _label(component)
            raise FingerprintError(
                f"{label}: setting {name!r} holds a {exc.type_name}, which has no stable "
                f"fingerprint; declare a 'fingerprint' property on {type(component).__name__} "
                "(or keep that object in a private attribute, named with a leading '_')",
                component=label,
                attribute=name,
            ) from None
    return out


class _Unstable(Exception):
    def __init__(self, value: object) -> None:
        super().__init__()
        self.type_name = f"{type(value).__module__}.{type(value).__qualname__}"


_MAX_DEPTH = 32


def _plain(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise _Unstable(value)
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, enum.Enum):
        return {"enum": f"{type(value).__qualname__}.{value.name}"}
    if isinstance(value, PurePath):
        return {"path": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"set": sorted(stable_hash(_plain(v, depth + 1)) for v in value)}
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _plain(v, depth + 1) for k, v in value.items()}}
    if isinstance(value, Fingerprinted):  # a component inside (a judge's teacher)
        kind = type(value)
        return {"component": f"{kind.__module__}.{kind.__qualname__}", "of": fingerprint(value)}
    raise _Unstable(value)


def _label(component: object) -> str:
    name = getattr(component, "name", None)
    kind = type(component).__name__
    return f"{name!r} ({kind})" if isinstance(name, str) else kind
