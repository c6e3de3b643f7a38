"""The plugin registry: teachers, strategies, filters and sinks found through entry points.

Each kind is an entry-point group (``mstudy.teachers``, ``mstudy.strategies``,
``mstudy.filters``, ``mstudy.sinks``) holding one object per entry point: a class, a factory
function or a ready-made instance. mstudy registers its built-ins the same way.

* Listing is lazy: :func:`list_plugins` reads distribution metadata and imports nothing.
* A plugin is imported on first use (:func:`load`, :func:`create`) and then cached. One that
  fails to import raises :class:`~mstudy.errors.PluginLoadError` naming it, its distribution
  and version; other plugins are not affected.
* Two distributions registering one name are never guessed between: a bare name raises
  :class:`~mstudy.errors.AmbiguousPluginError`; ``"dist:name"`` picks one.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

from mstudy.errors import (
    AmbiguousPluginError,
    ConfigError,
    ParameterError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
)
from mstudy.interfaces import CORE, missing_members

KINDS: tuple[str, ...] = ("teachers", "strategies", "filters", "sinks")
"""The plugin kinds; each is the entry-point group ``mstudy.<kind>``."""

_SINGULAR = {"teachers": "teacher", "strategies": "strategy", "filters": "filter", "sinks": "sink"}
_KIND_ALIASES = {**{k: k for k in KINDS}, **{v: k for k, v in _SINGULAR.items()}}
# The members of each protocol in mstudy.interfaces that a created object must have.


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin, as listed; ``value`` is its ``module:attr`` entry point.

    ``status`` is ``"available"`` (not imported yet), ``"loaded"``, ``"error: ..."`` (a load
    failed in this process) or ``"duplicate"`` (another distribution registers the same name:
    ask for it as ``dist:name``).
    """

    kind: str
    name: str
    distribution: str
    version: str
    value: str
    status: str = "available"

    @property
    def qualified_name(self) -> str:
        """``dist:name``, which picks this plugin even when its name is registered twice."""
        return f"{self.distribution}:{self.name}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class _Entry:
    kind: str
    name: str
    distribution: str
    version: str
    entry_point: metadata.EntryPoint

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, _normalize_dist(self.distribution), self.name, self.entry_point.value)

    @property
    def label(self) -> str:
        return f"{_SINGULAR[self.kind]} {self.name!r}"


_lock = threading.RLock()
_loaded: dict[tuple[str, str, str, str], object] = {}
_errors: dict[tuple[str, str, str, str], str] = {}


def normalize_kind(kind: str) -> str:
    """``"strategy"`` or ``"strategies"`` -> ``"strategies"``; ConfigError for other words."""
    try:
        return _KIND_ALIASES[kind.strip().lower()]
    except (KeyError, AttributeError):
        raise ConfigError(f"unknown plugin kind {kind!r} (accepted: {', '.join(KINDS)})") from None


def singular(kind: str) -> str:
    """The singular of a kind, for messages: ``"strategies"`` -> ``"strategy"``."""
    return _SINGULAR[normalize_kind(kind)]


def _normalize_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _entries(kind: str) -> list[_Entry]:
    """Entry points of ``kind``, each distribution once (it may be on sys.path twice)."""
    seen: set[tuple[str, str]] = set()
    out: list[_Entry] = []
    for ep in metadata.entry_points(group=f"mstudy.{kind}"):
        dist = ep.dist
        dist_name = (dist.name if dist is not None else None) or "unknown"
        version = (dist.version if dist is not None else None) or "unknown"
        ident = (_normalize_dist(dist_name), ep.name)
        if ident in seen:  # a second copy of the same distribution: the first one wins
            continue
        seen.add(ident)
        out.append(_Entry(kind, ep.name, dist_name, version, ep))
    return sorted(out, key=lambda e: (e.name, _normalize_dist(e.distribution)))


def _status(entry: _Entry, duplicate: bool) -> str:
    if entry.key in _errors:
        return f"error: {_errors[entry.key]}"
    if duplicate:
        return "duplicate"
    return "loaded" if entry.key in _loaded else "available"


