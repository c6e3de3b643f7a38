"""Sharded output: a directory of part files and a ``manifest.json``, committed as a whole.

``JSONLSink(path, rows_per_shard=N)`` and ``ParquetSink(path, rows_per_shard=N)`` write a
directory instead of one file. Rows go to shards by their order: shard ``k`` holds rows
``k*N`` to ``(k+1)*N - 1``, so the same rows always give the same parts and the same
manifest, however the rows were batched and whatever wrote them. Each full shard is
written by one of ``workers`` threads while later rows arrive (file writes, ``fsync``,
hashing and Parquet's encoding and compression release the GIL; JSONL rows are encoded as
they come, as the one-file sink does), or with ``executor="process"`` by worker processes
that get the rows pickled and encode them there.

Parts are written into ``<dir>/.partial/`` and only committing moves them into ``<dir>``,
named ``part-00000-<sha256 prefix>.<ext>`` (after their content, so a new output never
overwrites a part the previous manifest names), then writes ``manifest.json`` beside them
(temporary file, ``fsync``, ``os.replace``, directory ``fsync``): the manifest is the commit
point. A reader trusts the manifest alone (:func:`read_manifest`, :func:`read_sharded`);
parts no manifest names (a killed run's) are removed by the next commit. Killed before the
manifest was replaced, the directory still holds the previous output, intact.

The manifest (``FORMAT`` ``"mstudy.sharded"``, ``version`` 1)::

    {"format": "mstudy.sharded", "version": 1, "file_format": "jsonl",
     "rows_per_shard": 1000, "total_rows": 2500, "study": "<sha256 of the study's
     fingerprint, or null>", "files": [{"path": "part-00000-<12 hex>.jsonl", "rows": 1000,
     "bytes": 81234, "sha256": "<64 hex>"}, ...]}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import pickle
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mstudy._locks import PathLock
from mstudy.errors import MstudyError, SinkError
from mstudy.sinks.base import BaseSink, ensure_parent, fsync_dir, sink_error

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "ManifestError",
    "Part",
    "ShardWriter",
    "read_manifest",
    "read_sharded",
]

FORMAT = "mstudy.sharded"
VERSION = 1
MANIFEST = "manifest.json"
STAGING = ".partial"
_PART = re.compile(r"^part-\d{5,}-[0-9a-f]{12}\.(jsonl|parquet)$")


class ManifestError(MstudyError, ValueError):
    """A sharded output cannot be trusted: no manifest, a malformed one, or a part that is
    missing or whose content disagrees with the manifest.

    ``path`` is the manifest; ``file`` the part at fault (None when the manifest itself is);
    ``reason`` one of ``"missing_manifest"``, ``"bad_manifest"``, ``"missing_part"``,
    ``"size_mismatch"``, ``"sha256_mismatch"``; ``expected``/``actual`` the values compared.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path,
        reason: str,
        file: Path | None = None,
        expected: object = None,
        actual: object = None,
    ) -> None:
        super().__init__(message)
        self.path, self.reason, self.file = path, reason, file
        self.expected, self.actual = expected, actual


@dataclass(frozen=True, slots=True)
class Part:
    """One part file as the manifest lists it (``path`` absolute when read back)."""

    path: Path
    rows: int
    bytes: int
    sha256: str


ShardMaker = Callable[[Path], BaseSink]
"""Builds the sink that writes one shard's rows to a file (``JSONLSink``, ``ParquetSink``);
with ``executor="process"`` it must pickle (a class, or a ``functools.partial`` of one)."""
Summarize = Callable[[BaseSink], Any]
"""What ``unify`` needs to know of a written shard's sink (a module-level function)."""
Unify = Callable[[list[Any], list[Path], Callable[..., list[Any]]], list[int]]
"""Called with every shard's summary and file before the manifest is made (Parquet gives
all shards one schema) and a function mapping over items in threads; returns the indices
of the files it rewrote."""
EXECUTORS = ("thread", "process")


@dataclass(frozen=True, slots=True)
class _Written:
    rows: int
    summary: Any
    sha256: str
    bytes: int


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)  # releases the GIL on large chunks
            size += len(chunk)
    return digest.hexdigest(), size


