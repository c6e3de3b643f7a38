"""Response schemas: a strategy's declared JSON Schema, checked once, and replies checked
against it.

A schema is given as a JSON Schema mapping (or its JSON text) or as a class with a
``model_json_schema()`` method (a pydantic model; pydantic itself is never imported here). It
is checked with :mod:`jsonschema` (``check_schema`` of the validator its ``$schema`` names, the
latest draft by default) when the strategy is built. Replies are checked by the engine's parse
step (:mod:`mstudy._engine.parsing`) for every request whose params carry a schema, whichever
teacher answered: :func:`check_reply` says what is wrong with a reply, never raises.

jsonschema is imported on first use, so ``import mstudy`` stays light.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from mstudy.errors import ConfigError

__all__ = ["JsonSchemaModel", "ReplyCheck", "check_reply", "schema_text"]

_MAX_DETAIL = 300


@runtime_checkable
class JsonSchemaModel(Protocol):
    """A class that describes itself as JSON Schema (pydantic's ``BaseModel`` subclasses)."""

    def model_json_schema(self) -> dict[str, Any]: ...


def schema_text(schema: object, *, owner: str, parameter: str = "response_schema") -> str:
    """``schema`` as compact JSON text (keys in their given order), after checking that it is
    valid JSON Schema.

    ``owner`` names the component in the error (``"strategy 'facts'"``); ``parameter`` the
    setting. Raises :class:`ConfigError` for anything that is not a valid schema.
    """

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{owner}: {parameter} {problem}", parameter=parameter)

    if isinstance(schema, type) and isinstance(schema, JsonSchemaModel):
        try:
            data: Any = schema.model_json_schema()
        except Exception as exc:
            raise bad(f"cannot be made from {schema.__name__}: {exc}") from exc
    elif isinstance(schema, str):
        try:
            data = json.loads(schema)
        except ValueError as exc:
            raise bad(f"is not JSON text: {exc}") from exc
    elif isinstance(schema, Mapping):
        data = dict(schema)
    else:
        raise bad(
            "must be a JSON Schema (a mapping or its JSON text) or a class with "
            f"model_json_schema() (a pydantic model), got {type(schema).__name__}"
        )
    if not isinstance(data, Mapping):
        raise bad(f"must be a JSON object, got {type(data).__name__}")
    try:
        # compact, but in the schema's own key order: engines generate properties in the
        # order they are declared, which matters to a small model (subject before object)
        text = json.dumps(dict(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise bad(f"is not plain JSON data: {exc}") from exc
    problem = _schema_problem(text)
    if problem is not None:
        raise bad(f"is not valid JSON Schema: {problem}")
    return text


def _schema_problem(text: str) -> str | None:
    """Why the JSON Schema ``text`` is not valid, or None."""
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    schema = json.loads(text)
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"{exc.message} (at {where or 'the top level'})"[:_MAX_DETAIL]
    return None


@dataclass(frozen=True, slots=True)
class ReplyCheck:
    """The verdict on one reply: its decoded ``value`` when it is valid, else ``problem``."""

    value: Any = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@lru_cache(maxsize=64)
def _validator(text: str) -> Any:
    """A validator for the schema ``text`` (built once per schema)."""
    from jsonschema.validators import validator_for

    schema = json.loads(text)
    return validator_for(schema)(schema)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_reply(schema: str, text: str) -> ReplyCheck:
    """Decode ``text`` as JSON and validate it against ``schema`` (JSON Schema text).

    Leading and trailing whitespace are allowed, nothing else around the value (no code fence,
    no prose). Never raises: whatever goes wrong is the returned ``problem``.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        return ReplyCheck(problem=f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except (ValueError, RecursionError) as exc:
        return ReplyCheck(problem=f"not JSON: {exc}"[:_MAX_DETAIL])
    try:
        from jsonschema.exceptions import best_match

        error = best_match(_validator(schema).iter_errors(value))
    except Exception as exc:  # a schema the validator cannot apply (an unresolvable $ref)
        return ReplyCheck(problem=f"cannot validate: {type(exc).__name__}: {exc}"[:_MAX_DETAIL])
    if error is None:
        return ReplyCheck(value=value)
    where = "/".join(str(p) for p in error.absolute_path)
    return ReplyCheck(problem=f"{error.message} (at {where or 'the top level'})"[:_MAX_DETAIL])
