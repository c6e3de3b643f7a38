"""``length``: keep examples whose text length lies within bounds (characters and words)."""

from __future__ import annotations

from mstudy.filters.base import RowFilter
from mstudy.records import Example


class LengthFilter(RowFilter):
    """Reject examples whose ``field`` is shorter or longer than the given bounds."""

    name = "length"

    def __init__(
        self,
        *,
        min_chars: int = 1,
        max_chars: int | None = None,
        min_words: int = 0,
        max_words: int | None = None,
        field: str = "text",
    ) -> None:
        if min_chars < 0 or (max_chars is not None and max_chars < min_chars):
            raise ValueError("length: need 0 <= min_chars <= max_chars")
        if min_words < 0 or (max_words is not None and max_words < min_words):
            raise ValueError("length: need 0 <= min_words <= max_words")
        self.min_chars, self.max_chars = min_chars, max_chars
        self.min_words, self.max_words = min_words, max_words
        self.field = field

    def reason(self, example: Example) -> tuple[str, str] | None:
        value = example.fields.get(self.field)
        if not isinstance(value, str):
            return ("missing field", f"{self.field!r} is {type(value).__name__}, not text")
        chars, words = len(value.strip()), len(value.split())
        if chars < self.min_chars:
            return ("too short", f"{chars} chars < {self.min_chars}")
        if self.max_chars is not None and chars > self.max_chars:
            return ("too long", f"{chars} chars > {self.max_chars}")
        if words < self.min_words:
            return ("too short", f"{words} words < {self.min_words}")
        if self.max_words is not None and words > self.max_words:
            return ("too long", f"{words} words > {self.max_words}")
        return None


__all__ = ["LengthFilter"]
