"""The child side of :mod:`mstudy.sandbox`: confine this process, then run ``main.py``.

:func:`mstudy.sandbox.run_python` starts this file as a script, ``python -I -S
_sandbox_child.py CONFIG``, in the sandbox's temporary folder. ``-I`` keeps the script's
folder off ``sys.path``, so nothing of mstudy is imported here: the standard library only,
and code that runs on any Python >= 3.8 (a root caller may start a system ``python3``).
Importing this module does nothing; only running it as ``__main__`` does.

In order, before the program's first line: rlimits; namespaces (user, network, PID, through
``unshare``) and, with a PID namespace, a reaper; Landlock; the audit hook; then a status line
to the parent (the layers that are active) and ``main.py`` runs as ``__main__``.

Boundaries and defence in depth: the kernel enforces the rlimits, the uid switch (done by the
parent at ``exec``), the namespaces and Landlock; code in the sandbox cannot lift them. The
audit hook is **not** a boundary. It sees Python-level calls only, native code bypasses it
(hence ``ctypes`` is blocked), some calls raise no audit event at all (``os.mkfifo``,
``os.mknod``, ``os.chroot``), and a program can reach the hook's state through the
interpreter. It refuses what it can see: sockets, subprocesses, ``fork``, signals, files
opened or changed outside the allowed folders. The ``open`` event does not say whether a
``dir_fd`` was given, so the hook keeps every folder a relative path can be relative to inside
the working folder: a folder can be opened (``os.open`` of a folder is the only way to a
``dir_fd``) and entered (``os.chdir``) only there, ``os.fchdir`` is refused, and a relative
path with a ``..`` is refused where its base is unknown (in ``open``, and in calls given a
``dir_fd``), as is a ``..`` in a symbolic link's target.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

_NEWUSER, _NEWNET, _NEWPID = 0x10000000, 0x40000000, 0x20000000
REQUIRE_EXIT = 97
"""The exit status of a run refused for a missing layer (the parent reads it as such)."""
MAIN = "main.py"
"""The program's file in the working folder."""


def _limit(which: int, value: int, slack: int = 0) -> bool:
    """Set one rlimit to ``value`` (hard limit ``value + slack``, never above the hard cap)."""
    import resource

    try:
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY and value + slack > hard:
            value, slack = hard, 0
        resource.setrlimit(which, (value, value + slack))
        return True
    except (ValueError, OSError):
        return False


def _rlimits(lim: dict[str, int]) -> bool:
    """Apply every resource limit; whether all of them took."""
    import resource

    ok = [
        _limit(resource.RLIMIT_AS, lim["memory"]),
        _limit(resource.RLIMIT_CPU, lim["cpu"], 1),
        _limit(resource.RLIMIT_FSIZE, lim["fsize"]),
        _limit(resource.RLIMIT_NOFILE, lim["nofile"]),
        _limit(resource.RLIMIT_CORE, 0),
    ]
    if hasattr(resource, "RLIMIT_NPROC"):
        ok.append(_limit(resource.RLIMIT_NPROC, lim["nproc"]))
    return all(ok)


def _libc() -> Any:
    """The C library through ctypes (Linux only), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return libc
    except Exception:
        return None


def _unshare(libc: Any) -> list[str]:
    """Enter new namespaces: the most that this system allows of user + network + PID."""
    for flags, names in (
        (_NEWUSER | _NEWNET | _NEWPID, ["userns", "netns", "pidns"]),
        (_NEWNET | _NEWPID, ["netns", "pidns"]),
        (_NEWNET, ["netns"]),
    ):
        if libc.unshare(flags) == 0:
            return names
    return []


def _wait_and_exit(pid: int) -> NoReturn:
    """Wait for ``pid`` and exit as it did (a signal as ``128 + n``)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def _enter_pid_namespace(status_fd: int) -> None:
    """Fork into the new PID namespace; only the grandchild returns, to run the program.

    This process stays outside the namespace and waits; its child is the namespace's init, a
    reaper whose exit kills everything left inside; the grandchild runs the program.
    """
    pid = os.fork()
    if pid:
        os.close(status_fd)
        _wait_and_exit(pid)
    pid = os.fork()
    if pid:
        os.close(status_fd)
        code = 1
        while True:
            try:
                done, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if done == pid:
                signalled = os.WIFSIGNALED(status)
                code = 128 + os.WTERMSIG(status) if signalled else os.WEXITSTATUS(status)
                break
        os._exit(code)


