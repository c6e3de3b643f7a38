"""``dedup``: drop examples whose normalised text was already seen in this run."""

from __future__ import annotations

import hashlib

from mstudy.filters.base import RowFilter
from mstudy.records import Example
from mstudy.text import normalize


class ExactDedup(RowFilter):
    """Exact duplicates after normalisation (case, punctuation, spacing, Unicode form).

    ``scope="strategy"`` (default) compares within one strategy's outputs; ``"global"``
    across all. Memory: one 64-bit hash per distinct example.
    """

    name = "dedup"

    def __init__(self, *, field: str = "text", scope: str = "strategy") -> None:
        if scope not in ("strategy", "global"):
            raise ValueError(f"dedup: scope must be 'strategy' or 'global', got {scope!r}")
        self.field = field
        self.scope = scope
        self._seen: set[int] = set()

    def key(self, example: Example) -> int:
        value = example.fields.get(self.field)
        text = normalize(value if isinstance(value, str) else str(value))
        prefix = example.strategy if self.scope == "strategy" else ""
        digest = hashlib.blake2b(f"{prefix}\x00{text}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little")

    def reset(self) -> None:
        """Forget every example seen (a study calls this at the start of each run)."""
        self._seen.clear()

    def get_state(self) -> list[int]:
        """The hashes seen so far (for a resumable run's checkpoint)."""
        return list(self._seen)

    def set_state(self, state: list[int]) -> None:
        self._seen = set(state)

    def reason(self, example: Example) -> tuple[str, str] | None:
        key = self.key(example)
        if key in self._seen:
            return ("duplicate", f"normalised {self.field} seen before: {example.text[:80]!r}")
        self._seen.add(key)
        return None
