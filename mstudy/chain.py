"""Chained studies: each stage studies the rows the stage before accepted.

::

    chain = Study(teacher, ["reverse"], name="reverse") >> Study(teacher, ["paraphrase"])
    report = chain.run("facts.jsonl")

    chain = Chain([reverse, paraphrase], sinks=["out/final.jsonl"],
                  rejects="out/rejects.jsonl", journal="out/.chain")

Stages run one after the other, each over the committed output of the one before, stored
in the chain's work folder (its ``journal``, or a temporary folder): a stage may need the
whole of the previous output (stateful filters, ``connect``), no teacher is called from
inside another's ``generate``, and every stage is a plain, resumable study run. Each stage
keeps its own sinks (its output kept) and rejects sink; the chain's ``sinks`` get the last
stage's rows and its ``rejects`` every stage's rejections, each with ``chain_stage`` naming
the stage.

With a ``journal`` the chain resumes after a crash: finished stages are not run again, the
stage that was running resumes from its own journal, and the teacher calls sit in one call
cache in the work folder (``calls.sqlite``, unless the chain or the stage has a ``cache``),
so no stored call is made again and no row is written twice.

Every row records its lineage (:mod:`mstudy.lineage`): a stage-2 row's ``parents`` are the
source record's id and the stage-1 row's id, its ``generation`` 2.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mstudy._engine.sinking import SinkSet, SinkSpec
from mstudy._journal import RESTART, tombstone_path
from mstudy._locks import PathLock
from mstudy.cache import CallCache
from mstudy.errors import ConfigError
from mstudy.report import Report
from mstudy.sinks.base import commit_path, fsync_dir

if TYPE_CHECKING:
    from mstudy.interfaces import Sink
    from mstudy.study import Source, Study

__all__ = ["Chain"]

STATE = "chain.json"
FORMAT = "mstudy.chain.v1"


class Chain:
    """Studies in a row: stage ``k + 1`` studies the rows stage ``k`` accepted.

    Args:
        stages: the studies, in order (``a >> b`` builds the same chain).
        sinks: where the last stage's accepted rows go (besides that stage's own sinks).
        rejects: where every stage's rejections go, each with ``chain_stage``.
        journal: a work folder that makes ``run`` resumable (kept until the chain is done);
            without one, stage outputs pass through a temporary folder.
        cache: a call cache for the stages that have none (default with a journal: one in
            the journal folder).

    Stage names (the report's sections, ``chain_stage`` in rejects) are the studies'
    ``name``; a repeated name gets ``#2``, ``#3``.
    """

    def __init__(
        self,
        stages: Sequence[Study],
        *,
        sinks: Sequence[SinkSpec] = (),
        rejects: SinkSpec | None = None,
        journal: str | Path | None = None,
        cache: CallCache | str | Path | None = None,
    ) -> None:
        from mstudy.study import Study

        stages = list(stages)
        if not stages:
            raise ConfigError("a chain needs at least one stage", parameter="stages")
        for i, stage in enumerate(stages):
            if not isinstance(stage, Study):
                raise ConfigError(
                    f"stage {i + 1} must be a Study, got {type(stage).__name__}",
                    parameter="stages",
                )
            if stage.journal is not None:
                raise ConfigError(
                    f"stage {i + 1} ({stage.name!r}) has its own journal; give the chain one "
                    "(Chain(journal=...)) and it journals every stage",
                    parameter="journal",
                )
        self.stages = stages
        self.names = _unique([stage.name for stage in stages])
        self.sink_specs: list[SinkSpec] = list(sinks)
        self.rejects_spec = rejects
        self.journal = Path(journal) if journal is not None else None
        self.cache: CallCache | None = CallCache(cache) if isinstance(cache, (str, Path)) else cache
        self.last_report: Report | None = None

    def __rshift__(self, other: Study | Chain) -> Chain:
        """This chain followed by a study (or another chain's stages); options are kept."""
        more = other.stages if isinstance(other, Chain) else [other]
        return Chain(
            [*self.stages, *more],
            sinks=self.sink_specs,
            rejects=self.rejects_spec,
            journal=self.journal,
            cache=self.cache,
        )

    def __repr__(self) -> str:
        return f"Chain({' >> '.join(self.names)})"

    def fingerprint(self, limit: int | None = None) -> dict[str, Any]:
        """What determines the chain's rows; a resumed run must match it."""
        return {
            "stages": [
                {"name": name, **stage.fingerprint()}
                for name, stage in zip(self.names, self.stages, strict=True)
            ],
            "limit": limit,
        }

    # -- running --------------------------------------------------------------------------

    def run(self, source: Source, *, limit: int | None = None, restart: bool = False) -> Report:
        """Run every stage in order, then write the chain's sinks; the chain's report has a
        section per stage (:attr:`Report.stages <mstudy.report.Report.stages>`).

        ``limit`` applies to the first stage's source. A stage stopped by its budget stops
        the chain (status ``stopped``); with a journal, a later run goes on.
        """
        if self.journal is None:
            with tempfile.TemporaryDirectory(prefix="mstudy-chain-") as temporary:
                return _ChainRun(self, Path(temporary), False, limit).run(source)
        folder = self.journal
        lock = PathLock(folder, what="chain journal").acquire()
        try:
            if restart:
                _rmtree(folder)
            _rmtree(tombstone_path(folder))  # a finished run's, killed while removing
            folder.mkdir(parents=True, exist_ok=True)
            report = _ChainRun(self, folder, True, limit).run(source)
            if report.status == "done":
                _remove(folder)
            return report
        finally:
            lock.release()

    def iter_rows(self, source: Source, *, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Run the chain and yield the last stage's accepted rows (as the sinks get them)."""
        with tempfile.TemporaryDirectory(prefix="mstudy-chain-rows-") as folder:
            out = Path(folder) / "rows.jsonl"
            chain = Chain(
                self.stages,
                sinks=[*self.sink_specs, out],
                rejects=self.rejects_spec,
                journal=self.journal,
                cache=self.cache,
            )
            self.last_report = chain.run(source, limit=limit)
            yield from _rows(out)


class _ChainRun:
    """One run of a chain in its work folder."""

    def __init__(self, chain: Chain, folder: Path, durable: bool, limit: int | None) -> None:
        self.chain, self.folder, self.durable, self.limit = chain, folder, durable, limit
        self.fingerprint = json.loads(json.dumps(chain.fingerprint(limit), default=str))
        self.done: dict[str, Any] = self._load() if durable else {}
        self.cache = chain.cache
        if self.cache is None and durable:
            self.cache = CallCache(folder / "calls.sqlite")

    def _load(self) -> dict[str, Any]:
        path = self.folder / STATE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"unreadable chain state {path} ({exc}); {RESTART}") from exc
        if not isinstance(state, Mapping) or state.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a chain state of this mstudy; {RESTART}")
        if state.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"the chain changed since the interrupted run journaled in {self.folder}; "
                + RESTART
            )
        return dict(state.get("done", {}))

    def _save(self) -> None:
        path = self.folder / STATE
        partial = path.with_name(STATE + ".partial")
        data = {"format": FORMAT, "fingerprint": self.fingerprint, "done": self.done}
        with open(partial, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        commit_path(partial, path)

    def _file(self, index: int, kind: str) -> Path:
        return self.folder / f"stage-{index + 1:02d}.{kind}.jsonl"

    def run(self, source: Source) -> Report:
        chain = self.chain
        report = Report()
        chain.last_report = report
        try:
            for index, (name, study) in enumerate(zip(chain.names, chain.stages, strict=True)):
                saved = self.done.get(name)
                if saved is not None:
                    stage_report = Report.from_state(saved)
                else:
                    stage_source = source if index == 0 else self._file(index - 1, "accepted")
                    stage_report = self._stage(index, name, study, stage_source)
                report.stages[name] = stage_report
                if index == 0:
                    report.records = stage_report.records
                if stage_report.status != "done":
                    report.note = f"stage {name!r}: {stage_report.note or stage_report.status}"
                    report.finish(stage_report.status)
                    return report
            self._sink()
        except BaseException:
            report.finish("failed")
            raise
        finally:
            if self.cache is not None and self.cache is not chain.cache:
                self.cache.close()
        report.spent_prompt_tokens = sum(r.spent_prompt_tokens for r in report.stages.values())
        report.spent_completion_tokens = sum(
            r.spent_completion_tokens for r in report.stages.values()
        )
        report.finish("done")
        return report

    def _stage(self, index: int, name: str, study: Study, source: Any) -> Report:
        """Run one stage with the chain's outputs added to its own."""
        stage = copy.copy(study)
        rows, rejected = self._file(index, "accepted"), self._file(index, "rejects")
        stage.sink_specs = [*study.sink_specs, rows]
        stage.rejects_spec = (
            rejected
            if study.rejects_spec is None
            else cast("Sink", _Tee(study.rejects_spec, rejected))
        )
        if index > 0:
            stage.id_field = "id"  # the previous stage's rows, by their own ids
        if stage.cache is None:
            stage.cache = self.cache
        if self.durable:
            stage.journal = self.folder / f"stage-{index + 1:02d}.journal"

            def done(stage_report: Report) -> None:
                self.done[name] = stage_report.to_state()
                self._save()

            stage._after_sink = done
        limit = self.limit if index == 0 else None
        stage_report = stage.run(source, limit=limit)
        study.last_report = stage_report
        return stage_report

    def _sink(self) -> None:
        """The last stage's rows to the chain's sinks, every stage's rejects to its rejects."""
        chain = self.chain
        if not chain.sink_specs and chain.rejects_spec is None:
            return
        with SinkSet.open(chain.sink_specs, chain.rejects_spec) as sinks:
            if chain.sink_specs:
                for row in _rows(self._file(len(chain.stages) - 1, "accepted")):
                    sinks.add_row("accepted", row)
            if chain.rejects_spec is not None:
                for index, name in enumerate(chain.names):
                    for row in _rows(self._file(index, "rejects")):
                        sinks.add_row("rejects", {**row, "chain_stage": name})


class _Tee:
    """Rows to two sinks: a stage's own rejects sink and the chain's file of them (built on
    first use, so a stage that fails before writing leaves nothing behind)."""

    name = "tee"

    def __init__(self, *specs: SinkSpec) -> None:
        self._specs = specs
        self._built: list[Sink] | None = None

    @property
    def _sinks(self) -> list[Sink]:
        if self._built is None:
            from mstudy._engine.sinking import build_sink

            self._built = []
            for spec in self._specs:
                self._built.append(build_sink(spec))
        return self._built

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for sink in self._sinks:
            sink.write(rows)

    def prepare(self) -> None:
        from mstudy.interfaces import Preparable

        for sink in self._sinks:
            if isinstance(sink, Preparable):
                sink.prepare()

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()

    def abort(self) -> None:
        for sink in self._built or []:
            with contextlib.suppress(Exception):
                sink.abort()


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with open(path, "rb") as handle:  # lines end at b"\n" only (U+2028 and NEL are text)
        for line in handle:
            yield json.loads(line)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _remove(folder: Path) -> None:
    """Delete a finished chain's folder: renamed to a tombstone first (atomic), then deleted."""
    tomb = tombstone_path(folder)
    _rmtree(tomb)
    try:
        os.rename(folder, tomb)
    except FileNotFoundError:
        return
    fsync_dir(folder.parent)
    _rmtree(tomb)
