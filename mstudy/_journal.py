"""The run journal: what makes a killed run resume exactly where it stopped.

A resumable run keeps a directory with three files:

- ``accepted.jsonl`` and ``rejects.jsonl``: spools of the rows decided so far, appended in
  source order;
- ``checkpoint.json``: how many source items are fully decided, the byte length of each spool
  at that point, the report and the state of stateful filters, as versioned JSON
  (``{"format": "mstudy._journal.v2", ...}``). It is replaced atomically (write, fsync,
  rename, fsync the directory).

On resume the spools are cut back to the checkpointed lengths (a torn or uncommitted tail is
dropped), the source is skipped to the checkpointed position, and the run goes on. Teacher
calls made after the checkpoint are not lost: they sit in the call cache. Only when every item
is decided are the spools streamed into the study's sinks, which commit atomically; then the
journal is removed. A kill at any instant therefore yields, after a rerun, the same rows as an
uninterrupted run, each once.

One run at a time: opening a journal takes an exclusive lock on its directory
(:mod:`mstudy._locks`), held until :meth:`Journal.remove` or :meth:`Journal.close`; a second
run gets :class:`~mstudy.errors.LockedError` at once.

Removal is crash-safe: the directory is first renamed to a tombstone beside it
(``.<name>.removed``, one atomic step that ends the journal), then deleted. A tombstone left
by a kill is deleted by the next run that opens the journal.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from mstudy._locks import PathLock
from mstudy.errors import ConfigError, SinkError
from mstudy.report import Report
from mstudy.sinks.base import commit_path, fsync_dir

CHECKPOINT = "checkpoint.json"
OLD_CHECKPOINT = "checkpoint.pkl"
"""The checkpoint of mstudy 0.x before the JSON format: never read (it is a pickle)."""
SPOOLS = ("accepted", "rejects")
FORMAT = "mstudy._journal.v2"
RESTART = "start over with restart=True (CLI: --restart)"


@dataclass
class Checkpoint:
    """The durable state of an interrupted run."""

    fingerprint: Mapping[str, Any]
    items_done: int = 0
    last_id: str | None = None
    spool_bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPOOLS, 0))
    report: Report | None = None
    filter_states: dict[str, Any] = field(default_factory=dict)
    phase: str = "studying"
    format: str = FORMAT
    saved_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """The checkpoint as a JSON value (the report by :meth:`Report.to_state`)."""
        return {
            "format": self.format,
            "fingerprint": dict(self.fingerprint),
            "items_done": self.items_done,
            "last_id": self.last_id,
            "spool_bytes": dict(self.spool_bytes),
            "report": self.report.to_state() if self.report is not None else None,
            "filter_states": dict(self.filter_states),
            "phase": self.phase,
            "saved_at": self.saved_at,
        }

    @classmethod
    def from_json(cls, value: Any) -> Checkpoint:
        """The checkpoint :meth:`to_json` wrote; ValueError when ``value`` is not one."""
        try:
            report = value["report"]
            spool_bytes = {name: int(value["spool_bytes"][name]) for name in SPOOLS}
            last_id = value["last_id"]
            return cls(
                fingerprint=dict(value["fingerprint"]),
                items_done=int(value["items_done"]),
                last_id=None if last_id is None else str(last_id),
                spool_bytes=spool_bytes,
                report=Report.from_state(report) if report is not None else None,
                filter_states=dict(value["filter_states"]),
                phase=str(value["phase"]),
                format=str(value["format"]),
                saved_at=float(value["saved_at"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from exc


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _check_filter_states(states: Mapping[str, Any]) -> None:
    """Name the filter whose ``get_state()`` is not a JSON value."""
    for name, state in states.items():
        try:
            _dumps(state)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ConfigError(
                f"filter {name!r}: get_state() returned a value that is not JSON ({exc}); "
                "a stateful filter must return dicts, lists, strings, finite numbers, "
                "booleans or None (see mstudy.interfaces.Stateful)"
            ) from exc


def tombstone_path(directory: str | os.PathLike[str]) -> Path:
    """Where a journal is moved while it is being removed: ``.<name>.removed`` beside it."""
    directory = Path(os.path.abspath(os.fspath(directory)))
    return directory.with_name(f".{directory.name}.removed")


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Journal:
    """The directory of one resumable run (see the module docstring).

    Opening it locks it until :meth:`remove` or :meth:`close` (also a context manager).
    """

    def __init__(
        self, directory: str | Path, fingerprint: Mapping[str, Any], *, restart: bool = False
    ) -> None:
        self.directory = Path(directory)
        try:  # compared with a checkpoint's, which went through JSON
            self.fingerprint: dict[str, Any] = json.loads(_dumps(dict(fingerprint)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"the study's fingerprint is not JSON: {exc}") from exc
        self._spools: dict[str, IO[bytes]] = {}
        try:
            self.directory.absolute().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create the run journal at {self.directory}: {exc}") from exc
        self._lock = PathLock(self.directory, what="run journal").acquire()
        try:
            _rmtree(tombstone_path(self.directory))  # a finished run's, killed while removing
            if restart and self.directory.exists():
                self._delete()
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SinkError(
                    f"cannot create the run journal at {self.directory}: {exc}"
                ) from exc
            self.state = self._load()
        except BaseException:
            self._lock.release()
            raise

    def _load(self) -> Checkpoint | None:
        if (self.directory / OLD_CHECKPOINT).exists():
            raise ConfigError(
                f"the run journal at {self.directory} was written by an older mstudy version "
                f"({OLD_CHECKPOINT}), whose checkpoints this version does not read; {RESTART}"
            )
        path = self.directory / CHECKPOINT
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SinkError(f"cannot read the run journal checkpoint {path}: {exc}") from exc
        try:
            value = json.loads(data)
            written = value.get("format") if isinstance(value, dict) else None
        except ValueError as exc:
            raise ConfigError(
                f"the run journal at {self.directory} is unreadable ({path.name}: {exc}); {RESTART}"
            ) from exc
        if written != FORMAT:
            raise ConfigError(
                f"the run journal at {self.directory} was written by another mstudy version "
                f"(format {written!r}, this version reads {FORMAT!r}); {RESTART}"
            )
        try:
            state = Checkpoint.from_json(value)
        except ValueError as exc:
            raise ConfigError(
                f"the run journal at {self.directory} is unreadable ({path.name}: {exc}); {RESTART}"
            ) from exc
        changes = _differences(state.fingerprint, self.fingerprint)
        if changes:
            raise ConfigError(
                f"the study changed since the interrupted run in {self.directory}, so its rows "
                f"cannot be mixed with new ones ({'; '.join(changes)}). Restore the old "
                f"settings to resume, or {RESTART}"
            )
        for name, size in state.spool_bytes.items():
            spool = self.spool_path(name)
            have = spool.stat().st_size if spool.exists() else None
            if size and (have is None or have < size):
                found = "is missing" if have is None else f"has {have} bytes of {size}"
                raise ConfigError(
                    f"the run journal at {self.directory} is damaged: its spool {spool.name} "
                    f"{found}; {RESTART}"
                )
        return state

    @property
    def resumed(self) -> bool:
        return self.state is not None

    def spool_path(self, name: str) -> Path:
        return self.directory / f"{name}.jsonl"

    def open_spools(self) -> None:
        """Open the spools for appending, cut back to the checkpointed lengths."""
        sizes = self.state.spool_bytes if self.state else dict.fromkeys(SPOOLS, 0)
        for name in SPOOLS:
            path = self.spool_path(name)
            try:
                handle = open(path, "ab" if path.exists() else "wb")  # noqa: SIM115
                handle.truncate(sizes[name])
                handle.seek(sizes[name])
            except OSError as exc:
                raise SinkError(f"cannot open the journal spool {path}: {exc}") from exc
            self._spools[name] = handle

    def append(self, name: str, lines: list[bytes]) -> None:
        """Append encoded rows to a spool (durable only at the next checkpoint)."""
        try:
            self._spools[name].write(b"".join(lines))
        except OSError as exc:
            raise SinkError(
                f"cannot write the journal spool {self.spool_path(name)}: {exc}"
            ) from exc

    def checkpoint(
        self,
        *,
        items_done: int,
        last_id: str | None,
        report: Report,
        filter_states: dict[str, Any],
        phase: str = "studying",
    ) -> None:
        """Make the spools durable, then record the position atomically.

        ``filter_states`` maps filter names to JSON values; one that is not raises
        :class:`~mstudy.errors.ConfigError` naming the filter.
        """
        report.tick()
        sizes: dict[str, int] = {}
        try:
            for name, handle in self._spools.items():
                handle.flush()
                os.fsync(handle.fileno())
                sizes[name] = handle.tell()
            state = Checkpoint(
                self.fingerprint, items_done, last_id, sizes, report, filter_states, phase
            )
            try:
                data = _dumps(state.to_json())
            except (TypeError, ValueError, RecursionError):
                _check_filter_states(filter_states)
                raise
            tmp = self.directory / f".{CHECKPOINT}.tmp"
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            commit_path(tmp, self.directory / CHECKPOINT)
        except OSError as exc:
            raise SinkError(
                f"cannot write a checkpoint to the run journal at {self.directory}: {exc}; "
                "the run can be resumed from the previous checkpoint"
            ) from exc
        self.state = state

    def close_spools(self) -> None:
        for handle in self._spools.values():
            handle.close()
        self._spools.clear()

    def rows(self, name: str) -> Iterator[dict[str, Any]]:
        """The checkpointed rows of a spool, in order."""
        limit = self.state.spool_bytes[name] if self.state else 0
        if not limit:
            return
        path = self.spool_path(name)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise SinkError(
                f"cannot read the journal spool {path} (the journal is damaged: {RESTART}): {exc}"
            ) from exc
        with handle:
            read = 0
            for line in handle:
                read += len(line)
                if read > limit:
                    return
                yield json.loads(line)

    def _delete(self) -> None:
        """Delete the directory so that a kill at any step leaves either the journal as it
        was or none: it is renamed to a tombstone (atomic), then the tombstone is deleted."""
        tomb = tombstone_path(self.directory)
        _rmtree(tomb)
        try:
            os.rename(self.directory, tomb)
        except FileNotFoundError:
            return
        except OSError:  # cannot be renamed (open files on Windows): end it in place
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / CHECKPOINT)  # without it the rest is no journal
            with contextlib.suppress(OSError):
                fsync_dir(self.directory)
            _rmtree(self.directory)
            return
        with contextlib.suppress(OSError):
            fsync_dir(tomb.parent)
        _rmtree(tomb)

    def remove(self) -> None:
        """Delete the journal (after the sinks committed, or to start over) and unlock it."""
        self.close_spools()
        try:
            self._delete()
        finally:
            self._lock.release()

    def close(self) -> None:
        """Close the spools and unlock the journal, keeping it for a later run."""
        self.close_spools()
        self._lock.release()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
