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
from jinja2 import meta, nodes
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import concat

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


@lru_cache(maxsize=512)
def _substitution_plan(source: str) -> tuple[tuple[bool, str], ...] | None:
    """``(is_variable, text)`` pieces when ``source`` is only text and ``{{ name }}`` outputs.

    Prompt templates are mostly of that form. Joining the pieces gives exactly what jinja
    renders (jinja prints a variable with ``str``) at a fraction of the cost of a jinja
    context per call. Anything else (tags, filters, attributes) returns None: jinja renders it.
    """
    compile_template(source)  # a syntax error raises here, naming its line
    body = _ENV.parse(source).body
    if not body:
        return ()
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return None
    plan: list[tuple[bool, str]] = []
    for node in body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            plan.append((False, node.data))
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            plan.append((True, node.name))
        else:
            return None
    return tuple(plan)


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Render ``source`` with ``variables``; unknown variables raise TemplateError."""
    plan = _substitution_plan(source)
    if plan is not None:
        try:
            return "".join([str(variables[text]) if var else text for var, text in plan])
        except KeyError:
            pass  # a jinja global or an undefined name: jinja decides (and explains)
    template = compile_template(source)
    try:
        needed = _names_without_globals(source)
        if needed is not None and needed <= variables.keys():
            # Every name the template reads is given, so jinja's globals are never consulted:
            # a context over the variables alone renders the same, without merging globals.
            context = template.new_context(dict(variables), shared=True)
            return concat(template.root_render_func(context))
        return template.render(**variables)
    except jinja2.UndefinedError as exc:
        known = ", ".join(sorted(variables)) or "none"
        raise TemplateError(f"template refers to {exc.message} (variables: {known})") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"template tried an unsafe operation: {exc}") from exc


def variables_of(source: str) -> frozenset[str]:
    """Names of the undeclared variables a template uses."""
    return _names(source)


@lru_cache(maxsize=512)
def _names(source: str) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(_ENV.parse(source)))


@lru_cache(maxsize=512)
def _names_without_globals(source: str) -> frozenset[str] | None:
    """The variables ``source`` needs, or None when it reads a jinja global (``range``...)."""
    loaded = {node.name for node in _ENV.parse(source).find_all(nodes.Name) if node.ctx == "load"}
    return None if loaded & _ENV.globals.keys() else _names(source)
