"""The defaults of the reversal probe's run and its CLI: sizes, seeds, the teacher."""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULTS"]


DEFAULTS: dict[str, Any] = {
    "teacher": "default",
    "facts": 100,
    "relations": 5,
    "seeds": 2,
    "epochs": 80,
    "samples": 3,
}
"""The defaults of :func:`run_probe` and the CLI (sized for < 5 minutes on 2 CPU cores)."""