def _done(function: Callable[..., _Written], *args: Any) -> Future[_Written]:
    """A future of ``function(*args)`` run here and now (its error kept in the future)."""
    future: Future[_Written] = Future()
    try:
        future.set_result(function(*args))
    except BaseException as exc:
        future.set_exception(exc)
    return future


_Payload = tuple[str, Any]
"""A shard's rows: ``("data", bytes)`` encoded, ``("pickled", [bytes])`` pickled batches
(for a worker process), or ``("rows", [dict])``."""


def _write_shard(
    make: ShardMaker | None,
    encode: Callable[[Sequence[dict[str, Any]]], bytes] | None,
    summarize: Summarize | None,
    path: Path,
    payload: _Payload,
    rows: int,
) -> _Written:
    """Write one shard and hash it: encoded bytes as they are, rows encoded by ``encode`` or
    through the sink ``make`` builds."""
    kind, value = payload
    if kind == "pickled":
        kind, value = "rows", [row for blob in value for row in pickle.loads(blob)]
    if kind == "rows" and encode is not None:
        kind, value = "data", encode(value)
    if kind == "data":
        try:
            with open(path, "xb") as handle:
                handle.write(value)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise sink_error("write", path, exc) from exc
        digest, size = _sha256(path)
        return _Written(rows, None, digest, size)
    assert make is not None
    sink = make(path)
    try:
        sink.write_owned(value)  # the shard's rows are copies already
        sink.close()
    except BaseException:
        sink.abort()
        raise
    digest, size = _sha256(path)
    return _Written(sink.rows_written, summarize(sink) if summarize else None, digest, size)