def _info(entry: _Entry, duplicate: bool) -> PluginInfo:
    return PluginInfo(
        kind=entry.kind,
        name=entry.name,
        distribution=entry.distribution,
        version=entry.version,
        value=entry.entry_point.value,
        status=_status(entry, duplicate),
    )


def list_plugins(kind: str | None = None) -> list[PluginInfo]:
    """Registered plugins of ``kind`` (all kinds when None), sorted; imports none of them."""
    kinds = KINDS if kind is None else (normalize_kind(kind),)
    out: list[PluginInfo] = []
    for k in kinds:
        entries = _entries(k)
        counts = Counter(e.name for e in entries)
        out.extend(_info(e, counts[e.name] > 1) for e in entries)
    return out


def _not_found(kind: str, spec: str, name: str, dist: str, entries: list[_Entry]) -> str:
    singular = _SINGULAR[kind]
    same_name = [e for e in entries if e.name == name]
    if dist and same_name:
        providers = ", ".join(f"{e.distribution}:{e.name}" for e in same_name)
        return (
            f"{singular} {spec!r} is not installed: distribution {dist!r} does not provide "
            f"{name!r} (provided by: {providers})"
        )
    names = sorted({e.name for e in entries})
    message = f"{singular} {spec!r} is not installed"
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    if names:
        return f"{message}; installed {kind}: {', '.join(names)}"
    return f"{message}; no {kind} are installed"


def _resolve(kind: str, spec: str) -> _Entry:
    if not isinstance(spec, str) or not spec.strip():
        raise PluginNotFoundError(
            f"{_SINGULAR[kind]} name must be a non-empty string, got {spec!r}"
        )
    dist, _, name = spec.strip().rpartition(":")
    dist, name = dist.strip(), name.strip()
    entries = _entries(kind)
    matches = [e for e in entries if e.name == name]
    if dist:
        matches = [e for e in matches if _normalize_dist(e.distribution) == _normalize_dist(dist)]
    if not matches:
        raise PluginNotFoundError(_not_found(kind, spec, name, dist, entries))
    if len(matches) > 1:
        both = ", ".join(f"{e.distribution}:{e.name}" for e in matches)
        raise AmbiguousPluginError(
            f"{_SINGULAR[kind]} name {name!r} is registered by {len(matches)} distributions "
            f"({both}); name one of them as 'dist:name'"
        )
    return matches[0]


def find(kind: str, spec: str) -> PluginInfo:
    """The plugin that ``spec`` (``name`` or ``dist:name``) names, without importing it."""
    kind = normalize_kind(kind)
    entry = _resolve(kind, spec)
    return _info(entry, duplicate=False)


def load(kind: str, name: str) -> object:
    """Import and return the object registered as ``name`` (or ``dist:name``); cached."""
    kind = normalize_kind(kind)
    entry = _resolve(kind, name)
    with _lock:
        if entry.key in _loaded:
            return _loaded[entry.key]
        try:
            obj = entry.entry_point.load()
        except (Exception, SystemExit) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            _errors[entry.key] = reason
            raise PluginLoadError(
                f"cannot load {entry.label} from distribution {entry.distribution} "
                f"{entry.version} ({entry.entry_point.value}): {reason}"
            ) from exc
        _errors.pop(entry.key, None)
        _loaded[entry.key] = obj
        return obj


def clear_cache() -> None:
    """Forget loaded plugins and recorded load errors (modules stay imported)."""
    with _lock:
        _loaded.clear()
        _errors.clear()


def name_of(spec: str) -> str:
    """The plugin name in ``name`` or ``dist:name``."""
    return spec.rpartition(":")[2].strip()


def _is_factory(obj: object) -> bool:
    return inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, functools.partial)


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _signature(obj: object) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _parameters(obj: object) -> tuple[list[inspect.Parameter], bool] | None:
    """The parameters ``obj`` takes and whether it takes any keyword (open ``**kwargs``).

    A class whose ``__init__`` passes ``**kwargs`` on is followed up its MRO to the first
    ``__init__`` that names all it takes, so ``Reverse(**kwargs)`` still checks ``n``.
    None when there is no signature to read.
    """
    sig = _signature(obj)
    if sig is None:
        return None
    params = list(sig.parameters.values())
    open_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    if not open_kw or not inspect.isclass(obj):
        return params, open_kw
    own = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for cls in obj.__mro__[1:]:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        parent = _signature(init) if cls is not object else None
        if parent is None:
            break  # nothing names what **kwargs is for: accept anything
        seen = {p.name for p in own}
        inherited = list(parent.parameters.values())[1:]  # drop self
        own += [p for p in inherited if p.kind in _NAMED and p.name not in seen]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inherited):
            return own, False
    return params, True


