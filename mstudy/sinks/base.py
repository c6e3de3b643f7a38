"""Shared machinery of the sinks: the :class:`BaseSink` life cycle and atomic file commits.

A file sink writes into a hidden partial file beside its target (``.<name>.partial``) and
only ``close()`` moves it onto the target, after flushing and ``fsync``-ing it, with
``os.replace`` (atomic on POSIX and Windows), then ``fsync``-s the directory so the rename
itself is durable. A crash therefore leaves at most the partial file, never a target that
looks complete; ``abort()`` removes the partial.

A sink holds an exclusive lock on its target (:mod:`mstudy._locks`) from construction to
``close()``/``abort()``, so a second run into the same path is refused at once with a
:class:`~mstudy.errors.LockedError`. Holding the lock, it removes the partial file a dead
run left behind before writing its own.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import IO, Any, Literal, TypeVar

from mstudy._locks import PathLock
from mstudy.errors import SinkError

__all__ = [
    "AtomicFile",
    "BaseSink",
    "commit_path",
    "ensure_parent",
    "fsync_dir",
    "import_optional",
    "partial_path",
    "sink_error",
]

logger = logging.getLogger(__name__)

_S = TypeVar("_S", bound="BaseSink")
_State = Literal["open", "closed", "aborted"]


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or raise an ImportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise ImportError(
            f"{purpose} needs the {top!r} package, which is not installed "
            f'(or failed to import: {exc}); install it with: pip install "mstudy[{extra}]"'
        ) from exc


def sink_error(action: str, path: str | os.PathLike[str], exc: BaseException) -> SinkError:
    """A SinkError saying what failed on which path, keeping the OS reason (and errno)."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        hint = {
            errno.ENOSPC: " (disk full)",
            errno.EROFS: " (read-only file system)",
            errno.EACCES: " (permission denied)",
            errno.EPERM: " (operation not permitted)",
        }.get(exc.errno or 0, "")
        if hint and hint.strip(" ()").lower() in reason.lower():
            hint = ""
        err = SinkError(f"cannot {action} {os.fspath(path)}: {reason}{hint}")
        err.errno = exc.errno  # (no ``filename``: OSError.__str__ would then drop the message)
        return err
    return SinkError(f"cannot {action} {os.fspath(path)}: {exc}")


