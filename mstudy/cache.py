"""A content-addressed store of teacher calls, in SQLite (WAL mode).

A call is keyed by the teacher's fingerprint and the request key (a hash of the messages,
generation params, sample index and prefill), so it is shared across strategies, studies and
runs: a result that was stored is never paid for again. Safe with many writers: threads of one
process and several processes on one file. Failed calls are not stored.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from mstudy.errors import CacheError
from mstudy.records import Completion

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    teacher TEXT NOT NULL,
    key TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (teacher, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outcomes (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
"""


_BATCH = 500  # keys per SELECT: well under SQLite's limit on bound parameters
_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (primary result codes)
_UNCODED_RETRY_S = 5.0


def _is_busy(exc: sqlite3.Error) -> bool | None:
    """Whether SQLite said the database is busy or locked; None where Python does not say.

    ``sqlite_errorcode`` exists from Python 3.11; on 3.10 the code is not exposed at all (only
    the message has it), so the caller decides without it rather than read the text.
    """
    code = getattr(exc, "sqlite_errorcode", None)  # 3.11+
    return None if code is None else (code & 0xFF) in _BUSY_CODES


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What a cache holds."""

    path: str
    entries: int
    teachers: dict[str, int]
    completion_tokens: int
    size_bytes: int
    outcomes: int = 0

    def __str__(self) -> str:
        lines = [
            f"cache {self.path}: {self.entries} calls, {self.completion_tokens} completion tokens, "
            f"{self.outcomes} record outcomes, {self.size_bytes / 1e6:.1f} MB"
        ]
        lines += [f"  teacher {fp}: {n} calls" for fp, n in sorted(self.teachers.items())]
        return "\n".join(lines)


class CallCache:
    """Stored teacher calls. ``get`` and ``put`` are thread-safe; ``commit`` makes puts durable.

    Puts are committed every ``commit_every`` calls or ``commit_seconds``, whichever comes
    first, and on ``commit``/``close``; the study commits before each journal checkpoint.
    """

    def __init__(
        self, path: str | Path, *, commit_every: int = 16384, commit_seconds: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self._committed_at = time.monotonic()
        self._lock = threading.Lock()
        self._buffer: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._outcomes: dict[str, tuple[str, str, str, float]] = {}
        self.hits = 0
        self.misses = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            self._setup()
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(f"cannot open the call cache at {self.path}: {exc}") from exc

    def _setup(self) -> None:
        """WAL mode and the schema. Switching a new file to WAL takes an exclusive lock that
        SQLite does not wait for, so a process racing another one on a new cache retries."""
        began = time.monotonic()
        deadline = began + 60
        while True:
            try:
                self._db.execute("PRAGMA busy_timeout=60000")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                # Checkpoint (and fsync) every 16 MB of WAL rather than every 4 MB: calls are
                # keyed by hashes, so each commit touches pages all over the table.
                self._db.execute("PRAGMA wal_autocheckpoint=4096")
                # Reads through a memory map: a cached re-run looks up every record.
                self._db.execute("PRAGMA mmap_size=268435456")
                self._db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                busy = _is_busy(exc)
                if busy is None:  # Python 3.10: retry any setup error, for a short while only
                    busy = time.monotonic() < began + _UNCODED_RETRY_S
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __repr__(self) -> str:
        return f"CallCache({str(self.path)!r})"

    def get(self, teacher: str, key: str) -> Completion | None:
        """The stored completion of ``key`` under ``teacher``, marked ``cached``; else None."""
        return self.get_many(teacher, [key]).get(key)

    def get_many(self, teacher: str, keys: Sequence[str]) -> dict[str, Completion]:
        """The stored completions of ``keys`` under ``teacher`` (absent keys left out)."""
        with self._lock:
            wanted = list(dict.fromkeys(keys))
            found = self._select_locked(
                "SELECT key, text, finish_reason, prompt_tokens, completion_tokens FROM calls "
                "WHERE teacher = ? AND",
                (teacher,),
                wanted,
            )
            for key in wanted:
                buffered = self._buffer.get((teacher, key))
                if buffered is not None:
                    found[key] = buffered[2:6]
        self.hits += len(found)
        self.misses += len(wanted) - len(found)
        return {
            key: Completion(key, row[0], row[1], row[2], row[3], teacher, cached=True)
            for key, row in found.items()
        }

    def _select_locked(
        self, query: str, params: tuple[str, ...], keys: list[str]
    ) -> dict[str, tuple[Any, ...]]:
        """``query ... key IN (keys)`` in chunks: each row's first column (the key) mapped to
        the others."""
        found: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"{query} key IN ({marks})", (*params, *chunk))
            found.update((row[0], row[1:]) for row in rows)
        return found

    def put(self, teacher: str, completion: Completion) -> None:
        """Store a successful completion under ``teacher`` (errors are not: they are retried)."""
        if not completion.ok or completion.cached:
            return
        with self._lock:
            self._buffer[(teacher, completion.key)] = (
                teacher,
                completion.key,
                completion.text,
                completion.finish_reason,
                completion.prompt_tokens,
                completion.completion_tokens,
                time.time(),
            )
            if (
                len(self._buffer) >= self.commit_every
                or time.monotonic() - self._committed_at >= self.commit_seconds
            ):
                self._commit_locked()

    def get_outcome(self, key: str) -> str | None:
        """A record's stored outcome (see :mod:`mstudy._memo`), or None."""
        return self.get_outcomes([key]).get(key)

    def get_outcomes(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored outcomes of ``keys`` (absent keys left out)."""
        with self._lock:
            wanted = list(dict.fromkeys(keys))
            found = {
                key: str(row[0])
                for key, row in self._select_locked(
                    "SELECT key, payload FROM outcomes WHERE", (), wanted
                ).items()
            }
            for key in wanted:
                buffered = self._outcomes.get(key)
                if buffered is not None:
                    found[key] = buffered[2]
        return found

    def put_outcome(self, key: str, teacher: str, payload: str) -> None:
        """Store a record's outcome under ``key`` (committed with the calls)."""
        with self._lock:
            self._outcomes[key] = (key, teacher, payload, time.time())
            if len(self._outcomes) >= self.commit_every:
                self._commit_locked()

    def commit(self) -> None:
        """Make every put so far durable."""
        with self._lock:
            self._commit_locked()

    def _commit_locked(self) -> None:
        """Write the buffered puts in one write transaction (waits for other writers)."""
        if self._buffer or self._outcomes:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?)",
                    list(self._buffer.values()),
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?)",
                    list(self._outcomes.values()),
                )
                self._db.execute("COMMIT")
            except BaseException as exc:  # no transaction may stay open, whatever failed
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise CacheError(f"cannot write the call cache at {self.path}: {exc}") from exc
                raise
            self._buffer.clear()
            self._outcomes.clear()
        self._committed_at = time.monotonic()

    def stats(self) -> CacheStats:
        """Counts per teacher fingerprint, tokens and file size."""
        with self._lock:
            self._commit_locked()
            teachers = dict(
                self._db.execute("SELECT teacher, COUNT(*) FROM calls GROUP BY teacher").fetchall()
            )
            tokens = self._db.execute("SELECT COALESCE(SUM(completion_tokens), 0) FROM calls")
            completion_tokens = int(tokens.fetchone()[0])
            outcomes = int(self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0])
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))
        return CacheStats(
            str(self.path), sum(teachers.values()), teachers, completion_tokens, size, outcomes
        )

    def prune(self, *, older_than_s: float | None = None, teacher: str | None = None) -> int:
        """Delete calls older than ``older_than_s`` seconds and/or of one teacher; the count."""
        clauses: list[str] = []
        args: list[float | str] = []
        if older_than_s is not None:
            clauses.append("created < ?")
            args.append(time.time() - older_than_s)
        if teacher is not None:
            clauses.append("teacher = ?")
            args.append(teacher)
        where = " AND ".join(clauses) or "1"
        with self._lock:
            self._commit_locked()
            deleted = self._db.execute(f"DELETE FROM calls WHERE {where}", args).rowcount
            self._db.execute(f"DELETE FROM outcomes WHERE {where}", args)
            self._db.execute("VACUUM")
        return int(deleted)

    def close(self) -> None:
        """Commit and close."""
        with self._lock:
            try:
                self._commit_locked()
            finally:
                self._db.close()

    def __enter__(self) -> CallCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["CacheStats", "CallCache"]