def check_params(label: str, obj: object, params: Mapping[str, Any]) -> None:
    """Raise :class:`ParameterError` unless ``obj(**params)`` matches ``obj``'s signature."""
    found = _parameters(obj)
    if found is None:
        return
    accepted = [p.name for p in found[0] if p.kind in _NAMED]
    if not found[1]:
        for key in params:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ParameterError(
                    f"{label}: unknown parameter {key!r}{hint} "
                    f"(accepted: {', '.join(accepted) or 'none'})",
                    parameter=key,
                )
    sig = _signature(obj)
    assert sig is not None
    missing = [
        p.name
        for p in sig.parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and (p.kind is inspect.Parameter.POSITIONAL_ONLY or p.name not in params)
    ]
    if missing:
        raise ParameterError(
            f"{label}: missing required parameter{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)}"
        )


def create(kind: str, spec: str | object, /, **params: Any) -> object:
    """Build a plugin object from ``spec``: a name (``name`` or ``dist:name``) or an object.

    An object is returned as it is. A registered class or factory is called with ``params``
    after they are checked against its signature (:class:`ParameterError`, a ConfigError,
    names the parameter); errors its constructor raises about values (ValueError, TypeError)
    become ConfigErrors naming the plugin. A registered instance takes no parameters.
    """
    kind = normalize_kind(kind)
    singular = _SINGULAR[kind]
    if not isinstance(spec, str):
        if params:
            raise ParameterError(
                f"{singular} {type(spec).__name__} object given with parameters "
                f"({', '.join(params)}); parameters go with a plugin name only"
            )
        return spec
    obj = load(kind, spec)
    label = f"{singular} {spec!r}"
    if _is_factory(obj):
        check_params(label, obj, params)
        try:
            result: object = obj(**params)  # type: ignore[operator]
        except ConfigError as exc:  # the plugin's own, naming its parameter if it knows it
            message = exc.message if exc.path is None else str(exc)
            raise ConfigError(f"{label}: {message}", parameter=exc.parameter) from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{label}: {exc}") from exc
    elif params:
        raise ParameterError(
            f"{label} is a ready-made {type(obj).__name__} object and takes no parameters "
            f"(got: {', '.join(params)})",
            parameter=next(iter(params)),
        )
    else:
        result = obj
    missing = missing_members(result, CORE[kind])
    if missing:
        raise PluginError(
            f"{label} built a {type(result).__name__}, which is not a {singular}: "
            f"it lacks {', '.join(missing)}"
        )
    return result


def describe(kind: str, name: str) -> dict[str, Any]:
    """Name, distribution, summary (docstring's first line) and parameters of a plugin."""
    kind = normalize_kind(kind)
    info = find(kind, name)
    obj = load(kind, name)
    doc = inspect.getdoc(obj) or ""
    parameters: list[str] = []
    found = _parameters(obj) if _is_factory(obj) else None
    for p in found[0] if found is not None else ():
        text = p.name
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            text = f"**{text}"
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            text = f"*{text}"
        if p.annotation is not inspect.Parameter.empty:
            ann = p.annotation
            text += f": {ann if isinstance(ann, str) else inspect.formatannotation(ann)}"
        if p.default is not inspect.Parameter.empty:
            text += f" = {p.default!r}"
        parameters.append(text)
    return {
        **info.to_dict(),
        "status": "loaded",
        "summary": doc.strip().splitlines()[0] if doc.strip() else "",
        "parameters": parameters,
    }


__all__ = [
    "KINDS",
    "ParameterError",
    "PluginInfo",
    "check_params",
    "clear_cache",
    "create",
    "describe",
    "find",
    "list_plugins",
    "load",
    "normalize_kind",
    "singular",
]
