"""Checks that a source row's fields can travel the data path: hashed, cached, journaled, written.

:func:`check_fields` walks a row's values once, iteratively (no recursion, so no depth can
overflow the stack), and returns the first :class:`FieldProblem` it meets, or None:

* ``invalid_unicode``: a string (value or key) holding a lone surrogate (``"\\ud800"``, which
  JSON text may spell but UTF-8 cannot encode);
* ``too_deeply_nested``: containers nested more than :data:`MAX_DEPTH` levels (or a circular
  structure);
* ``unsupported_value``: a value without a stable JSON form: an integer too long to print as
  decimal digits (``sys.get_int_max_str_digits``), an object whose ``str()`` fails or is the
  default ``<... object at 0x...>`` (which changes between runs), an array whose ``tolist()``
  fails.

Everything else is accepted as it is today: JSON values, tuples, sets, bytes, NaN and
infinities, dates, decimals, numpy values (the content hash gives each a stable form).
:class:`SeenIds` remembers the ids of one source in bounded memory.
"""

from __future__ import annotations

import hashlib
import re
import sys
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_DEPTH", "FieldProblem", "SeenIds", "check_fields", "printable"]

MAX_DEPTH = 64
"""How many levels of containers a field's value may nest (the field's own list/dict is 1)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_SCALARS = (str, int, float, type(None))
_FLAT = frozenset({str, int, bool, float, type(None)})
_SHORT_INT_BITS = 2000  # fewer digits than the lowest limit Python allows (640)
_PATH_CHARS = 120


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """Why a row's fields cannot be used: ``reason`` (stable), the top-level ``field`` (printable)
    and a ``detail`` naming the place inside it."""

    reason: str
    field: str
    detail: str


def printable(text: str) -> str:
    """``text`` with lone surrogates spelled as ``\\udXXX`` escapes, so it encodes as UTF-8."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _surrogate_at(text: str) -> int:
    """Position of the first lone surrogate in ``text``, or -1."""
    if text.isascii():
        return -1
    found = _SURROGATE.search(text)
    return -1 if found is None else found.start()


_INT_BOUNDS: dict[int, int] = {}


def _int_too_long(value: int) -> bool:
    """True when ``str(value)`` would raise (more digits than ``sys.get_int_max_str_digits``)."""
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    if not limit:
        return False
    bound = _INT_BOUNDS.get(limit)
    if bound is None:
        bound = _INT_BOUNDS[limit] = 10**limit
    return abs(value) >= bound


def _place(path: tuple[Any, ...]) -> str:
    """``path`` as ``field.key[2]``, cut to a readable length."""
    text = printable(str(path[0]))
    for step in path[1:]:
        text += f"[{step}]" if isinstance(step, int) else f".{printable(str(step))}"
        if len(text) > _PATH_CHARS:
            return text[:_PATH_CHARS] + "…"
    return text


def _scalar_problem(value: Any, path: tuple[Any, ...]) -> FieldProblem | None:
    """The problem of a non-container value, or None."""
    kind = type(value)
    if kind is str:
        at = _surrogate_at(value)
        if at >= 0:
            return FieldProblem(
                "invalid_unicode",
                printable(str(path[0])),
                f"field '{_place(path)}' holds a lone surrogate "
                f"(U+{ord(value[at]):04X} at character {at}), which UTF-8 cannot encode",
            )
        return None
    if kind is int or kind is bool or kind is float or value is None:
        if kind is int and value.bit_length() > _SHORT_INT_BITS and _int_too_long(value):
            return FieldProblem(
                "unsupported_value",
                printable(str(path[0])),
                f"field '{_place(path)}' holds an integer of {value.bit_length()} bits, too long "
                "to write as decimal digits",
            )
        return None
    return _object_problem(value, path)


def _object_problem(value: Any, path: tuple[Any, ...]) -> FieldProblem | None:
    """An object that is not a JSON value: its text form must exist, be stable and encodable."""
    if isinstance(value, str):  # a subclass of str: its characters, as for a str
        return _scalar_problem(str.__str__(value), path)
    if isinstance(value, (int, float, bytes, bytearray)):
        return None
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}"
    own_text: Any = kind.__str__, kind.__repr__
    if own_text == (object.__str__, object.__repr__):
        return FieldProblem(
            "unsupported_value",
            printable(str(path[0])),
            f"field '{_place(path)}' holds a {name}, which has no stable text form",
        )
    try:
        text = str(value)
    except Exception as exc:  # a broken __str__ of a user's object
        return FieldProblem(
            "unsupported_value",
            printable(str(path[0])),
            f"field '{_place(path)}' holds a {name} whose str() fails ({type(exc).__name__})",
        )
    return _scalar_problem(text, path)


