"""The exception tree of mstudy.

::

    MstudyError                      base of everything mstudy raises on purpose
    ├── ConfigError                  a study config (TOML or Python) is wrong; names the line/field
    │   ├── FingerprintError         a component has no stable fingerprint (names the setting)
    │   └── CapabilityError          a component lacks a capability the run needs
    ├── PluginError                  a plugin cannot be found or built
    │   ├── PluginNotFoundError      no plugin of that kind and name
    │   ├── AmbiguousPluginError     two distributions register one name; use ``dist:name``
    │   └── PluginLoadError          the plugin's module failed to import (names dist + version)
    ├── RecordError                  a source record is unusable; names the record id and field
    ├── TemplateError                a template does not parse or render
    ├── TeacherError                 a teacher backend failed as a whole (not one request)
    └── SinkError                    a sink could not write or commit its output

Errors about one record during a run do not stop the run: they become
:class:`~mstudy.records.Rejection` rows with the same message, counted by the report.
"""

from __future__ import annotations


class MstudyError(Exception):
    """Base class of every error mstudy raises on purpose."""


class ConfigError(MstudyError, ValueError):
    """A study configuration is invalid (unknown name, bad parameter, malformed TOML)."""


class PluginError(MstudyError):
    """A plugin cannot be found, imported or built."""


class PluginNotFoundError(PluginError, LookupError):
    """No plugin of the requested kind and name is installed."""


class AmbiguousPluginError(PluginError, LookupError):
    """Two or more distributions register the same name; ``dist:name`` picks one."""


class PluginLoadError(PluginError, ImportError):
    """The plugin's entry point failed to import."""


class RecordError(MstudyError, ValueError):
    """A source record cannot be used: missing field, wrong type, undecodable line."""

    def __init__(
        self,
        message: str,
        *,
        record_id: str | None = None,
        field: str | None = None,
        reason: str | None = None,
    ):
        super().__init__(message)
        self.record_id = record_id
        self.field = field
        self.reason = reason


class TemplateError(MstudyError, ValueError):
    """A template is malformed or refers to a variable that is not there."""


class TeacherError(MstudyError, RuntimeError):
    """A teacher backend cannot work at all (model missing, server down for good)."""


class SinkError(MstudyError, OSError):
    """A sink could not write or commit its output."""


class FingerprintError(ConfigError):
    """A component has no stable fingerprint: it declares none, and one of its public settings
    holds a value that cannot be compared across processes. ``component`` names it and
    ``attribute`` the setting."""

    def __init__(self, message: str, *, component: str, attribute: str) -> None:
        super().__init__(message)
        self.component = component
        self.attribute = attribute


class CapabilityError(ConfigError):
    """A component lacks a capability the run needs (a stateful filter that cannot save its
    state, in a journaled run). ``component`` names it; ``missing`` lists the methods."""

    def __init__(self, message: str, *, component: str, missing: list[str]) -> None:
        super().__init__(message)
        self.component = component
        self.missing = missing


class LockedError(SinkError):
    """Another run holds the output or journal this run would write. ``path`` is that path
    and ``pid`` the holding process's id (None when it could not be read)."""

    def __init__(self, message: str, *, path: str, pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid
