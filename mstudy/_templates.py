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
        raise TemplateError(
            f"template syntax error at line {exc.lineno}: {exc.message}", line=exc.lineno
        ) from exc


# Steps of a template that needs no jinja context: text, a variable, ``name or 'text'``, and
# ``{% if name %}...{% else %}...{% endif %}`` over such steps.
_TEXT, _VAR, _OR, _IF = range(4)
Plan = tuple[tuple[Any, ...], ...]


@lru_cache(maxsize=512)
def _substitution_plan(source: str) -> Plan | None:
    """The steps that render ``source`` when it is only text, ``{{ name }}``,
    ``{{ name or 'text' }}`` and ``{% if name %}`` blocks of those; else None.

    Prompt templates are mostly of that form. Following the steps gives exactly what jinja
    renders (jinja prints a value with ``str`` and tests it with Python's truth) at a
    fraction of the cost of a jinja context per call. Anything else (loops, filters,
    attributes, ``elif``) returns None: jinja renders it.
    """
    compile_template(source)  # a syntax error raises here, naming its line
    return _plan(_ENV.parse(source).body)


@lru_cache(maxsize=512)
def _flat_plan(source: str) -> tuple[tuple[bool, str], ...] | None:
    """``(is_variable, text)`` pieces when ``source`` is only text and ``{{ name }}``: the
    commonest prompt, joined in one comprehension."""
    plan = _substitution_plan(source)
    if plan is None or any(step[0] not in (_TEXT, _VAR) for step in plan):
        return None
    return tuple((step[0] == _VAR, step[1]) for step in plan)


def _is_name(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.ctx == "load"


def _plan(body: list[nodes.Node]) -> Plan | None:
    steps: list[tuple[Any, ...]] = []
    for node in body:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if isinstance(child, nodes.TemplateData):
                    steps.append((_TEXT, child.data))
                elif _is_name(child):
                    steps.append((_VAR, child.name))  # type: ignore[attr-defined]
                elif (
                    isinstance(child, nodes.Or)
                    and _is_name(child.left)
                    and isinstance(child.right, nodes.Const)
                    and type(child.right.value) is str
                ):
                    steps.append((_OR, child.left.name, child.right.value))  # type: ignore[attr-defined]
                else:
                    return None
        elif isinstance(node, nodes.If) and _is_name(node.test) and not node.elif_:
            then, otherwise = _plan(node.body), _plan(node.else_)
            if then is None or otherwise is None:
                return None
            steps.append((_IF, node.test.name, then, otherwise))  # type: ignore[attr-defined]
        else:
            return None
    return tuple(steps)


def _follow(plan: Plan, variables: Mapping[str, Any], out: list[str]) -> None:
    for step in plan:
        kind = step[0]
        if kind == _TEXT:
            out.append(step[1])
        elif kind == _VAR:
            out.append(str(variables[step[1]]))
        elif kind == _OR:
            out.append(str(variables[step[1]] or step[2]))
        else:
            _follow(step[2] if variables[step[1]] else step[3], variables, out)


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Render ``source`` with ``variables``; unknown variables raise TemplateError."""
    flat = _flat_plan(source)
    if flat is not None:
        try:
            return "".join([str(variables[text]) if var else text for var, text in flat])
        except KeyError:
            pass  # a jinja global or an undefined name: jinja decides (and explains)
    plan = _substitution_plan(source) if flat is None else None
    if plan is not None:
        try:
            out: list[str] = []
            _follow(plan, variables, out)
            return "".join(out)
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
