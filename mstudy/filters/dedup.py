"""``dedup``: drop examples whose normalised text was already seen in this run."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mstudy.filters.base import RowFilter
from mstudy.records import Example, Rejection
from mstudy.text import normalize

if TYPE_CHECKING:
    from mstudy.filters.hashset import HashSet


_STATE_FORMAT = "mstudy.dedup.v1"


class ExactDedup(RowFilter):
    """Exact duplicates after normalisation (case, punctuation, spacing, Unicode form).

    ``scope="strategy"`` (default) compares within one strategy's outputs; ``"global"``
    across all. Each distinct example is one 64-bit hash in a
    :class:`~mstudy.filters.hashset.HashSet`: exact (a new example is never taken for a
    duplicate) and bounded in memory, about ``max_memory_mb`` (default 8: a hash table that
    spills sorted runs to files under ``temp_dir``, default the system's temporary directory,
    and a Bloom filter that spares most new examples a file read). Files are deleted on
    ``reset()``, ``close()`` and garbage collection.
    """

    name = "dedup"

    def __init__(
        self,
        *,
        field: str = "text",
        scope: str = "strategy",
        max_memory_mb: float = 8,
        temp_dir: str | Path | None = None,
    ) -> None:
        if scope not in ("strategy", "global"):
            raise ValueError(f"dedup: scope must be 'strategy' or 'global', got {scope!r}")
        if max_memory_mb <= 0:
            raise ValueError(f"dedup: max_memory_mb must be positive, got {max_memory_mb!r}")
        self.field = field
        self.scope = scope
        # private: memory settings do not change outputs, so they stay out of the fingerprint
        self._max_memory_mb = max_memory_mb
        self._temp_dir = temp_dir
        self._set: HashSet | None = None  # made on first use: numpy loads only then

    def _seen(self) -> HashSet:
        if self._set is None:
            from mstudy.filters.hashset import HashSet

            self._set = HashSet(self._max_memory_mb, temp_dir=self._temp_dir)
        return self._set

    def key(self, example: Example) -> int:
        value = example.fields.get(self.field)
        text = normalize(value if isinstance(value, str) else str(value))
        prefix = example.strategy if self.scope == "strategy" else ""
        digest = hashlib.blake2b(f"{prefix}\x00{text}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little")

    def reset(self) -> None:
        """Forget every example seen (a study calls this at the start of each run)."""
        if self._set is not None:
            self._set.clear()

    close = reset

    def get_state(self) -> dict[str, Any]:
        """The hashes seen so far, sorted, as base64 of little-endian uint64 (a JSON value)."""
        raw = b"" if self._set is None else self._set.to_array().astype("<u8").tobytes()
        return {"format": _STATE_FORMAT, "hashes": base64.b64encode(raw).decode("ascii")}

    def set_state(self, state: Any) -> None:
        """Restore :meth:`get_state`'s value."""
        import numpy as np

        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError(f"dedup: not a saved state of format {_STATE_FORMAT!r}")
        seen = self._seen()
        seen.clear()
        raw = base64.b64decode(state["hashes"])
        seen.update(np.frombuffer(raw, dtype="<u8").astype(np.uint64))

    def __getstate__(self) -> dict[str, Any]:  # picklable and deep-copyable, as with a set
        return {**self.__dict__, "_set": self.get_state() if self._set is not None else None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        hashes = state.pop("_set")
        self.__dict__.update(state, _set=None)
        if hashes is not None:
            self.set_state(hashes)

    def reason(self, example: Example) -> tuple[str, str] | None:
        seen = self._set if self._set is not None else self._seen()
        if seen.add(self.key(example)):
            return None
        return ("duplicate", self._detail(example))

    def check_many(self, examples: Sequence[Example]) -> list[Example | Rejection]:
        """``check`` for each example in order (a study hands over one record's at once)."""
        add = (self._set if self._set is not None else self._seen()).add
        key, stage = self.key, self.stage
        return [
            example
            if add(key(example))
            else example.reject(stage, "duplicate", self._detail(example))
            for example in examples
        ]

    def _detail(self, example: Example) -> str:
        return f"normalised {self.field} seen before: {example.text[:80]!r}"


__all__ = ["ExactDedup"]