def partial_path(target: str | os.PathLike[str]) -> Path:
    """The hidden partial file beside ``target``: ``dir/.<name>.partial``."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial")


def ensure_parent(target: str | os.PathLike[str], *, directory: bool = False) -> Path:
    """Create ``target``'s parent directories; return the target as an absolute Path.

    An existing target must be a file (or, with ``directory=True``, a directory).
    """
    target = Path(os.path.abspath(os.fspath(target)))
    if not target.name:
        raise SinkError(f"sink path {os.fspath(target)!r} has no file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file sits where a directory should be
        raise sink_error("create the directory for", target, exc) from exc
    except OSError as exc:
        raise sink_error("create the directory for", target, exc) from exc
    if not target.parent.is_dir():
        raise SinkError(f"cannot write {target}: {target.parent} is not a directory")
    if directory and target.exists() and not target.is_dir():
        raise SinkError(f"cannot write {target}: it exists and is not a directory")
    if not directory and target.is_dir():
        raise SinkError(f"cannot write {target}: it is an existing directory")
    return target


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """``fsync`` a directory so that renames inside it survive a power cut (POSIX only)."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:  # Windows: directories cannot be opened; NTFS journals renames
        return
    fd = os.open(os.fspath(directory), os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def commit_path(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Rename ``source`` onto ``target`` atomically and make the rename durable."""
    os.replace(source, target)
    fsync_dir(Path(target).parent)


class AtomicFile:
    """A binary file written beside ``target`` and moved onto it only by :meth:`commit`.

    The target is locked and the partial file opened on construction, so a second writer or
    an unwritable location fails early; a partial file left by a dead run is removed first
    (never written through: it may be a link). With ``append=True`` an existing target is
    copied into the partial first (and given a final newline when ``newline_terminated``),
    so the target is still replaced atomically. ``commit`` and ``discard`` release the lock.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        append: bool = False,
        newline_terminated: bool = False,
    ) -> None:
        self.target = ensure_parent(target)
        self.partial = partial_path(self.target)
        self._done = False
        self._lock = PathLock(self.target).acquire()
        try:
            with contextlib.suppress(FileNotFoundError):
                self.partial.unlink()  # a dead run's
            self._handle: IO[bytes] = open(self.partial, "xb")  # noqa: SIM115 - kept open
        except OSError as exc:
            self._lock.release()
            raise sink_error("create", self.partial, exc) from exc
        if append and self.target.exists():
            try:
                with open(self.target, "rb") as old:
                    shutil.copyfileobj(old, self._handle, 1 << 20)
                    if newline_terminated and self._handle.tell() > 0:
                        old.seek(-1, os.SEEK_END)
                        if old.read(1) != b"\n":
                            self._handle.write(b"\n")
            except OSError as exc:
                self.discard()
                raise sink_error("copy the existing file for appending", self.target, exc) from exc

    @property
    def handle(self) -> IO[bytes]:
        """The open binary handle of the partial file."""
        if self._done:
            raise SinkError(f"{self.target} is already committed or discarded")
        return self._handle

    def write(self, data: bytes) -> None:
        """Write bytes to the partial file; OS errors become SinkError naming the path."""
        try:
            self.handle.write(data)
        except OSError as exc:
            raise sink_error("write", self.partial, exc) from exc

    def commit(self) -> None:
        """Flush, fsync and close the partial file, then move it onto the target."""
        if self._done:
            return
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        except OSError as exc:
            self.discard()
            raise sink_error("write", self.partial, exc) from exc
        try:
            commit_path(self.partial, self.target)
        except OSError as exc:
            self.discard()
            raise sink_error("commit", self.target, exc) from exc
        self._done = True
        self._lock.release()

    def discard(self) -> None:
        """Close and remove the partial file; the target is left as it was."""
        if self._done:
            return
        self._done = True
        try:
            with contextlib.suppress(OSError):
                self._handle.close()
            with contextlib.suppress(FileNotFoundError):
                self.partial.unlink()
        finally:
            self._lock.release()


_STR_KEYS = frozenset({str})


def _as_row(item: Any, position: int) -> dict[str, Any]:
    """``item`` as a new dict of columns (a mapping, or an object with ``to_row()``)."""
    if type(item) is dict:  # the common case, without the slower Mapping check
        out = item.copy()
        if _STR_KEYS.issuperset(map(type, out)):
            return out
    row = item
    if not isinstance(row, Mapping):
        to_row = getattr(row, "to_row", None)  # Example, Rejection
        row = to_row() if callable(to_row) else None
    if isinstance(row, Mapping):
        out = dict(row)
        if _STR_KEYS.issuperset(map(type, out)):
            return out
        return {str(key): value for key, value in out.items()}
    raise SinkError(f"row {position} is a {type(item).__name__}, not a mapping of columns")


class BaseSink:
    """Life cycle shared by the sinks; subclasses implement ``_write``, ``_commit``, ``_discard``.

    ``write`` after ``close``/``abort`` raises :class:`SinkError`; ``close`` and ``abort`` are
    idempotent (and each is a no-op once the other has run). A ``write`` that fails leaves
    the sink failed: later writes raise and ``close`` aborts (rows would be missing). As a
    context manager the sink closes on success and aborts when the block raises. Rows are
    mappings (objects with a ``to_row()`` method, such as :class:`~mstudy.records.Example`,
    are accepted too).

    A sink that writes a path without :class:`AtomicFile` (which locks its own target) calls
    :meth:`_lock_target` in its constructor: the target is then locked until ``close`` or
    ``abort``.
    """

    def __init__(self) -> None:
        self._state: _State = "open"
        self._failure: BaseException | None = None
        self._prepared = False
        self._target_lock: PathLock | None = None
        self.rows_written = 0

    def _lock_target(self, target: str | os.PathLike[str]) -> None:
        """Hold an exclusive lock on ``target`` until the sink is closed or aborted; raise
        :class:`~mstudy.errors.LockedError` when another run holds it."""
        if self._target_lock is None:
            self._target_lock = PathLock(target).acquire()

    def _release_target(self) -> None:
        lock, self._target_lock = self._target_lock, None
        if lock is not None:
            lock.release()

    # -- hooks -------------------------------------------------------------------------------
    def _batch(self, rows: Iterable[Any]) -> list[Any]:
        """What ``_write`` gets for ``rows``: column dicts, unless a sink takes more."""
        return [_as_row(row, i) for i, row in enumerate(rows)]

    def _write(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def _prepare(self) -> None:
        """The part of committing that can fail (flush, convert, check); nothing by default."""

    def _commit(self) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError

    def _describe(self) -> str:
        """What the sink writes to, for messages (a path, usually)."""
        return type(self).__name__

    # -- public API --------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once the sink was closed or aborted."""
        return self._state != "open"

    def write(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append ``rows`` (a batch of mappings)."""
        if self._state != "open" or self._prepared:
            state = "prepared for commit" if self._state == "open" else self._state
            raise SinkError(f"cannot write to {self._describe()}: the sink is {state}")
        if isinstance(rows, Mapping):
            raise SinkError("write() takes a batch of rows; wrap a single row in a list")
        self._check_not_failed()
        batch = self._batch(rows)
        if not batch:
            return
        try:
            self._write(batch)
        except BaseException as exc:
            self._failure = exc
            if isinstance(exc, OSError) and not isinstance(exc, SinkError):
                raise sink_error("write", self._describe(), exc) from exc
            raise
        self.rows_written += len(batch)

    def write_owned(self, rows: list[dict[str, Any]]) -> None:
        """Append rows that are column dicts with ``str`` keys and that the caller gives up
        (never uses again): written as they are, without the copy :meth:`write` makes."""
        if self._state != "open" or self._prepared:
            raise SinkError(f"cannot write to {self._describe()}: the sink is not open")
        self._check_not_failed()
        if not rows:
            return
        try:
            self._write(rows)
        except BaseException as exc:
            self._failure = exc
            raise
        self.rows_written += len(rows)

    def _check_not_failed(self) -> None:
        if self._failure is not None:
            raise SinkError(
                f"{self._describe()}: an earlier write failed ({self._failure}); the output "
                "would be incomplete, so the sink accepts no more rows and cannot be committed"
            ) from self._failure

    def prepare(self) -> None:
        """Do everything committing needs that can fail, so that ``close`` then only publishes
        (a study prepares every sink before it closes any). ``close`` prepares when this was
        not called. After a failure the sink accepts no more rows and cannot be committed."""
        if self._state != "open" or self._prepared:
            return
        self._check_not_failed()
        try:
            self._prepare()
        except BaseException as exc:
            self._failure = exc
            if isinstance(exc, OSError) and not isinstance(exc, SinkError):
                raise sink_error("prepare", self._describe(), exc) from exc
            raise
        self._prepared = True

    def close(self) -> None:
        """Commit everything written; on failure nothing is left that looks complete.

        After a failed ``write`` the sink is aborted instead and ``close`` raises SinkError.
        """
        if self._state != "open":
            return
        try:
            self.prepare()
        except BaseException:
            self._state = "aborted"
            self._quiet_discard()
            raise
        self._state = "closed"
        try:
            self._check_not_failed()
            self._commit()
        except BaseException as exc:
            self._state = "aborted"
            self._quiet_discard()
            if isinstance(exc, OSError) and not isinstance(exc, SinkError):
                raise sink_error("commit", self._describe(), exc) from exc
            raise
        finally:
            self._release_target()

    def abort(self) -> None:
        """Drop everything written; an existing target is left untouched."""
        if self._state != "open":
            return
        self._state = "aborted"
        try:
            self._discard()
        except OSError as exc:
            raise sink_error("clean up after", self._describe(), exc) from exc
        finally:
            self._release_target()

    def _quiet_discard(self) -> None:
        try:
            self._discard()
        except Exception:  # the original error matters more
            logger.warning("could not clean up after %s", self._describe(), exc_info=True)
        finally:
            self._release_target()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        elif self._state == "open":
            self._state = "aborted"
            self._quiet_discard()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()!r}, {self._state})"
