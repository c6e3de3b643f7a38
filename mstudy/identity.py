"""``IdentityMemo``: values computed from immutable objects, found by their identity first.

Code on the data path hands the same objects on again and again (a strategy's fixed turns
and its generation params reach every one of its requests). Looking them up by ``id``
spares hashing and comparing their contents, which for dataclasses runs in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

__all__ = ["IdentityMemo"]


class IdentityMemo(Generic[K, V]):
    """``compute(key)``, remembered for the last ``size`` keys by identity.

    The key is one object, or with ``by_items`` a tuple found by the identity of its items
    (a new tuple of the same objects finds the same value). Only for immutable objects: a
    value is reused for the very same objects, whatever their content would say. An entry
    keeps its objects alive, so no other object can take their ids while it is kept. When
    ``size`` entries are kept, all are dropped.
    """

    __slots__ = ("_by_items", "_compute", "_kept", "_size")

    def __init__(
        self, compute: Callable[[K], V], *, by_items: bool = False, size: int = 64
    ) -> None:
        self._compute = compute
        self._by_items = by_items
        self._size = size
        self._kept: dict[Any, tuple[K, V]] = {}

    def __call__(self, key: K) -> V:
        ids = tuple(map(id, key)) if self._by_items else id(key)  # type: ignore[call-overload]
        kept = self._kept.get(ids)
        if kept is None:
            if len(self._kept) >= self._size:
                self._kept.clear()
            kept = self._kept[ids] = (key, self._compute(key))
        return kept[1]

    def clear(self) -> None:
        self._kept.clear()
