"""``IdentityMemo``: values computed from tuples of immutable objects, found by identity first.

Code on the data path hands the same objects on again and again (a strategy's fixed turns
and its generation params reach every one of its requests). Looking them up by ``id``
spares hashing and comparing their contents, which for dataclasses runs in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

V = TypeVar("V")

__all__ = ["IdentityMemo"]


class IdentityMemo(Generic[V]):
    """``compute(objects)``, remembered for the last ``size`` tuples of objects by identity.

    Only for immutable objects: a value is reused for the very same objects, whatever their
    content would say. An entry keeps its objects alive, so no other object can take their
    ids while it is kept. When ``size`` entries are kept, all are dropped.
    """

    __slots__ = ("_compute", "_kept", "_size")

    def __init__(self, compute: Callable[[tuple[Any, ...]], V], size: int = 64) -> None:
        self._compute = compute
        self._size = size
        self._kept: dict[tuple[int, ...], tuple[tuple[Any, ...], V]] = {}

    def __call__(self, objects: tuple[Any, ...]) -> V:
        ids = tuple(map(id, objects))
        kept = self._kept.get(ids)
        if kept is None:
            if len(self._kept) >= self._size:
                self._kept.clear()
            kept = self._kept[ids] = (objects, self._compute(objects))
        return kept[1]

    def clear(self) -> None:
        self._kept.clear()