class ShardWriter:
    """The sharded output at ``path`` (a directory): rows in, parts and a manifest out.

    Used by the file sinks given ``rows_per_shard`` (the sink calls :meth:`add`,
    :meth:`prepare`, :meth:`commit`, :meth:`discard` from its own life cycle). The
    directory is locked from construction to commit or discard; a ``.partial`` folder a
    dead run left is removed first. Shards are written by ``workers`` threads, or with
    ``executor="process"`` by as many worker processes (started with ``spawn`` once there
    is a second shard; rows are pickled to them).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        suffix: str,
        rows_per_shard: int,
        make: ShardMaker | None = None,
        encode: Callable[[Sequence[dict[str, Any]]], bytes] | None = None,
        workers: int | None = None,
        executor: str = "thread",
        summarize: Summarize | None = None,
        unify: Unify | None = None,
    ) -> None:
        if isinstance(rows_per_shard, bool) or rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
        self.path: Path = ensure_parent(path, directory=True)
        self.suffix, self.rows_per_shard = suffix, rows_per_shard
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.executor = executor
        self.study: str | None = None
        """sha256 of the study's fingerprint, written to the manifest (set by the run)."""
        if (make is None) == (encode is None):
            raise ValueError("give make (a sink for each shard) or encode (rows to bytes)")
        self._make, self._encode = make, encode
        self._summarize, self._unify = summarize, unify
        self._lock = PathLock(self.path).acquire()
        self._staging = self.path / STAGING
        try:
            self.path.mkdir(exist_ok=True)
            shutil.rmtree(self._staging, ignore_errors=True)  # a dead run's
            self._staging.mkdir()
        except OSError as exc:
            self._lock.release()
            raise sink_error("create", self._staging, exc) from exc
        self._buffer: list[dict[str, Any]] = []  # the open shard's rows, or
        self._chunks: list[bytes] = []  # ... its encoded or pickled batches
        self._count = 0
        self._futures: list[Future[_Written]] = []
        self._pool: Executor | None = None
        self._parts: list[Part] = []
        self._moved: list[Path] = []
        self._done = False

    # -- writing -----------------------------------------------------------------------------
    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        """Buffer rows (encoded at once when the sink gave ``encode``, pickled at once for
        worker processes); every full shard goes to the pool to be written."""
        start = 0
        while start < len(rows):
            chunk = rows[start : start + self.rows_per_shard - self._count]
            if self.executor == "process":
                self._chunks.append(self._pickle(chunk))
            elif self._encode is not None:
                self._chunks.append(self._encode(chunk))
            else:
                self._buffer.extend(chunk)
            self._count += len(chunk)
            start += len(chunk)
            if self._count == self.rows_per_shard:
                self._submit()

    def _pickle(self, rows: Sequence[dict[str, Any]]) -> bytes:
        try:
            return pickle.dumps(list(rows), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # any value may refuse pickling
            raise SinkError(
                f"{self.path}: the rows of shard {len(self._futures)} cannot be sent to a "
                f'worker process ({type(exc).__name__}: {exc}); use executor = "thread"'
            ) from exc

    def _staged(self, index: int) -> Path:
        return self._staging / f"part-{index:05d}{self.suffix}"

    def _submit(self, last: bool = False) -> None:
        count, self._count = self._count, 0
        payload: _Payload
        if self.executor == "process":
            payload = ("pickled", self._chunks)
        elif self._encode is not None:
            payload = ("data", b"".join(self._chunks))
        else:
            payload = ("rows", self._buffer)
        self._chunks, self._buffer = [], []
        index = len(self._futures)
        job = (self._make, self._encode, self._summarize, self._staged(index), payload, count)
        if self._pool is None:
            if self.executor == "process" and index == 0 and last:  # one shard: no processes
                self._futures.append(_done(_write_shard, *job))
                return
            self._pool = self._new_pool()
        pending = [f for f in self._futures if not f.done()]
        if len(pending) >= 2 * self.workers:  # bounded memory: wait for the oldest
            pending[0].result()
        self._futures.append(self._pool.submit(_write_shard, *job))

    def _new_pool(self) -> Executor:
        if self.executor == "process":
            context = multiprocessing.get_context("spawn")
            return ProcessPoolExecutor(self.workers, mp_context=context)
        return ThreadPoolExecutor(self.workers, thread_name_prefix="mstudy-shard")

    def prepare(self) -> None:
        """Write the last shard, wait for all, give the sink's ``unify`` its say and stage
        the manifest: everything that can fail before the commit."""
        if self._count:
            self._submit(last=True)
        written = [future.result() for future in self._futures]
        self._shutdown()
        files = [self._staged(i) for i in range(len(written))]
        if self._unify is not None and written:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="mstudy-shard") as pool:

                def pmap(function: Callable[..., Any], *items: Sequence[Any]) -> list[Any]:
                    return list(pool.map(function, *items))

                for i in self._unify([w.summary for w in written], files, pmap):
                    digest, size = _sha256(files[i])
                    written[i] = _Written(written[i].rows, None, digest, size)
        self._parts = [
            Part(
                self.path / f"part-{i:05d}-{w.sha256[:12]}{self.suffix}", w.rows, w.bytes, w.sha256
            )
            for i, w in enumerate(written)
        ]
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "file_format": self.suffix.lstrip("."),
            "rows_per_shard": self.rows_per_shard,
            "total_rows": sum(p.rows for p in self._parts),
            "study": self.study,
            "files": [
                {"path": p.path.name, "rows": p.rows, "bytes": p.bytes, "sha256": p.sha256}
                for p in self._parts
            ],
        }
        data = json.dumps(manifest, indent=1, ensure_ascii=False).encode() + b"\n"
        try:
            with open(self._staging / MANIFEST, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise sink_error("write", self._staging / MANIFEST, exc) from exc

    # -- publishing --------------------------------------------------------------------------
    def commit(self) -> None:
        """Move the parts in (durably), then replace the manifest: the commit point. Parts no
        manifest names any more are removed after it."""
        if self._done:
            return
        try:
            for i, part in enumerate(self._parts):
                os.replace(self._staged(i), part.path)
                self._moved.append(part.path)
            fsync_dir(self.path)
            os.replace(self._staging / MANIFEST, self.path / MANIFEST)
            fsync_dir(self.path)
        except OSError as exc:
            raise sink_error("commit", self.path, exc) from exc
        self._done = True
        try:
            self._collect_garbage({p.path.name for p in self._parts})
        finally:
            self._lock.release()

    def _collect_garbage(self, keep: set[str]) -> None:
        for entry in self.path.iterdir():
            if _PART.match(entry.name) and entry.name not in keep:
                with contextlib.suppress(OSError):
                    entry.unlink()
        shutil.rmtree(self._staging, ignore_errors=True)

    def discard(self) -> None:
        """Drop what this writer wrote; the committed output (if any) stays as it was."""
        if self._done:
            return
        self._done = True
        try:
            self._shutdown(cancel=True)
            try:
                keep = {p.path.name for p in read_manifest(self.path)}
            except ManifestError:
                keep = set()
            for moved in self._moved:
                if moved.name not in keep:
                    with contextlib.suppress(OSError):
                        moved.unlink()
            shutil.rmtree(self._staging, ignore_errors=True)
        finally:
            self._lock.release()

    def _shutdown(self, cancel: bool = False) -> None:
        for future in self._futures if cancel else ():
            future.cancel()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=cancel)


