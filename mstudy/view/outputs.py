"""What ``mstudy view PATH`` shows, found from PATH: a study's output files (with its report
and, while it runs, its journal) or a probe's folder. Everything here only reads.

- a study config (``.toml``): its ``[[sinks]]`` and ``[rejects]`` files, its journal, its
  source (for the source records) and ``[run]`` prices (for the cost);
- a ``.jsonl`` or ``.parquet`` file: the rows in it (accepted or rejects, by their shape);
- a folder: a probe's (``report.json`` of a probe, ``reversals.jsonl``), a run journal
  (``checkpoint.json``), or a study's outputs: its ``.jsonl``/``.parquet`` files, a
  ``report.json`` (``mstudy run --json-report``) and the journal of a run in progress
  (``.<config>.journal/``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mstudy.errors import ConfigError
from mstudy.view.rows import JsonlRows, Rows, Skip, open_rows

__all__ = ["Journal", "ProbeFolder", "SourceRecords", "StudyOutputs", "find"]

_ROW_SUFFIXES = (".jsonl", ".parquet")
_MAX_JSON = 50 << 20


def _read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing, too big or not JSON."""
    try:
        if path.stat().st_size > _MAX_JSON:
            return None
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None


def is_study_report(value: Any) -> bool:
    """Whether ``value`` is a study report as ``Report.to_dict`` writes it."""
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("strategies"), Mapping)
        and "accepted" in value
        and "probe" not in value
    )


