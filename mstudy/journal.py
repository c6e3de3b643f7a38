"""The run journal: what makes a killed run resume exactly where it stopped.

A resumable run keeps a directory with three files:

- ``accepted.jsonl`` and ``rejects.jsonl``: spools of the rows decided so far, appended in
  source order;
- ``checkpoint.pkl``: how many source items are fully decided, the byte length of each spool at
  that point, the report's counts and the state of stateful filters. It is replaced atomically
  (write, fsync, rename, fsync the directory).

On resume the spools are cut back to the checkpointed lengths (a torn or uncommitted tail is
dropped), the source is skipped to the checkpointed position, and the run goes on. Teacher
calls made after the checkpoint are not lost: they sit in the call cache. Only when every item
is decided are the spools streamed into the study's sinks, which commit atomically; then the
journal is removed. A kill at any instant therefore yields, after a rerun, the same rows as an
uninterrupted run, each once.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mstudy.errors import ConfigError, SinkError
from mstudy.report import Report

CHECKPOINT = "checkpoint.pkl"
SPOOLS = ("accepted", "rejects")
FORMAT = 1


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
    format: int = FORMAT
    saved_at: float = field(default_factory=time.time)


def _fsync_dir(directory: Path) -> None:
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    fd = os.open(directory, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


class Journal:
    """The directory of one resumable run (see the module docstring)."""

    def __init__(
        self, directory: str | Path, fingerprint: Mapping[str, Any], *, restart: bool = False
    ) -> None:
        self.directory = Path(directory)
        self.fingerprint = dict(fingerprint)
        self._spools: dict[str, IO[bytes]] = {}
        if restart and self.directory.exists():
            self.remove()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create the run journal at {self.directory}: {exc}") from exc
        self.state = self._load()

    def _load(self) -> Checkpoint | None:
        path = self.directory / CHECKPOINT
        if not path.exists():
            return None
        try:
            with open(path, "rb") as handle:
                state = pickle.load(handle)
        except Exception as exc:
            raise ConfigError(
                f"the run journal at {self.directory} is unreadable ({exc}); "
                "start over with restart=True (CLI: --restart)"
            ) from exc
        if not isinstance(state, Checkpoint) or state.format != FORMAT:
            raise ConfigError(
                f"the run journal at {self.directory} was written by another mstudy version; "
                "start over with restart=True (CLI: --restart)"
            )
        changes = _differences(state.fingerprint, self.fingerprint)
        if changes:
            raise ConfigError(
                f"the study changed since the interrupted run in {self.directory}, so its rows "
                f"cannot be mixed with new ones ({'; '.join(changes)}). Restore the old "
                "settings to resume, or start over with restart=True (CLI: --restart)"
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
        """Make the spools durable, then record the position atomically."""
        sizes: dict[str, int] = {}
        try:
            for name, handle in self._spools.items():
                handle.flush()
                os.fsync(handle.fileno())
                sizes[name] = handle.tell()
            state = Checkpoint(
                self.fingerprint, items_done, last_id, sizes, report, filter_states, phase
            )
            tmp = self.directory / f".{CHECKPOINT}.tmp"
            with open(tmp, "wb") as handle:
                pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.directory / CHECKPOINT)
            _fsync_dir(self.directory)
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
        with open(self.spool_path(name), "rb") as handle:
            read = 0
            for line in handle:
                read += len(line)
                if read > limit:
                    return
                yield json.loads(line)

    def remove(self) -> None:
        """Delete the journal (after the sinks committed, or to start over)."""
        self.close_spools()
        shutil.rmtree(self.directory, ignore_errors=True)
