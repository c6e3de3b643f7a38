"""Run untrusted Python (teacher-written programs) in a separate, confined process.

Generated code never runs in the caller's process: :func:`run_python` writes it to a fresh
temporary folder and starts ``python -I -S`` there with an empty environment, running the
child module ``mstudy/_sandbox_child.py`` (standard library only; it imports nothing of
mstudy). It applies the limits before the program's first line runs:

==================  ===========================================================================
layer               what it does (``SandboxResult.guards`` names the layers that were active)
==================  ===========================================================================
``rlimits``         ``RLIMIT_AS`` (memory), ``RLIMIT_CPU``, ``RLIMIT_FSIZE`` (largest file),
                    ``RLIMIT_NOFILE``, no core files; ``RLIMIT_NPROC`` caps processes of the uid
``uid``             when the caller is root: the program runs as a fresh unprivileged uid/gid
                    (root is exempt from ``RLIMIT_NPROC`` and may read everything)
``userns``          a new user namespace, which lets an unprivileged caller create the next two
``netns``           a new network namespace: no interface is up, not even loopback
``pidns``           a new PID namespace under a reaper: when the program ends or is killed,
                    every process it started dies with it (``setsid`` does not escape)
``landlock-fs``     Linux Landlock: writes only inside the temporary folder; reads only there,
                    in the Python standard library and shared-library folders
``landlock-net``    Landlock ABI >= 4: no TCP ``connect``/``bind`` at all
``landlock-scope``  Landlock ABI >= 6: no signals to, nor abstract Unix sockets of, processes
                    outside the sandbox
``audit``           a Python audit hook, defence in depth and **not a boundary**: no sockets,
                    subprocesses, ``fork`` or ``ctypes``; no file opened or changed outside the
                    allowed folders, no folder descriptor (``dir_fd``, ``fchdir``) outside the
                    working folder
==================  ===========================================================================

The parent enforces a wall-clock timeout and an output cap, and on either kills the whole
process group (``killpg``); with ``pidns`` nothing survives that, with ``uid`` a final
``kill(-1)`` as the sandbox uid ends stragglers.

The boundaries are the kernel's: rlimits, the uid switch, the namespaces and Landlock; code in
the sandbox cannot lift them. The audit hook only sees Python-level calls: native code
bypasses it, a few calls raise no audit event (``os.mkfifo``, ``os.mknod``, ``os.chroot``),
and a determined program can reach the hook's state through the interpreter. It makes
escapes harder where the kernel layers are missing; it does not contain a hostile program.

What is guaranteed, and where:

* Always (POSIX): a separate process, an empty environment (the parent's variables are not
  passed; ``-I`` ignores ``PYTHON*`` variables and the user site), a fresh working folder that
  is deleted afterwards, wall-clock timeout, output cap, memory/CPU/file-size limits.
* Linux with unprivileged user namespaces (or root): no network, every descendant killed.
* Linux >= 5.13 (Landlock): no file written or read outside the allowed folders, hence no
  reading ``/proc/<pid>/environ`` of the caller either.
* Process count: ``RLIMIT_NPROC`` is per uid. As root the sandbox uid is fresh, so the cap is
  exact; otherwise it is set to the uid's current process count plus ``max_processes``.

Not guaranteed: file confinement without Landlock, nor network confinement without a network
namespace or Landlock's TCP rules (off Linux only rlimits, the audit hook and the timeout
apply, and the hook is not a boundary; ``RLIMIT_AS`` is ignored on macOS); disk space (many
files below the size cap can still fill the temporary folder's file system); connecting to
filesystem (pathname) Unix sockets the uid may open, when only Landlock (no uid switch)
guards them. Use ``require=(...)`` to refuse to run where a layer you rely on is missing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mstudy import _sandbox_child
from mstudy._sandbox_child import MAIN, REQUIRE_EXIT
from mstudy.errors import SandboxError

__all__ = [
    "GUARDS",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "run_python",
]

GUARDS = (
    "rlimits",
    "uid",
    "userns",
    "netns",
    "pidns",
    "landlock-fs",
    "landlock-net",
    "landlock-scope",
    "audit",
)
"""Every isolation layer :func:`run_python` may report in ``SandboxResult.guards``."""

_UID_BASE = 1_500_000_000
_UID_SPAN = 500_000_000


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Resource limits of one sandboxed run.

    ``timeout`` is wall-clock seconds; ``cpu_seconds`` defaults to the timeout rounded up
    plus one. ``memory_mb`` caps the address space of each process; ``max_processes`` the
    number of processes; ``max_file_mb`` the size of any file written; ``max_output`` the
    bytes kept of stdout and of stderr each (more kills the program).
    """

    timeout: float = 5.0
    memory_mb: int = 512
    cpu_seconds: int | None = None
    max_processes: int = 16
    max_file_mb: int = 16
    max_open_files: int = 64
    max_output: int = 65_536

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"sandbox: timeout must be > 0, got {self.timeout}")
        for name in ("memory_mb", "max_processes", "max_file_mb", "max_open_files", "max_output"):
            if getattr(self, name) < 1:
                raise ValueError(f"sandbox: {name} must be >= 1, got {getattr(self, name)}")
        if self.cpu_seconds is not None and self.cpu_seconds < 1:
            raise ValueError(f"sandbox: cpu_seconds must be >= 1, got {self.cpu_seconds}")

    @property
    def cpu(self) -> int:
        return self.cpu_seconds or math.ceil(self.timeout) + 1


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What a sandboxed program did.

    ``returncode`` is negative for a signal (``-9`` after a kill). ``limit`` names the limit
    that ended the run, if one did: ``"timeout"``, ``"output"``, ``"memory"``, ``"cpu"``,
    ``"file size"`` or ``"isolation"`` (a layer named in ``require`` was unavailable; the
    program did not run). ``guards`` lists the isolation layers that were active.
    """

    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    limit: str | None = None
    guards: tuple[str, ...] = ()
    truncated: bool = False
    missing: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """The program exited with status 0 within every limit."""
        return self.returncode == 0 and self.limit is None

    @property
    def last_line(self) -> str:
        """The last non-empty line of stdout (where programs print their answer)."""
        for line in reversed(self.stdout.splitlines()):
            if line.strip():
                return line.strip()
        return ""

    def error(self) -> str:
        """A one-line account of why the run failed ("" when it did not)."""
        if self.limit == "isolation":
            return f"required isolation unavailable: {', '.join(self.missing)}"
        if self.limit is not None:
            return f"{self.limit} limit hit"
        if self.returncode != 0:
            lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
            return lines[-1].strip()[:200] if lines else f"exit status {self.returncode}"
        return ""


# -- the child side -----------------------------------------------------------------------------
# mstudy/_sandbox_child.py, run as ``python -I -S <that file> CONFIG`` in the temporary folder.

_CHILD = Path(_sandbox_child.__file__)


def _child_command(interpreter: str, *, switched: bool) -> list[str]:
    """The command line that starts the child module (the config is appended).

    The child runs by path. A fresh uid cannot read it where mstudy is installed in a folder
    closed to others (e.g. under ``/root``): then its source, read here, is passed with ``-c``.
    """
    if not switched or _world_usable(str(_CHILD), 0o004):
        return [interpreter, "-I", "-S", str(_CHILD)]
    try:
        source = _CHILD.read_text(encoding="utf-8")
    except OSError as exc:
        raise SandboxError(f"the sandbox's child module is unreadable: {exc}") from exc
    return [interpreter, "-I", "-S", "-c", source]


# -- the parent side ----------------------------------------------------------------------------


def _read_paths() -> list[str]:
    """Folders the program may read: the standard library and shared libraries."""
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
    paths.add(os.path.join(sys.base_prefix, "lib"))
    paths.update(("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache"))
    paths.update(("/usr/share/zoneinfo", "/etc/localtime"))
    return sorted(p for p in paths if os.path.exists(p))


def _world_usable(path: str, mode: int = 0o005) -> bool:
    """Whether any uid may use ``path`` (``mode``: run it; 0o004: read it).

    The file grants ``mode`` to all, and every folder above it is open to all.
    """
    real = os.path.realpath(path)
    try:
        if os.stat(real).st_mode & mode != mode:
            return False
        parent = os.path.dirname(real)
        while True:
            if not os.stat(parent).st_mode & 0o001:
                return False
            if parent == os.path.dirname(parent):
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


def _interpreter(python: str | None, *, root: bool) -> tuple[str, bool]:
    """The interpreter to start, and whether to switch to a fresh uid (root callers only).

    A fresh uid must be able to run the interpreter: when the running one lives in a folder
    closed to others (e.g. ``/root/.pyenv``), a system ``python3`` open to all is used instead
    (the program only needs the standard library); failing that, the uid is not switched.
    """
    if python is not None:
        return python, root and _world_usable(python)
    if not root:
        return sys.executable, False
    candidates = [sys.executable, getattr(sys, "_base_executable", sys.executable)]
    for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
        candidates.append(os.path.join(folder, "python3"))
    for candidate in candidates:
        if candidate and os.path.exists(candidate) and _world_usable(candidate):
            return candidate, True
    return sys.executable, False


def _process_count(uid: int) -> int:
    """How many processes ``uid`` runs now (RLIMIT_NPROC counts them all)."""
    count = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as handle:
                for line in handle:
                    if line.startswith("Uid:"):
                        count += int(line.split()[1]) == uid
                        break
        except (OSError, ValueError, IndexError):
            continue
    return count


def _kill_uid(uid: int, interpreter: str) -> None:
    """Kill every process of the (fresh, sandbox-only) ``uid``."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [interpreter, "-I", "-S", "-c", "import os\ntry: os.kill(-1, 9)\nexcept OSError: pass"],
            user=uid,
            group=uid,
            extra_groups=[],
            env={},
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )


