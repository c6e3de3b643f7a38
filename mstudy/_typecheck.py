"""Config values checked against a plugin's declared parameter types, before it is built.

A TOML value is a string, integer, float, boolean, date, array or table. :func:`mismatch`
says when one cannot be what an annotation declares (a string for an ``int``, a table for a
``str``); anything it cannot judge (a class it does not know, an annotation that does not
evaluate, a Protocol) passes, and the plugin's constructor has the last word.
"""

from __future__ import annotations

import collections.abc as abc
import inspect
import types
import typing
from pathlib import PurePath
from typing import Any

__all__ = ["mismatch", "parameter_types"]

_UNKNOWN = object()  # an annotation that could not be evaluated
_SEQUENCES = (list, tuple, set, frozenset, abc.Sequence, abc.Iterable, abc.Collection)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)


def parameter_types(obj: object) -> dict[str, Any]:
    """The evaluated annotation of each named parameter of ``obj`` (a class or function).

    A class whose ``__init__`` passes ``**kwargs`` on to its base's also gets the base's
    parameters (the way :func:`mstudy.plugins.check_params` reads them).
    """
    if not isinstance(obj, type):
        return _annotations(obj)
    out: dict[str, Any] = {}
    for cls in obj.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None or cls is object:
            continue
        for name, annotation in _annotations(init, skip_first=True).items():
            out.setdefault(name, annotation)
        try:
            forwards = any(
                p.kind is inspect.Parameter.VAR_KEYWORD
                for p in inspect.signature(init).parameters.values()
            )
        except (TypeError, ValueError):
            break
        if not forwards:
            break
    return out


def _annotations(function: Any, *, skip_first: bool = False) -> dict[str, Any]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return {}
    namespace = getattr(inspect.unwrap(function), "__globals__", None)
    if namespace is None:
        module = inspect.getmodule(function)
        namespace = vars(module) if module is not None else {}
    out: dict[str, Any] = {}
    parameters = list(signature.parameters.values())[1 if skip_first else 0 :]
    for parameter in parameters:
        annotation = parameter.annotation
        if annotation is inspect.Parameter.empty or parameter.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, dict(namespace))  # the plugin's own annotation
            except Exception:  # a name imported only for type checkers, a newer syntax
                annotation = _UNKNOWN
        out[parameter.name] = annotation
    return out


def _describe(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("collections.abc.", "")


def mismatch(value: Any, annotation: Any) -> str | None:
    """What ``annotation`` expects, when ``value`` surely is not that; else None."""
    return None if _fits(value, annotation) else _describe(annotation)


def _fits(value: Any, annotation: Any) -> bool:
    if annotation is _UNKNOWN or annotation is Any or annotation is object:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_fits(value, member) for member in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is typing.Annotated:
        return _fits(value, args[0])
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is bytes:
        return isinstance(value, bytes)
    kind = origin if origin is not None else annotation
    if kind in _MAPPINGS:
        if not isinstance(value, abc.Mapping):
            return False
        if len(args) == 2:
            return all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
        return True
    if kind in _SEQUENCES:
        if isinstance(value, str):  # a string is a sequence of strings: let the plugin judge
            return kind in (abc.Sequence, abc.Iterable, abc.Collection)
        if not isinstance(value, (list, tuple)):
            return False
        if kind is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(map(_fits, value, args))
        return not args or all(_fits(item, args[0]) for item in value)
    if kind is abc.Callable:
        return callable(value)
    if isinstance(kind, type):
        if issubclass(kind, PurePath):
            return isinstance(value, (str, PurePath))
        if getattr(kind, "_is_protocol", False):  # typing.is_protocol() from 3.13
            return True  # a Protocol: its members decide, the plugin judges
        return isinstance(value, kind)  # TOML values are plain builtins: this is exact
    return True  # a TypeVar, a NewType, ...: the plugin decides