class Journal:
    """A run journal read in place: its checkpoint (the report and how much of each spool is
    committed) and its spools, read only up to the checkpointed lengths."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.checkpoint: dict[str, Any] | None = None
        self.accepted = JsonlRows(directory / "accepted.jsonl", "accepted", self._limit("accepted"))
        self.rejects = JsonlRows(directory / "rejects.jsonl", "rejects", self._limit("rejects"))

    def _limit(self, name: str) -> Any:
        def limit() -> int:
            if self.checkpoint is None:
                return 0
            return int(self.checkpoint.get("spool_bytes", {}).get(name, 0))

        return limit

    @property
    def exists(self) -> bool:
        return (self.directory / "checkpoint.json").is_file() or (
            self.directory / "accepted.jsonl"
        ).is_file()

    def refresh(self) -> None:
        value = _read_json(self.directory / "checkpoint.json")
        self.checkpoint = value if isinstance(value, dict) else None

    def report(self) -> dict[str, Any] | None:
        """The report at the last checkpoint, as ``Report.to_dict`` gives it."""
        if self.checkpoint is None or not isinstance(self.checkpoint.get("report"), dict):
            return None
        from mstudy.report import Report

        try:
            return Report.from_state(self.checkpoint["report"]).to_dict()
        except ValueError:
            return None


@dataclass
class SourceRecords:
    """The study's source, to show each row's source record: ids as the study derives them."""

    path: Path
    id_field: str = "id"
    _rows: Rows | None = None
    _ids: dict[str, int] | None = None
    error: str | None = None

    def get(self, source_id: str) -> dict[str, Any] | None:
        if self._ids is None:
            self._build()
        assert self._ids is not None
        number = self._ids.get(source_id)
        if number is None or self._rows is None:
            return None
        return self._rows.read([number])[0]

    def _build(self) -> None:
        from mstudy.errors import RecordError
        from mstudy.records import Record

        self._ids = {}
        rows = open_rows(self.path, "records")
        rows.refresh()
        self.error = rows.error
        self._rows = rows
        for number, row in rows.iter_rows():
            try:
                record = Record.from_mapping(row, number, self.id_field)
            except RecordError:
                continue
            self._ids.setdefault(record.id, number)


@dataclass
class StudyOutputs:
    """A study's outputs: accepted and rejects files, report, journal, source, prices."""

    title: str
    files: list[Path] = field(default_factory=list)
    """Row files (their kind comes from their rows)."""
    rejects_files: list[Path] = field(default_factory=list)
    """Files named as rejects (a config's ``[rejects]``)."""
    report_path: Path | None = None
    journal: Journal | None = None
    source: SourceRecords | None = None
    prices: tuple[float, float] | None = None
    folder: Path | None = None
    """Looked at again on refresh: row files and a report that appear while a run goes."""
    _rows: dict[Path, Rows] = field(default_factory=dict)

    def refresh(self) -> None:
        if self.folder is not None:
            found = _study_files(self.folder)
            self.files = found["files"]
            self.report_path = self.report_path or found["report"]
            if self.journal is None and found["journal"] is not None:
                self.journal = Journal(found["journal"])
        if self.journal is not None:
            self.journal.refresh()
        for rows in self.tables():
            rows.refresh()

    @property
    def live(self) -> bool:
        """Whether a run is in progress (its journal holds a checkpoint)."""
        return self.journal is not None and self.journal.checkpoint is not None

    def _open(self, path: Path, kind: Any = "any") -> Rows:
        rows = self._rows.get(path)
        if rows is None:
            rows = self._rows[path] = open_rows(path, kind)
        return rows

    def tables(self) -> list[Rows]:
        """The row files shown now: the journal's spools while a run goes, else the outputs."""
        if self.live and self.journal is not None:
            return [self.journal.accepted, self.journal.rejects]
        out = [self._open(p) for p in self.files if p.exists()]
        out += [self._open(p, "rejects") for p in self.rejects_files if p.exists()]
        return out

    def accepted(self) -> list[Rows]:
        return [t for t in self.tables() if t.kind == "accepted" and t.error is None]

    def rejects(self) -> list[Rows]:
        return [t for t in self.tables() if t.kind == "rejects" and t.error is None]

    def skips(self) -> list[Skip]:
        """What is not shown, and why: unreadable files, files of another shape, bad lines."""
        out: list[Skip] = []
        for rows in self.tables():
            if rows.error is not None:
                out.append(Skip(str(rows.path), None, rows.error))
            elif rows.kind == "other":
                out.append(
                    Skip(str(rows.path), None, "not mstudy output rows (no source_id/strategy)")
                )
            out.extend(rows.skips)
            if rows.skipped > len(rows.skips):
                more = rows.skipped - len(rows.skips)
                out.append(Skip(str(rows.path), None, f"{more} more lines skipped"))
            tail = getattr(rows, "tail", None)
            if tail is not None and not self.live:
                out.append(tail)
        return out

    def missing(self) -> list[Path]:
        """Files the config names that are not there (yet)."""
        return [p for p in (*self.files, *self.rejects_files) if not p.exists()]

    def report(self) -> dict[str, Any] | None:
        """The run's report: the journal's while it runs, else ``report.json``."""
        if self.live and self.journal is not None:
            return self.journal.report()
        if self.report_path is not None:
            value = _read_json(self.report_path)
            if is_study_report(value):
                return dict(value)
        return None

    def counted(self) -> dict[str, Any]:
        """Figures counted from the rows themselves (shown when there is no report).

        Every sink of a study gets every accepted row, so they are counted in one file (the
        first accepted one, and the first rejects one), not summed over the sinks.
        """
        accepted: Counter[str] = Counter()
        for rows in self.accepted()[:1]:
            for (strategy,), n in rows.counts("strategy").items():
                accepted[strategy] += n
        rejected: Counter[tuple[str, str, str]] = Counter()
        for rows in self.rejects()[:1]:
            for key, n in rows.counts("strategy", "stage", "reason").items():
                rejected[(key[0], key[1], key[2])] += n
        return {"accepted": accepted, "rejected": rejected}

    def version(self) -> str:
        """Changes whenever what the page shows may have changed (for live refresh)."""
        parts = []
        paths = [*self.files, *self.rejects_files]
        if self.report_path is not None:
            paths.append(self.report_path)
        if self.journal is not None:
            paths += [self.journal.directory / n for n in ("checkpoint.json",)]
        for path in paths:
            try:
                stat = path.stat()
                parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}")
            except OSError:
                parts.append(f"{path}:-")
        return str(hash("|".join(parts)) & 0xFFFFFFFF)


