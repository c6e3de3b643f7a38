"""Sandboxed jinja2 rendering of prompt templates.

Templates are code written by the study's author; record values are data. Values are passed
as variables, so a record containing ``{{ ... }}`` or ``{% ... %}`` comes out verbatim and is
never evaluated. The sandbox blocks attribute tricks in templates themselves, and
``StrictUndefined`` turns a misspelt variable into an error instead of an empty string.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from mstudy.errors import TemplateError

_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
    trim_blocks=True,
    lstrip_blocks=True,
)


@lru_cache(maxsize=512)
def compile_template(source: str) -> jinja2.Template:
    """Parse ``source`` once; a syntax error becomes a TemplateError with its line."""
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error at line {exc.lineno}: {exc.message}") from exc


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Render ``source`` with ``variables``; unknown variables raise TemplateError."""
    template = compile_template(source)
    try:
        return template.render(**variables)
    except jinja2.UndefinedError as exc:
        known = ", ".join(sorted(variables)) or "none"
        raise TemplateError(f"template refers to {exc.message} (variables: {known})") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"template tried an unsafe operation: {exc}") from exc


def variables_of(source: str) -> frozenset[str]:
    """Names of the undeclared variables a template uses."""
    from jinja2 import meta

    return frozenset(meta.find_undeclared_variables(_ENV.parse(source)))
