"""The exception tree of mstudy.

::

    MstudyError                      base of everything mstudy raises on purpose
    ├── ConfigError                  a study config (TOML or Python) is wrong
    │   │                              .parameter .path .line .column
    │   ├── ParameterError           a plugin was given a parameter it does not take
    │   ├── FingerprintError         a component has no stable fingerprint  .component .attribute
    │   └── CapabilityError          a component lacks a capability the run needs
    │                                  .component .missing
    ├── PluginError                  a plugin cannot be found or built
    │   ├── PluginNotFoundError      no plugin of that kind and name
    │   ├── AmbiguousPluginError     two distributions register one name; use ``dist:name``
    │   └── PluginLoadError          the plugin's module failed to import (names dist + version)
    ├── RecordError                  a source record is unusable   .record_id .field .reason
    ├── TemplateError                a template does not parse or render
    ├── TeacherError                 a teacher backend failed as a whole (not one request)
    │   └── StartupError             a teacher's engine did not start  .teacher .timeout .elapsed
    ├── RemoteCallError              one call to a remote teacher failed
    │                                  .kind .retryable .status .retry_after
    ├── SinkError                    a sink could not write or commit its output
    │   └── LockedError              another run holds the output or journal  .path .pid
    ├── CacheError                   the call cache cannot be opened or written
    ├── SandboxError                 the code sandbox cannot run at all
    ├── WorldError                   a probe's fact world is malformed
    └── ProbeError                   the probe cannot produce an honest result
        └── LeakError                a scored question appears verbatim in the training data

Errors carry their subject as attributes; no code reads an exception's message to decide
anything. Errors about one record during a run do not stop the run: they become
:class:`~mstudy.records.Rejection` rows with the same message (and ``RecordError.reason``
as the reason), counted by the report.
"""

from __future__ import annotations

from typing import Any, Literal


class MstudyError(Exception):
    """Base class of every error mstudy raises on purpose."""


class ConfigError(MstudyError, ValueError):
    """A study configuration is invalid (unknown name, bad parameter, malformed TOML).

    ``message`` says what is wrong; ``parameter`` names the key at fault (a config key or a
    plugin parameter, None when it is not one in particular); ``path``, ``line`` and
    ``column`` say where, when the configuration is a file. ``str()`` is
    ``path:line[:column]: message`` (as much of the location as is known).
    """

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None = None,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.parameter = parameter
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column
        super().__init__(str(self))

    @property
    def location(self) -> str:
        """``path:line[:column]`` as far as known (empty when there is no path)."""
        if self.path is None:
            return ""
        parts = [self.path, *(str(n) for n in (self.line, self.column) if n is not None)]
        return ":".join(parts)

    def __str__(self) -> str:
        where = self.location
        return f"{where}: {self.message}" if where else self.message

    def located(
        self, path: str | None, line: int | None, parameter: str | None = None
    ) -> ConfigError:
        """A copy placed at ``path:line`` (kept as it is when it already has a path)."""
        if self.path is not None:
            return self
        return type(self)(
            self.message,
            parameter=self.parameter if parameter is None else parameter,
            path=path,
            line=line,
        )

    def __reduce__(self) -> Any:  # keyword-only fields survive pickling (worker processes)
        return (
            _rebuild,
            (type(self), self.message, self.parameter, self.path, self.line, self.column),
        )


def _rebuild(cls: type[ConfigError], message: str, parameter: Any, *where: Any) -> ConfigError:
    path, line, column = where
    return cls(message, parameter=parameter, path=path, line=line, column=column)


class ParameterError(ConfigError):
    """A plugin was given parameters it does not take (or lacks a required one).

    ``parameter`` names the parameter at fault (None when it is not one in particular), so a
    config file can point at its line.
    """


class FingerprintError(ConfigError):
    """A component has no stable fingerprint: it declares none, and one of its public settings
    holds a value that cannot be compared across processes. ``component`` names it and
    ``attribute`` the setting."""

    def __init__(self, message: str, *, component: str, attribute: str, **where: Any) -> None:
        self.component = component
        self.attribute = attribute
        super().__init__(message, parameter=where.pop("parameter", attribute), **where)

    def located(
        self, path: str | None, line: int | None, parameter: str | None = None
    ) -> ConfigError:
        if self.path is not None:
            return self
        return FingerprintError(
            self.message, component=self.component, attribute=self.attribute, path=path, line=line
        )

    def __reduce__(self) -> Any:
        data = {"component": self.component, "attribute": self.attribute}
        return (_rebuild_with, (type(self), self.message, data, self.path, self.line))


class CapabilityError(ConfigError):
    """A component lacks a capability the run needs (a stateful filter that cannot save its
    state, in a journaled run). ``component`` names it; ``missing`` lists the methods."""

    def __init__(self, message: str, *, component: str, missing: list[str], **where: Any) -> None:
        self.component = component
        self.missing = list(missing)
        super().__init__(message, **where)

    def located(
        self, path: str | None, line: int | None, parameter: str | None = None
    ) -> ConfigError:
        if self.path is not None:
            return self
        return CapabilityError(
            self.message, component=self.component, missing=self.missing, path=path, line=line
        )

    def __reduce__(self) -> Any:
        data = {"component": self.component, "missing": self.missing}
        return (_rebuild_with, (type(self), self.message, data, self.path, self.line))


def _rebuild_with(
    cls: type[ConfigError], message: str, data: dict[str, Any], path: Any, line: Any
) -> ConfigError:
    return cls(message, path=path, line=line, **data)


