"""``RowFilter``: the helper for filters that judge one example at a time."""

from __future__ import annotations

from typing import ClassVar

from mstudy.records import Example, Rejection


class RowFilter:
    """Subclasses set ``name`` and implement ``reason``: None keeps the example."""

    name: ClassVar[str] = ""

    @property
    def stage(self) -> str:
        return f"filter:{self.name}"

    def reason(self, example: Example) -> tuple[str, str] | str | None:
        """Why to reject ``example`` (a reason, or a reason and detail), or None to keep it."""
        raise NotImplementedError

    def check(self, example: Example) -> Example | Rejection:
        verdict = self.reason(example)
        if verdict is None:
            return example
        reason, detail = (verdict, "") if isinstance(verdict, str) else verdict
        return example.reject(self.stage, reason, detail)

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"


__all__ = ["RowFilter"]