def _too_deep(path: tuple[Any, ...]) -> FieldProblem:
    return FieldProblem(
        "too_deeply_nested",
        printable(str(path[0])),
        f"field '{_place(path)}' nests more than {MAX_DEPTH} levels of lists or mappings "
        "(or refers to itself)",
    )


def check_fields(fields: Mapping[Any, Any]) -> FieldProblem | None:
    """The first problem of a row's ``fields`` (keys and values, at any depth), or None."""
    stack: list[tuple[Any, tuple[Any, ...]]] = []
    for key, value in fields.items():
        if type(key) is not str or not (key.isascii() or _surrogate_at(key) < 0):
            path = (key,)
            if type(key) is str:
                problem = _scalar_problem(key, path)
            else:
                problem = _object_problem(key, path) if not isinstance(key, _SCALARS) else None
            if problem is not None:
                return FieldProblem(problem.reason, problem.field, f"the name of {problem.detail}")
        kind = type(value)
        if kind is str:
            if value.isascii() or _surrogate_at(value) < 0:
                continue
        elif kind is int:
            if value.bit_length() <= _SHORT_INT_BITS:
                continue
        elif kind in _FLAT:
            continue
        else:
            stack.append((value, (key,)))
            continue
        problem = _scalar_problem(value, (key,))
        if problem is not None:
            return problem
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            return _too_deep(path)
        problem = _container_problem(value, path, stack)
        if problem is not None:
            return problem
    return None


def _container_problem(
    value: Any, path: tuple[Any, ...], stack: list[tuple[Any, tuple[Any, ...]]]
) -> FieldProblem | None:
    """Check ``value``'s own scalars; push its containers onto ``stack`` (one level down)."""
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = enumerate(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        return None
    elif type(value) in _FLAT:
        return _scalar_problem(value, path)
    else:
        tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
        if not callable(tolist):
            return _object_problem(value, path)
        try:
            converted = tolist()
        except Exception as exc:
            kind = type(value)
            return FieldProblem(
                "unsupported_value",
                printable(str(path[0])),
                f"field '{_place(path)}' holds a {kind.__module__}.{kind.__qualname__} whose "
                f"tolist() fails ({type(exc).__name__})",
            )
        if converted is value:
            return _object_problem(value, path)
        stack.append((converted, (*path, "tolist")))
        return None
    is_mapping = isinstance(value, Mapping)
    for key, item in items:
        child = (*path, key)
        if is_mapping and type(key) is not str:
            if not isinstance(key, _SCALARS):
                problem = _object_problem(key, child)
                if problem is not None:
                    return FieldProblem(problem.reason, problem.field, f"a key of {problem.detail}")
        elif is_mapping:
            problem = _scalar_problem(key, child)
            if problem is not None:
                return FieldProblem(problem.reason, problem.field, f"a key of {problem.detail}")
        if type(item) in _FLAT:
            problem = _scalar_problem(item, child)
            if problem is not None:
                return problem
        else:
            stack.append((item, child))
    return None


class SeenIds:
    """The record ids met so far in one source, in bounded memory.

    Each id is kept as a 64-bit BLAKE2b digest: the first :data:`TABLE_IDS` in a fixed table
    of 512 KB (no third-party import), all of them after that in a
    :class:`~mstudy.filters.hashset.HashSet` (8 MB, spilling to temporary files). Two distinct
    ids share a digest with probability about n²/2⁶⁵ (3e-6 at ten million ids); the later one
    would then be reported as a duplicate.
    """

    SLOTS = 1 << 16
    TABLE_IDS = SLOTS // 2  # linear probing stays fast at half full

    def __init__(self) -> None:
        self._table: array[int] | None = None
        self._count = 0
        self._big: Any = None

    def add(self, record_id: str) -> bool:
        """Remember ``record_id``; False if it was met before."""
        digest = hashlib.blake2b(record_id.encode("utf-8"), digest_size=8).digest()
        key = int.from_bytes(digest, "little") or 1  # 0 marks an empty slot
        if self._big is not None:
            return bool(self._big.add(key))
        table = self._table
        if table is None:
            table = self._table = array("Q", [0]) * self.SLOTS
        mask = self.SLOTS - 1
        at = key & mask
        while True:
            slot = table[at]
            if slot == key:
                return False
            if not slot:
                break
            at = (at + 1) & mask
        table[at] = key
        self._count += 1
        if self._count >= self.TABLE_IDS:
            from mstudy.filters.hashset import HashSet

            self._big = HashSet()
            self._big.update(k for k in table if k)
            self._table = None
        return True