class PluginError(MstudyError):
    """A plugin cannot be found, imported or built."""


class PluginNotFoundError(PluginError, LookupError):
    """No plugin of the requested kind and name is installed."""


class AmbiguousPluginError(PluginError, LookupError):
    """Two or more distributions register the same name; ``dist:name`` picks one."""


class PluginLoadError(PluginError, ImportError):
    """The plugin's entry point failed to import."""


class RecordError(MstudyError, ValueError):
    """A source record cannot be used: missing field, wrong type, undecodable line.

    ``record_id`` and ``field`` name the subject; ``reason`` is the short rejection reason
    (``"missing field"``, ``"bad field"``, ...) the report counts, when the raiser knows it.
    """

    def __init__(
        self,
        message: str,
        *,
        record_id: str | None = None,
        field: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.record_id = record_id
        self.field = field
        self.reason = reason

    def __reduce__(self) -> Any:
        return (
            _rebuild_record_error,
            (type(self), *self.args, self.record_id, self.field, self.reason),
        )


def _rebuild_record_error(cls: type[RecordError], message: str, *data: Any) -> RecordError:
    record_id, field, reason = data
    return cls(message, record_id=record_id, field=field, reason=reason)


class TemplateError(MstudyError, ValueError):
    """A template is malformed or refers to a variable that is not there.

    ``line`` is the template's line of a syntax error (None for rendering errors).
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line

    def __reduce__(self) -> Any:
        return (_rebuild_template_error, (type(self), *self.args, self.line))


def _rebuild_template_error(cls: type[TemplateError], message: str, line: Any) -> TemplateError:
    return cls(message, line=line)


class TeacherError(MstudyError, RuntimeError):
    """A teacher backend cannot work at all (model missing, server down for good)."""


class StartupError(TeacherError):
    """A teacher's engine did not start: it failed, or ran past its start-up timeout.

    ``teacher`` names the backend; ``timeout`` is the limit in seconds when start-up ran past
    it (None when it failed first); ``elapsed`` the seconds it took; ``detail`` the engine's
    own reason when it gave one. The processes it had started are gone when this is raised.
    """

    def __init__(
        self,
        message: str,
        *,
        teacher: str,
        timeout: float | None = None,
        elapsed: float | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.teacher = teacher
        self.timeout = timeout
        self.elapsed = elapsed
        self.detail = detail

    def __reduce__(self) -> Any:
        data = (self.teacher, self.timeout, self.elapsed, self.detail)
        return (_rebuild_startup, (type(self), self.args[0] if self.args else "", *data))


def _rebuild_startup(cls: type[StartupError], message: str, *data: Any) -> StartupError:
    teacher, timeout, elapsed, detail = data
    return cls(message, teacher=teacher, timeout=timeout, elapsed=elapsed, detail=detail)


RemoteFailureKind = Literal["unreachable", "timeout", "http", "response", "other"]


class RemoteCallError(MstudyError):
    """One attempt of one call to a remote teacher failed; it never escapes ``generate``.

    ``kind``: ``unreachable`` (no connection), ``timeout``, ``http`` (an error status),
    ``response`` (an answer that cannot be read), ``other`` (anything else). ``retryable``
    says whether another attempt may succeed; ``status`` is the HTTP status and
    ``retry_after`` the seconds the server asked to wait, when there are.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        kind: RemoteFailureKind,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.kind: RemoteFailureKind = kind
        self.status = status
        self.retry_after = retry_after

    def __reduce__(self) -> Any:
        return (
            _rebuild_remote,
            (type(self), self.reason, self.retryable, self.kind, self.status, self.retry_after),
        )


def _rebuild_remote(cls: type[RemoteCallError], reason: str, *data: Any) -> RemoteCallError:
    retryable, kind, status, retry_after = data
    return cls(reason, retryable=retryable, kind=kind, status=status, retry_after=retry_after)


class SinkError(MstudyError, OSError):
    """A sink could not write or commit its output."""


class CacheError(MstudyError):
    """The cache file cannot be opened or written."""


class SandboxError(MstudyError):
    """The sandbox itself could not run (not the program inside it failing)."""


class WorldError(MstudyError, ValueError):
    """A world (generated or loaded from files) is malformed; the message says where."""


class ProbeError(MstudyError, RuntimeError):
    """The probe cannot produce an honest result (bad settings, a leak, a failed stage)."""


class LeakError(ProbeError):
    """A scored question (or its answer pair) appears verbatim in the student's training data."""


class LockedError(SinkError):
    """Another run holds the output or journal this run would write. ``path`` is that path
    and ``pid`` the holding process's id (None when it could not be read)."""

    def __init__(self, message: str, *, path: str, pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid

    def __reduce__(self) -> Any:
        return (_rebuild_locked, (self.args[0] if self.args else "", self.path, self.pid))


def _rebuild_locked(message: str, path: str, pid: int | None) -> LockedError:
    return LockedError(message, path=path, pid=pid)


__all__ = [
    "AmbiguousPluginError",
    "CacheError",
    "CapabilityError",
    "ConfigError",
    "FingerprintError",
    "LeakError",
    "LockedError",
    "MstudyError",
    "ParameterError",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "ProbeError",
    "RecordError",
    "RemoteCallError",
    "SandboxError",
    "SinkError",
    "StartupError",
    "TeacherError",
    "TemplateError",
    "WorldError",
]
