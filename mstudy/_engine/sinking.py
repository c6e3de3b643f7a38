"""Sinking: rows to the study's sinks, and every sink committed, or every sink aborted.

Each sink gets what the :class:`~mstudy.interfaces.Sink` protocol documents: flat row dicts
(``Example.to_row()`` for accepted rows, ``Rejection.to_row()`` for the rejects sink), in
chunks. Committing is two-phase: sinks that are :class:`~mstudy.interfaces.Preparable` do
everything that can fail first (flush, convert, check), and only then is any sink closed,
so a sink that cannot commit leaves no other sink committed beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, cast, runtime_checkable

from mstudy.interfaces import Preparable, Sink
from mstudy.records import Example, Rejection

log = logging.getLogger("mstudy")

CHUNK = 256
"""Rows handed to the sinks at once."""

SinkSpec = Sink | str | Path


@runtime_checkable
class StudyLabelled(Protocol):
    """A sink that records which study wrote it (the sharded sinks' manifest does)."""

    def label_study(self, study: str) -> None:
        """Record ``study``, the sha256 of the study's fingerprint."""


def build_sink(spec: SinkSpec) -> Sink:
    """A sink object from a spec: an object, a plugin name, or a ``.jsonl``/``.parquet`` path."""
    if isinstance(spec, Path) or (isinstance(spec, str) and spec.endswith((".jsonl", ".parquet"))):
        path = Path(spec)
        if path.suffix == ".parquet":
            from mstudy.sinks.parquet import ParquetSink

            return ParquetSink(path)
        from mstudy.sinks.jsonl import JSONLSink

        return JSONLSink(path)
    if isinstance(spec, str):
        from mstudy import plugins

        return cast(Sink, plugins.create("sinks", spec))
    return spec


class SinkSet:
    """A run's sinks: ``add`` rows as they are decided, then leave the ``with`` block to
    commit them all, or raise in it to abort them all."""

    def __init__(self, sinks: Sequence[Sink], rejects: Sink | None) -> None:
        self._sinks = list(sinks)
        self._rejects = rejects
        self._accepted: list[Mapping[str, Any]] = []
        self._rejected: list[Mapping[str, Any]] = []

    @classmethod
    def open(
        cls, sinks: Iterable[SinkSpec], rejects: SinkSpec | None, *, study: str | None = None
    ) -> SinkSet:
        """Build the sinks; those built before one that fails are aborted. ``study`` (the
        sha256 of the study's fingerprint) goes to the sinks that record it."""
        built: list[Sink] = []
        try:
            for spec in sinks:
                built.append(build_sink(spec))
            rejects_sink = build_sink(rejects) if rejects is not None else None
        except BaseException:
            _abort(built)
            raise
        if study is not None:
            for sink in [*built, *([rejects_sink] if rejects_sink is not None else [])]:
                if isinstance(sink, StudyLabelled):
                    sink.label_study(study)
        return cls(built, rejects_sink)

    @property
    def _all(self) -> list[Sink]:
        return [*self._sinks, *([self._rejects] if self._rejects is not None else [])]

    def add(self, item: Example | Rejection) -> None:
        """One decided row: accepted rows to the sinks, rejections to the rejects sink."""
        if isinstance(item, Example):
            if self._sinks:
                self.add_row("accepted", item.to_row())
        elif self._rejects is not None:
            self.add_row("rejects", item.to_row())

    def add_row(self, kind: str, row: Mapping[str, Any]) -> None:
        """A row already in its row form (``kind``: ``accepted`` or ``rejects``)."""
        buffer = self._accepted if kind == "accepted" else self._rejected
        buffer.append(row)
        if len(buffer) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._accepted:
            for sink in self._sinks:
                sink.write(self._accepted)
            self._accepted = []
        if self._rejected:
            if self._rejects is not None:
                self._rejects.write(self._rejected)
            self._rejected = []

    def commit(self) -> None:
        """Write what is buffered, prepare every sink that can be, then close them all."""
        self._flush()
        for sink in self._all:
            if isinstance(sink, Preparable):
                sink.prepare()
        for sink in self._all:
            sink.close()

    def abort(self) -> None:
        """Abort every sink (errors while aborting are logged: the first error matters)."""
        _abort(self._all)

    def __enter__(self) -> SinkSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.commit()
        except BaseException:
            self.abort()
            raise


def _abort(sinks: Sequence[Sink]) -> None:
    for sink in sinks:
        try:
            sink.abort()
        except Exception:  # keep the original error
            log.exception("could not abort sink %r", sink)
