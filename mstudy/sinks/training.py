"""Sinks that write accepted rows in a training format (:mod:`mstudy.sinks.formats`).

Each is a file sink: JSON Lines, or Parquet when the path ends in ``.parquet``/``.pq``,
committed atomically on ``close`` like :class:`~mstudy.sinks.jsonl.JSONLSink` (whose
two-phase commit it keeps). A row with no place in the format is not written; ``skipped``
counts those by reason, and ``close`` logs the counts as a warning.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from mstudy.errors import ConfigError
from mstudy.interfaces import Preparable
from mstudy.sinks.base import BaseSink
from mstudy.sinks.formats import FORMATS, Skip, format_row

__all__ = [
    "AlpacaSink",
    "MessagesSink",
    "PromptCompletionSink",
    "ShareGPTSink",
    "TextSink",
    "TrainingFormatSink",
    "training_sink",
]

log = logging.getLogger("mstudy")
_PARQUET = (".parquet", ".pq")


class TrainingFormatSink(BaseSink):
    """Writes rows in the training format ``format`` to ``path``.

    Args:
        path: the output file: ``.jsonl`` (JSON Lines; any other suffix too) or ``.parquet``.
        instructions: strategy name -> the instruction its rows are given, added to or
            replacing :data:`~mstudy.sinks.formats.INSTRUCTIONS` (``"*"``: any other).
        system: a system message to open every conversation with.
        keep: row fields to copy into each output row as they are (e.g. ``["id"]``, to trace
            a training row back to its mstudy row and provenance).
    """

    format: ClassVar[str] = ""
    conversational: bool = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        instructions: Mapping[str, str] | None = None,
        system: str | None = None,
        keep: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if self.format not in FORMATS:
            raise ConfigError(f"unknown training format {self.format!r}", parameter="format")
        if instructions is not None and not (
            isinstance(instructions, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in instructions.items())
        ):
            raise ConfigError(
                "instructions must map strategy names to instruction strings",
                parameter="instructions",
            )
        if isinstance(keep, str) or not all(isinstance(k, str) for k in keep):
            raise ConfigError("keep must be a list of field names", parameter="keep")
        self.instructions = dict(instructions or {})
        self.system = system or None
        self.keep = tuple(keep)
        self.skipped: Counter[str] = Counter()
        self.rows_formatted = 0
        """Rows written in the format (``rows_written`` also counts the skipped ones)."""
        self._inner: BaseSink
        if Path(os.fspath(path)).suffix.lower() in _PARQUET:
            from mstudy.sinks.parquet import ParquetSink

            self._inner = ParquetSink(path)
        else:
            from mstudy.sinks.jsonl import JSONLSink

            self._inner = JSONLSink(path)
        self.path: Path = Path(getattr(self._inner, "path", os.fspath(path)))

    def _describe(self) -> str:
        return f"{self.format} {self.path}"

    def convert(self, row: Mapping[str, Any]) -> dict[str, Any] | Skip:
        """``row`` in this sink's format, or why it has no place in it."""
        return format_row(
            row,
            self.format,
            instructions=self.instructions,
            system=self.system,
            conversational=self.conversational,
            keep=self.keep,
        )

    def _write(self, rows: list[dict[str, Any]]) -> None:
        out = []
        for row in rows:
            converted = self.convert(row)
            if isinstance(converted, Skip):
                self.skipped[converted.reason] += 1
            else:
                out.append(converted)
        if out:
            self._inner.write(out)
            self.rows_formatted += len(out)

    def _prepare(self) -> None:
        if isinstance(self._inner, Preparable):
            self._inner.prepare()

    def _commit(self) -> None:
        self._inner.close()
        if self.skipped:
            counts = ", ".join(f"{reason}: {n}" for reason, n in self.skipped.most_common())
            log.warning(
                "%s: %d rows had no place in the format and were not written (%s)",
                self._describe(),
                sum(self.skipped.values()),
                counts,
            )

    def _discard(self) -> None:
        self._inner.abort()


class MessagesSink(TrainingFormatSink):
    """TRL's conversational format: ``{"messages": [{"role", "content"}, ...]}``."""

    format = "sft_messages"


class PromptCompletionSink(TrainingFormatSink):
    """TRL's prompt-completion format: ``{"prompt": str, "completion": str}``, or message
    lists with ``conversational=True`` (which keeps a system message and earlier turns)."""

    format = "sft_prompt_completion"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        conversational: bool = False,
        instructions: Mapping[str, str] | None = None,
        system: str | None = None,
        keep: Sequence[str] = (),
    ) -> None:
        super().__init__(path, instructions=instructions, system=system, keep=keep)
        self.conversational = bool(conversational)


class TextSink(TrainingFormatSink):
    """Plain text for continued pretraining: ``{"text": ...}``, one statement or passage."""

    format = "text"


class AlpacaSink(TrainingFormatSink):
    """Alpaca: ``{"instruction", "input", "output"}`` (and ``system`` when there is one)."""

    format = "alpaca"


class ShareGPTSink(TrainingFormatSink):
    """ShareGPT: ``{"conversations": [{"from": "system"|"human"|"gpt", "value"}, ...]}``."""

    format = "sharegpt"


_SINKS: dict[str, type[TrainingFormatSink]] = {
    sink.format: sink
    for sink in (MessagesSink, PromptCompletionSink, TextSink, AlpacaSink, ShareGPTSink)
}


def training_sink(fmt: str, path: str | os.PathLike[str], **kwargs: Any) -> TrainingFormatSink:
    """The sink of training format ``fmt`` writing to ``path``."""
    sink = _SINKS.get(fmt)
    if sink is None:
        raise ConfigError(
            f"unknown training format {fmt!r}; formats: {', '.join(_SINKS)}", parameter="format"
        )
    return sink(path, **kwargs)