# -- reading ------------------------------------------------------------------------------------


def _bad(manifest: Path, message: str) -> ManifestError:
    return ManifestError(f"{manifest}: {message}", path=manifest, reason="bad_manifest")


def _load(directory: Path) -> dict[str, Any]:
    manifest = directory / MANIFEST
    try:
        raw = manifest.read_bytes()
    except FileNotFoundError:
        raise ManifestError(
            f"{directory} has no {MANIFEST}: it is not a committed sharded output (a run "
            "that was killed before committing leaves none)",
            path=manifest,
            reason="missing_manifest",
        ) from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _bad(manifest, f"not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _bad(manifest, f"not an {FORMAT} manifest")
    if data.get("version") != VERSION:
        raise _bad(manifest, f"version {data.get('version')!r} is not supported (only {VERSION})")
    if not isinstance(data.get("files"), list):
        raise _bad(manifest, "'files' is not a list")
    return data


def read_manifest(path: str | os.PathLike[str], *, verify: bool = False) -> list[Part]:
    """The parts of the sharded output at ``path`` (a directory), in row order.

    With ``verify=True`` each part's size and sha256 are checked against the manifest.
    Raises :class:`ManifestError` (``.file`` names the part at fault).
    """
    directory = Path(path)
    manifest = directory / MANIFEST
    data = _load(directory)
    parts = []
    for n, item in enumerate(data["files"]):
        try:
            name, rows, size, digest = item["path"], item["rows"], item["bytes"], item["sha256"]
        except (KeyError, TypeError):
            raise _bad(manifest, f"files[{n}] lacks path, rows, bytes or sha256") from None
        if not isinstance(name, str) or not _PART.match(name):
            raise _bad(manifest, f"files[{n}].path {name!r} is not a part file name")
        part = Part(directory / name, int(rows), int(size), str(digest))
        if verify:
            _verify(manifest, part)
        parts.append(part)
    if sum(p.rows for p in parts) != data.get("total_rows"):
        raise _bad(manifest, f"total_rows {data.get('total_rows')!r} is not the parts' sum")
    return parts


def _verify(manifest: Path, part: Part) -> None:
    try:
        digest, size = _sha256(part.path)
    except FileNotFoundError:
        raise ManifestError(
            f"{part.path}: the part {manifest} lists is missing",
            path=manifest,
            reason="missing_part",
            file=part.path,
        ) from None
    if size != part.bytes:
        raise ManifestError(
            f"{part.path}: {size} bytes, but {manifest} says {part.bytes}",
            path=manifest,
            reason="size_mismatch",
            file=part.path,
            expected=part.bytes,
            actual=size,
        )
    if digest != part.sha256:
        raise ManifestError(
            f"{part.path}: sha256 {digest}, but {manifest} says {part.sha256}",
            path=manifest,
            reason="sha256_mismatch",
            file=part.path,
            expected=part.sha256,
            actual=digest,
        )


def read_sharded(path: str | os.PathLike[str], *, verify: bool = True) -> Iterator[dict[str, Any]]:
    """The rows of the sharded output at ``path``, in order, each part checked against the
    manifest before it is read (``verify=False`` skips the check)."""
    directory = Path(path)
    data = _load(directory)
    file_format = data.get("file_format")
    for part in read_manifest(directory):
        if verify:
            _verify(directory / MANIFEST, part)
        if file_format == "jsonl":
            with open(part.path, encoding="utf-8") as handle:
                for line in handle:
                    yield json.loads(line)
        elif file_format == "parquet":
            import pyarrow.parquet as pq

            yield from pq.read_table(part.path).to_pylist()
        else:
            raise _bad(directory / MANIFEST, f"unknown file_format {file_format!r}")
