"""The leak check: no scored question may occur in the student's training texts."""

from __future__ import annotations

from collections.abc import Sequence

from mstudy.probes.errors import LeakError
from mstudy.probes.templates import canonical

__all__ = ["check_no_leak", "contains_question"]


def check_no_leak(texts: Sequence[str], questions: Sequence[str]) -> int:
    """Raise LeakError if any question occurs verbatim (normalised) in a training text.

    Returns the number of questions checked.
    """
    wanted = {canonical(q) for q in questions}
    for text in texts:
        padded = f" {canonical(text)} "
        for q in wanted:
            if f" {q} " in padded:
                raise LeakError(
                    f"the scored question {q!r} occurs in the training text {text!r}; the "
                    "student would be tested on what it was told"
                )
    return len(wanted)


def contains_question(text: str, questions: set[str]) -> bool:
    padded = f" {canonical(text)} "
    return any(f" {q} " in padded for q in questions)