@dataclass
class ProbeFolder:
    """A reversal probe's ``out/`` folder (what :func:`mstudy.probes.write_outputs` wrote)."""

    folder: Path

    @property
    def title(self) -> str:
        return f"probe {self.folder}"

    def report(self) -> dict[str, Any] | None:
        value = _read_json(self.folder / "report.json")
        return value if isinstance(value, dict) else None

    def table(self) -> str | None:
        try:
            with open(self.folder / "table.md", encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return None

    def reversals(self) -> JsonlRows:
        rows = JsonlRows(self.folder / "reversals.jsonl", "records")
        rows.refresh()
        return rows

    def version(self) -> str:
        parts = []
        for name in ("report.json", "table.md", "chart.png", "reversals.jsonl"):
            try:
                stat = (self.folder / name).stat()
                parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
            except OSError:
                parts.append(f"{name}:-")
        return str(hash("|".join(parts)) & 0xFFFFFFFF)


def _study_files(folder: Path) -> dict[str, Any]:
    files, report, journal = [], None, None
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            if name.endswith(".journal") and entry.is_dir() and journal is None:
                journal = entry
            continue
        if entry.is_file() and entry.suffix in _ROW_SUFFIXES:
            files.append(entry)
        elif (
            entry.is_file()
            and entry.suffix == ".json"
            and report is None
            and is_study_report(_read_json(entry))
        ):
            report = entry
    return {"files": files, "report": report, "journal": journal}


def _is_probe_folder(folder: Path) -> bool:
    value = _read_json(folder / "report.json")
    if isinstance(value, Mapping) and "probe" in value:
        return True
    return (folder / "reversals.jsonl").is_file() and (folder / "table.md").is_file()


def find(path: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> Any:
    """What to show for ``path``: a :class:`StudyOutputs` or a :class:`ProbeFolder`.

    Raises ConfigError (``parameter="path"``) when there is nothing to show there.
    """
    target = Path(path)
    if not target.exists():
        raise ConfigError(f"nothing to view at {target}: no such file or folder", parameter="path")
    found: StudyOutputs | ProbeFolder
    if target.is_dir():
        if _is_probe_folder(target):
            return ProbeFolder(target)
        if (target / "checkpoint.json").is_file() or (
            (target / "accepted.jsonl").is_file() and (target / "rejects.jsonl").is_file()
        ):
            found = StudyOutputs(f"run journal {target}", journal=Journal(target))
        else:
            listing = _study_files(target)
            if not listing["files"] and listing["journal"] is None:
                raise ConfigError(
                    f"nothing to view in {target}: no .jsonl or .parquet output, no run "
                    "journal and no probe report.json",
                    parameter="path",
                )
            found = StudyOutputs(f"{target}", folder=target)
    elif target.suffix == ".toml":
        found = _from_config(target)
    elif target.suffix in _ROW_SUFFIXES:
        found = StudyOutputs(f"{target}", files=[target])
    else:
        raise ConfigError(
            f"cannot view {target}: give an output folder, a .jsonl or .parquet file, a probe's "
            "folder or a study config (.toml)",
            parameter="path",
        )
    if source is not None:
        if not Path(source).is_file():
            raise ConfigError(f"no source file at {source}", parameter="source")
        found.source = SourceRecords(Path(source))
    found.refresh()
    return found


def _from_config(path: Path) -> StudyOutputs:
    from mstudy.config import load_config, resolve_path

    config = load_config(path)
    files = [
        Path(resolve_path(t["path"], config.base_dir))
        for t in config.sinks
        if isinstance(t.get("path"), str) and Path(str(t["path"])).suffix in _ROW_SUFFIXES
    ]
    rejects = []
    if config.rejects is not None and isinstance(config.rejects.get("path"), str):
        rejects.append(Path(resolve_path(config.rejects["path"], config.base_dir)))

    class _Sink:
        def __init__(self, path: Path) -> None:
            self.path = path

    journal = config.journal_dir([_Sink(p) for p in (*files, *rejects)])
    source = None
    source_path = Path(config.source_path)
    if source_path.is_file() and source_path.suffix in _ROW_SUFFIXES:
        source = SourceRecords(source_path, config.id_field)
    prices = None
    if "price_in" in config.run or "price_out" in config.run:
        prices = (float(config.run.get("price_in", 0)), float(config.run.get("price_out", 0)))
    report = next(
        (p.parent / "report.json" for p in files if (p.parent / "report.json").is_file()), None
    )
    return StudyOutputs(
        f"study {path}",
        files=files,
        rejects_files=rejects,
        report_path=report,
        journal=Journal(journal) if journal is not None else None,
        source=source,
        prices=prices,
    )