def run_python(
    code: str,
    *,
    limits: SandboxLimits | None = None,
    stdin: str | None = None,
    require: Iterable[str] = (),
    namespaces: bool = True,
    landlock: bool = True,
    audit: bool = True,
    run_as: int | None = None,
    read_paths: Sequence[str | Path] = (),
    python: str | None = None,
) -> SandboxResult:
    """Run ``code`` in a confined child process and return what it printed.

    Args:
        code: Python source, run as ``__main__`` in a fresh temporary folder.
        limits: time, memory, process, file and output limits (:class:`SandboxLimits`).
        stdin: text fed to the program's standard input (none: ``/dev/null``).
        require: isolation layers (names from :data:`GUARDS`) without which the program must
            not run; the result then has ``limit == "isolation"``.
        namespaces / landlock / audit: turn a layer off (tests use this to show each kernel
            layer contains an attack on its own).
        run_as: the uid to run as when the caller is root (default: a fresh random uid).
        read_paths: extra folders or files the program may read.
        python: the interpreter (default: the running one).
    """
    if os.name != "posix":
        raise SandboxError("the sandbox needs a POSIX system (full isolation: Linux)")
    limits = limits or SandboxLimits()
    require = tuple(require)
    unknown = sorted(set(require) - set(GUARDS))
    if unknown:
        raise ValueError(f"sandbox: unknown guard(s) {', '.join(unknown)}; known: {GUARDS}")
    interpreter, switch = _interpreter(python, root=os.geteuid() == 0)
    uid = (
        (run_as if run_as is not None else _UID_BASE + secrets.randbelow(_UID_SPAN))
        if switch
        else None
    )
    work = tempfile.mkdtemp(prefix="mstudy-sandbox-")
    status_r, status_w = os.pipe()
    try:
        Path(work, MAIN).write_text(code, encoding="utf-8")
        settings = {
            "dir": work,
            "status_fd": status_w,
            "namespaces": namespaces,
            "landlock": landlock,
            "audit": audit,
            "require": list(require),
            "read_paths": [*_read_paths(), *(os.fspath(p) for p in read_paths)],
        }
        start = time.monotonic()
        proc: subprocess.Popen[bytes] | None = None
        failure: OSError | None = None
        for attempt in [uid, None] if uid is not None else [None]:
            try:  # a container may refuse the uid switch: then run without it
                proc = _spawn(interpreter, attempt, settings, limits, stdin is not None)
                uid = attempt
                break
            except OSError as exc:
                failure = exc
        if proc is None:
            raise SandboxError(f"could not start the sandbox: {failure}") from failure
        os.close(status_w)
        status_w = -1
        guards: tuple[str, ...] = ()
        try:
            out, err, status, limit, truncated = _communicate(proc, stdin, status_r, limits)
            guards = tuple(status.get("guards", ()))
        finally:
            _kill_group(proc)
            if uid is not None and "pidns" not in guards:
                _kill_uid(uid, interpreter)
        elapsed = time.monotonic() - start
    finally:
        if status_w >= 0:
            os.close(status_w)
        os.close(status_r)
        shutil.rmtree(work, ignore_errors=True)
    missing = tuple(status.get("missing", ()))
    stderr = err.decode("utf-8", "replace")
    returncode = proc.returncode if proc.returncode is not None else -9
    if "pidns" in guards and returncode > 128:  # the reaper reports a signal as 128 + n
        returncode = 128 - returncode
    if limit is None:
        limit = _limit_of(returncode, stderr, missing)
    return SandboxResult(
        returncode=returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=stderr,
        elapsed=elapsed,
        limit=limit,
        guards=guards,
        truncated=truncated,
        missing=missing,
    )


