"""Teachers that Ray actors build in tests and the benchmark (importable by the workers).

``sleepy`` is the scripted teacher made latency-bound: each request sleeps ``delay`` seconds
(a remote call's wait) and, with ``log``, appends its key to that file, so a test can tell
which calls were made, by which run. ``PickyParaphrase``, ``OddWords`` and
``ShortAfterDedup`` log the process they parse or check in.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

from mstudy.filters.base import RowFilter
from mstudy.records import Completion, Example, Record, Rejection, Request
from mstudy.strategies.paraphrase import Paraphrase
from mstudy.teachers.scripted import ScriptedTeacher


def sleepy(delay: float = 0.05, log: str | None = None) -> ScriptedTeacher:
    def reply(request: Request) -> str:
        time.sleep(delay)
        if log is not None:
            with open(log, "a", encoding="utf-8") as out:
                out.write(f"{request.key} {os.getpid()}\n")
        users = [m.content for m in request.messages if m.role == "user"]
        words = (users[-1] if users else "").split()
        return " ".join(reversed(words)) + f" ({request.sample})"

    return ScriptedTeacher(reply, fingerprint="sleepy-reverser-v1")


# -- strategies and filters that say where they ran ------------------------------------------
# Each appends "<what> <pid>" to ``log`` when it parses or checks, so a test can tell whether
# that happened in the driver or in the pool's actors. Their verdicts are deterministic and
# depend on the row alone, so one process and the pool must give the same rows.


def _trace(log: str | None, what: str, record_id: str = "") -> None:
    if log is not None:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{what} {os.getpid()} {record_id}\n")


class PickyParaphrase(Paraphrase):
    """``paraphrase`` whose parse rejects every reply of a length divisible by 4."""

    name = "picky"

    def __init__(self, *, log: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._log = log

    def parse(
        self, record: Record, request: Request, completion: Completion
    ) -> Sequence[Example | Rejection]:
        _trace(self._log, "parse", record.id)
        if completion.ok and len(completion.text) % 4 == 0:
            detail = f"{len(completion.text)} characters"
            return [Rejection(record.id, "parse", "picky", detail, self.name)]
        return super().parse(record, request, completion)


class OddWords(RowFilter):
    """Rejects examples whose text has an odd number of words; marks the others with their
    word count (a new Example, so a verdict that changes the row travels back)."""

    name = "odd_words"

    def __init__(self, *, log: str | None = None) -> None:
        self._log = log

    def check(self, example: Example) -> Example | Rejection:
        _trace(self._log, f"check:{self.name}", example.provenance.source_id)
        words = len(str(example.fields.get("text", "")).split())
        if words % 2:
            return example.reject(self.stage, "odd word count", f"{words} words")
        return dataclasses.replace(example, fields={**example.fields, "words": words})


class ShortAfterDedup(RowFilter):
    """A per-record filter placed after ``dedup``: it stays in the driver."""

    name = "short_after_dedup"

    def __init__(self, *, log: str | None = None) -> None:
        self._log = log

    def reason(self, example: Example) -> str | None:
        _trace(self._log, f"check:{self.name}", example.provenance.source_id)
        return "short" if len(str(example.fields.get("text", ""))) < 63 else None


def traced(log: str, what: str) -> set[int]:
    """The pids that logged ``what`` in ``log``."""
    with open(log, encoding="utf-8") as lines:
        return {int(line.split()[1]) for line in lines if line.split()[0] == what}


def parsed_by(log: str, pid: int, what: str = "parse") -> set[str]:
    """The ids of the records ``pid`` parsed a reply of (or did ``what`` for), by ``log``."""
    with open(log, encoding="utf-8") as lines:
        rows = [line.split() for line in lines]
    return {row[2] for row in rows if row[0] == what and int(row[1]) == pid}