def _landlock(libc: Any, work: str, reads: Sequence[str]) -> list[str]:
    """Restrict this process with Landlock; the layers it gave ([] if it is unavailable)."""
    import ctypes

    abi = int(libc.syscall(444, None, 0, 1))
    if abi < 1:
        return []
    fs_all = (1 << 13) - 1
    if abi >= 2:
        fs_all |= 1 << 13
    if abi >= 3:
        fs_all |= 1 << 14
    if abi >= 5:
        fs_all |= 1 << 15
    file_rights = (1 << 0) | (1 << 1) | (1 << 2)
    file_rights |= ((1 << 14) if abi >= 3 else 0) | ((1 << 15) if abi >= 5 else 0)
    read = (1 << 2) | (1 << 3)

    class Attr(ctypes.Structure):
        _fields_ = (("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64))

    class Beneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = (("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32))

    net = 3 if abi >= 4 else 0
    scoped = 3 if abi >= 6 else 0
    size = 24 if abi >= 6 else (16 if abi >= 4 else 8)
    attr = Attr(fs_all, net, scoped)
    rfd = int(libc.syscall(444, ctypes.byref(attr), ctypes.c_size_t(size), 0))
    if rfd < 0:
        return []
    rules = [(work, fs_all)] + [(p, read) for p in reads] + [("/dev/null", (1 << 1) | (1 << 2))]
    for path, access in rules:
        try:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not os.path.isdir(path):
                access &= file_rights
            rule = Beneath(access & fs_all, pfd)
            if libc.syscall(445, rfd, 1, ctypes.byref(rule), 0) != 0:
                return []
        finally:
            os.close(pfd)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.syscall(446, rfd, 0) != 0:
        return []
    os.close(rfd)
    names = ["landlock-fs"] + (["landlock-net"] if net else [])
    return names + (["landlock-scope"] if scoped else [])


# -- the audit hook -----------------------------------------------------------------------------

_BLOCKED_PREFIXES = (
    "socket.",
    "subprocess.",
    "ctypes.",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "os.forkpty",
    "pty.",
    "os.system",
    "os.kill",
    "os.killpg",
    "signal.pthread_kill",
    "os.putenv",
    "os.unsetenv",
    "_posixsubprocess.",
)

# event -> (index of a path argument, index of its dir_fd argument or None), for events that
# change the file system (each path must lie in the working folder) ...
_WRITE_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.remove": ((0, 1),),
    "os.rmdir": ((0, 1),),
    "os.mkdir": ((0, 2),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
    "os.truncate": ((0, None),),
    "os.chdir": ((0, None),),
    "os.chflags": ((0, None),),
    "os.lchflags": ((0, None),),
    "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),),
    "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)),
    "os.symlink": ((1, 2),),  # the target (argument 0) is checked on its own
    "shutil.rmtree": ((0, 1),),
    "shutil.move": ((0, None), (1, None)),
    "shutil.copyfile": ((0, None), (1, None)),
}
# ... and for events that read it (each path must lie in a readable folder)
_READ_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.listdir": ((0, None),),
    "os.scandir": ((0, None),),
    "os.getxattr": ((0, None),),
    "os.listxattr": ((0, None),),
    "glob.glob": ((0, None),),
    "glob.glob/2": ((0, 3), (2, None)),
}


class _AuditGuard:
    """The audit hook's rules; ``__call__`` is the hook."""

    def __init__(self, work: str, reads: Sequence[str]) -> None:
        import posixpath

        self._realpath = posixpath.realpath
        self._isabs = posixpath.isabs
        self._join = posixpath.join
        self._isdir = posixpath.isdir
        self.work = posixpath.realpath(work)
        self.writable: tuple[str, ...] = (self.work,)
        self.readable = self.writable + tuple(posixpath.realpath(p) for p in reads) + ("/dev/null",)
        self.write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event.startswith(_BLOCKED_PREFIXES):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            self._open(*args)
        elif event == "os.chdir" and isinstance(args[0], int):
            raise PermissionError("sandbox: os.fchdir is not allowed")
        elif event == "os.symlink":
            self._symlink_target(args[0])
        rules = _WRITE_EVENTS.get(event)
        roots = self.writable
        if rules is None:
            rules, roots = _READ_EVENTS.get(event, ()), self.readable
        for index, fd_index in rules:
            if index >= len(args) or args[index] is None:
                continue
            dir_fd = args[fd_index] if fd_index is not None and fd_index < len(args) else None
            based = isinstance(dir_fd, int) and dir_fd >= 0
            if self._where(args[index], roots, unknown_base=based) is None:
                what = "change" if roots is self.writable else "read"
                raise PermissionError(f"sandbox: may not {what} {args[index]!r} here ({event})")

    def _open(self, path: Any, mode: Any, flags: Any) -> None:
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and bool(flags & self.write_flags)
        )
        # os.open's dir_fd is not in the event: any relative path may be relative to a folder
        # descriptor
        full = self._where(path, self.writable if writes else self.readable, unknown_base=True)
        if full is None:
            raise PermissionError(f"sandbox: may not open {path!r} here")
        if full and not self._inside(full, self.writable) and self._isdir(full):
            # a folder descriptor (a dir_fd, or for fchdir) only inside the working folder
            raise PermissionError(f"sandbox: may not open the folder {path!r}")

    def _symlink_target(self, target: Any) -> None:
        """A link must point into the working folder, wherever it is moved there later.

        So its target has no ``..`` (through a link to a folder, ``..`` leaves that folder's
        own parent), and a relative target is taken from the working folder itself.
        """
        try:
            text = os.fsdecode(target)
        except TypeError:
            raise PermissionError("sandbox: may not link to that") from None
        full = self._realpath(self._join(self.work, text))
        if ".." in text.split("/") or not self._inside(full, self.writable):
            raise PermissionError(f"sandbox: may not link to {target!r}")

    def _where(self, path: Any, roots: tuple[str, ...], *, unknown_base: bool) -> str | None:
        """The real path of ``path`` if it lies under ``roots``; "" for a descriptor; None if not.

        A relative path is taken from the current folder (always inside the working folder).
        Where its base may be another folder (``unknown_base``), that folder is inside the
        working folder too, and the path may not have a ``..``: it could leave that folder.
        """
        if isinstance(path, int):
            return ""
        try:
            text = os.fsdecode(path)
        except TypeError:
            return None
        if unknown_base and not self._isabs(text) and ".." in text.split("/"):
            return None
        try:
            full = self._realpath(text)
        except (OSError, ValueError):
            return None
        return full if self._inside(full, roots) else None

    @staticmethod
    def _inside(full: str, roots: tuple[str, ...]) -> bool:
        return any(full == r or full.startswith(r.rstrip("/") + "/") for r in roots)


# -- the whole run ------------------------------------------------------------------------------


def _run_program(work: str) -> None:
    """Run ``main.py`` as ``__main__``."""
    import types

    sys.dont_write_bytecode = True
    sys.argv = [MAIN]
    with open(os.path.join(work, MAIN), encoding="utf-8") as handle:
        source = handle.read()
    code = compile(source, MAIN, "exec")
    module = types.ModuleType("__main__")
    module.__file__ = MAIN
    sys.modules["__main__"] = module
    exec(code, module.__dict__)


def main(argv: Sequence[str]) -> None:
    """Confine this process as the configuration ``argv[1]`` says, then run the program."""
    cfg: dict[str, Any] = json.loads(argv[1])
    guards: list[str] = []
    status_fd: int = cfg["status_fd"]
    if _rlimits(cfg["limits"]):
        guards.append("rlimits")
    if cfg["uid_switched"]:
        guards.append("uid")

    libc = _libc()
    if libc is not None and cfg["namespaces"]:
        guards.extend(_unshare(libc))
    if "pidns" in guards:
        _enter_pid_namespace(status_fd)

    work: str = cfg["dir"]
    reads = [p for p in cfg["read_paths"] if os.path.exists(p)]
    if libc is not None and cfg["landlock"]:
        with contextlib.suppress(Exception):  # a failed Landlock is reported as absent
            guards.extend(_landlock(libc, work, reads))
    libc = None
    sys.modules.pop("ctypes", None)

    if cfg["audit"]:
        sys.addaudithook(_AuditGuard(work, reads))
        guards.append("audit")

    missing = [g for g in cfg["require"] if g not in guards]
    try:
        os.write(status_fd, (json.dumps({"guards": guards, "missing": missing}) + "\n").encode())
    finally:
        os.close(status_fd)
    if missing:
        sys.stderr.write("sandbox: required isolation unavailable: " + ", ".join(missing) + "\n")
        sys.stderr.flush()
        os._exit(REQUIRE_EXIT)
    _run_program(work)


if __name__ == "__main__":
    main(sys.argv)