def _spawn(
    interpreter: str,
    uid: int | None,
    settings: dict[str, object],
    limits: SandboxLimits,
    feed_stdin: bool,
) -> subprocess.Popen[bytes]:
    """Start the bootstrap as ``uid`` (None: the caller's), in the sandbox folder."""
    work = str(settings["dir"])
    if uid is not None:
        os.chown(work, uid, uid)
        os.chown(os.path.join(work, MAIN), uid, uid)
    nproc = limits.max_processes + (_process_count(os.getuid()) if uid is None else 0)
    config = {
        **settings,
        "uid_switched": uid is not None,
        "limits": {
            "memory": limits.memory_mb * 1024 * 1024,
            "cpu": limits.cpu,
            "fsize": limits.max_file_mb * 1024 * 1024,
            "nofile": limits.max_open_files,
            "nproc": nproc,
        },
    }
    extra: dict[str, object] = (
        {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    )
    status_fd = settings["status_fd"]
    assert isinstance(status_fd, int)
    proc: subprocess.Popen[bytes] = subprocess.Popen(  # our argv; the code is data in a file
        [*_child_command(interpreter, switched=uid is not None), json.dumps(config)],
        cwd=work,
        env={},
        stdin=subprocess.PIPE if feed_stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(status_fd,),
        start_new_session=True,
        close_fds=True,
        **extra,  # type: ignore[call-overload]
    )
    return proc


def _limit_of(returncode: int, stderr: str, missing: tuple[str, ...]) -> str | None:
    """Which limit ended a run, read from its exit status and last words."""
    if missing and returncode == REQUIRE_EXIT:
        return "isolation"
    if returncode == -signal.SIGXCPU:
        return "cpu"
    if returncode == -signal.SIGXFSZ or "File too large" in stderr:
        return "file size"
    tail = stderr.strip().splitlines()[-1:] or [""]
    if tail[0].startswith("MemoryError") or "MemoryError" in stderr[-2000:]:
        return "memory"
    return None


def _communicate(
    proc: subprocess.Popen[bytes], stdin: str | None, status_fd: int, limits: SandboxLimits
) -> tuple[bytes, bytes, dict[str, list[str]], str | None, bool]:
    """Pump stdin/stdout/stderr/status until exit, a timeout or too much output."""
    deadline = time.monotonic() + limits.timeout
    bufs: dict[int, bytearray] = {}
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    for stream in (proc.stdout, proc.stderr):
        os.set_blocking(stream.fileno(), False)
        sel.register(stream.fileno(), selectors.EVENT_READ)
        bufs[stream.fileno()] = bytearray()
    os.set_blocking(status_fd, False)
    sel.register(status_fd, selectors.EVENT_READ)
    status_buf = bytearray()
    pending = (stdin or "").encode("utf-8")
    stdin_fd = -1
    if proc.stdin is not None:
        os.set_blocking(proc.stdin.fileno(), False)
        if pending:
            stdin_fd = proc.stdin.fileno()
            sel.register(stdin_fd, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
    limit: str | None = None
    truncated = False
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                limit = "timeout"
                break
            for key, _ in sel.select(timeout=min(left, 0.5)):
                fd = int(key.fd)
                if fd == stdin_fd:
                    try:
                        sent = os.write(fd, pending[:65536])
                    except BlockingIOError:
                        sent = 0
                    except OSError:  # the program closed its stdin
                        sent = len(pending)
                    pending = pending[sent:]
                    if not pending:
                        sel.unregister(fd)
                        stdin_fd = -1
                        assert proc.stdin is not None
                        proc.stdin.close()
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                if fd == status_fd:
                    status_buf += chunk[:4096]
                    continue
                buf = bufs[fd]
                room = limits.max_output - len(buf)
                buf += chunk[: max(room, 0)]
                if len(chunk) > room:
                    truncated = True
                    limit = "output"
            if limit is not None:
                break
        if limit is None:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                limit = "timeout"
    finally:
        sel.close()
    status: dict[str, list[str]] = {}
    for line in bytes(status_buf).decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            if isinstance(data, dict):
                status = data
                break
    return (
        bytes(bufs[proc.stdout.fileno()]),
        bytes(bufs[proc.stderr.fileno()]),
        status,
        limit,
        truncated,
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child's whole process group and reap the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
