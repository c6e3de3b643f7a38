"""Progress: a tqdm bar over source records with accepted rows, tokens/s and ETA."""

from __future__ import annotations

import sys
from typing import Any

from mstudy.report import Report


class Progress:
    """A progress bar, or nothing when it is off (``None``: on when stderr is a terminal)."""

    __slots__ = ("_bar", "_report")

    def __init__(
        self, enabled: bool | None, source: Any, limit: int | None, skip: int, report: Report
    ) -> None:
        self._report = report
        self._bar: Any = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if not enabled:
            return
        from tqdm.auto import tqdm

        from mstudy.sources import source_length

        total = source_length(source)
        if limit is not None:
            total = min(total, limit) if total is not None else limit
        self._bar = tqdm(total=total, initial=skip, unit="rec", desc="studying", dynamic_ncols=True)

    def advance(self) -> None:
        """One more source record decided."""
        bar = self._bar
        if bar is None:
            return
        bar.update(1)
        elapsed = max(float(bar.format_dict.get("elapsed", 0.0)), 1e-9)
        rate = self._report.completion_tokens / elapsed
        bar.set_postfix(accepted=self._report.accepted, tok_s=f"{rate:.0f}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
