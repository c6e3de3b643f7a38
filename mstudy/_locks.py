"""Exclusive locks on the paths a run writes (outputs, journals): one run at a time.

A lock is an OS file lock (``fcntl.flock``; ``msvcrt.locking`` on Windows) on a small file
beside the locked path, ``.<name>.lock``, which holds the holder's process id for messages.
The OS drops the lock when its holder exits, however it exits, so the lock file of a killed
run is simply taken over by the next one. A second run finds the lock taken and gets a
:class:`~mstudy.errors.LockedError` at once, naming the path and the holder's process.

Releasing removes the lock file while still holding the lock; an acquirer that locked a file
which was removed meanwhile sees that the path no longer leads to it and tries again, so two
runs can never both hold a lock on one path.

A lock held by this very process through an object nothing refers to any more (a run that
raised and was dropped) is released by collecting garbage once before refusing.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from mstudy.errors import LockedError

__all__ = ["PathLock", "lock_path"]

logger = logging.getLogger(__name__)

_BUSY = {errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK}
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_WINDOWS_LOCK_OFFSET = 1 << 20
"""Windows locks a byte range; the lock byte lies past the pid text so the pid stays readable."""


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of ``target``: ``dir/.<name>.lock``, in the real folder (so two paths to
    one folder through a symbolic link share the lock)."""
    target = Path(os.path.abspath(os.fspath(target)))
    return Path(os.path.realpath(target.parent)) / f".{target.name}.lock"


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)


def _read_pid(path: Path) -> int | None:
    """The pid written in a lock file, if it can be read (its holder writes it just after
    locking, so a few short retries cover a reader that comes in between)."""
    for _ in range(20):
        try:
            with open(path, "rb") as handle:
                text = handle.read(32)
        except OSError:
            return None
        head = text.split(b"\n", 1)[0].strip()
        if head.isdigit():
            return int(head)
        time.sleep(0.01)
    return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


class PathLock:
    """An exclusive lock on ``target`` (a file or folder that need not exist yet).

    ``acquire`` raises :class:`~mstudy.errors.LockedError` when another run holds it;
    ``release`` is idempotent. ``what`` names the target in messages ("output", "run
    journal"). Usable as a context manager.
    """

    def __init__(self, target: str | os.PathLike[str], *, what: str = "output") -> None:
        self.target = Path(os.path.abspath(os.fspath(target)))
        self.path = lock_path(self.target)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> PathLock:
        """Take the lock now or raise LockedError (never waits for another run)."""
        if self._fd is not None:
            return self
        collected = False
        for _ in range(100):  # more than a few rounds means files vanish as fast as we lock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                from mstudy.sinks.base import sink_error

                raise sink_error("create the lock file", self.path, exc) from exc
            try:
                _try_lock(fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in _UNSUPPORTED:
                    logger.warning(
                        "cannot lock %s on this file system (%s): a second run into it "
                        "would not be stopped",
                        self.target,
                        exc.strerror,
                    )
                    return self
                if exc.errno not in _BUSY:
                    from mstudy.sinks.base import sink_error

                    raise sink_error("lock", self.path, exc) from exc
                pid = _read_pid(self.path)
                if pid == os.getpid() and not collected:
                    collected = True
                    gc.collect()  # a dropped object of this process may still hold it
                    continue
                raise self._locked(pid) from None
            if not _same_file(fd, self.path):  # removed by its last holder meanwhile
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            except OSError:  # the pid is only for messages
                pass
            self._fd = fd
            return self
        raise self._locked(_read_pid(self.path))

    def _locked(self, pid: int | None) -> LockedError:
        if pid is None:
            holder = "another process"
        elif pid == os.getpid():
            holder = f"this process ({pid}): a run in it still has it open"
        else:
            holder = f"process {pid}"
        return LockedError(
            f"the {self.what} {self.target} is in use by another mstudy run, held by "
            f"{holder}; wait for that run to end or stop it (lock file: {self.path})",
            path=str(self.target),
            pid=pid,
        )

    def release(self) -> None:
        """Remove the lock file and drop the lock (the file goes first, while still held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if sys.platform == "win32":  # pragma: no cover - an open file cannot be removed there
            _unlock(fd)
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            return
        try:
            with contextlib.suppress(OSError):
                if _same_file(fd, self.path):
                    os.unlink(self.path)
        finally:
            _unlock(fd)
            os.close(fd)

    def __del__(self) -> None:
        # Dropped without release (a run that raised): let the OS lock go with the descriptor.
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PathLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"PathLock({str(self.target)!r}, {'held' if self.held else 'free'})"
