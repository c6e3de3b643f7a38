"""``TemplateStrategy``: the helper that makes a "template + parser" strategy a few lines.

A subclass sets ``name``, ``version``, the record roles it needs, a jinja2 ``template`` for the
user message (plus optional ``system`` and few-shot ``examples``) and implements ``check``::

    class Quiz(TemplateStrategy):
        name = "quiz"
        version = "1"
        roles = ("text",)
        template = "Write one quiz question about this fact.\\nFact: {{ text }}"

        def check(self, variables, text):
            question = first_line(text)
            if not question.endswith("?"):
                return Reject("not a question", question[:80])
            return {"input": variables["text"], "text": question}

A strategy whose replies are JSON declares a ``response_schema`` (a JSON Schema mapping, or
a pydantic model class) and implements ``check_json``, which gets the decoded reply::

    class Capital(TemplateStrategy):
        name = "capital"
        template = "Which country and capital does this sentence name? {{ text }}"
        response_schema = {
            "type": "object",
            "properties": {"country": {"type": "string"}, "capital": {"type": "string"}},
            "required": ["country", "capital"],
        }

        def check_json(self, variables, data):
            return {"input": variables["text"], "text": f"{data['capital']}, {data['country']}"}

The schema is checked when the strategy is built (a :class:`ConfigError` naming the strategy
when it is not valid JSON Schema) and goes into every request's params: teachers that can
constrain decoding do, and the engine's parse step validates every reply against it either
way (reason ``schema``) before ``check_json`` sees it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from mstudy._hashing import stable_hash
from mstudy._schema import schema_text
from mstudy._templates import render
from mstudy.errors import ConfigError, RecordError
from mstudy.records import (
    Completion,
    Example,
    GenerationParams,
    Message,
    Record,
    Rejection,
    Request,
)
from mstudy.text import is_refusal, normalize

FewShot = tuple[Mapping[str, str], str]
"""A few-shot example: the variables its user turn is rendered with, and the ideal reply."""


@dataclass(frozen=True, slots=True)
class Reject:
    """What ``check`` returns to turn a reply down: a short stable reason and the specifics."""

    reason: str
    detail: str = ""


class TemplateStrategy:
    """A strategy made of a chat template and a reply checker.

    Parameters (all optional):
        n: samples per record (each a separate request with its own sample index).
        template / system / examples: override the user template, the system message and
            the few-shot examples (a sequence of ``(variables, reply)`` pairs).
        fields: role -> record field, e.g. ``{"text": "sentence"}``.
        params: generation parameters (a :class:`GenerationParams` or a mapping).
        prefill: a template for the start of the reply (``""`` turns the default off).
        accept_truncated: keep replies cut off at ``max_new_tokens``.
        max_input_chars: reject records whose fields are longer than this.
        response_schema: a JSON Schema (mapping or JSON text) or a pydantic model class the
            replies must satisfy; overrides the class's ``response_schema`` and a
            ``response_schema`` in ``params``. A schema strategy has no prefill.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    roles: ClassVar[tuple[str, ...]] = ("text",)
    optional_roles: ClassVar[tuple[str, ...]] = ()
    system: ClassVar[str | None] = None
    template: ClassVar[str] = "{{ text }}"
    examples: ClassVar[Sequence[FewShot]] = ()
    prefill: ClassVar[str | None] = None
    response_schema: ClassVar[Any] = None
    """A JSON Schema (mapping) or a pydantic model class: replies are JSON of that schema."""
    default_params: ClassVar[GenerationParams] = GenerationParams()
    memoizable: ClassVar[bool] = True
    """Whether a record's outcome may be memoised (:mod:`mstudy._memo`): true when requests
    depend on the record and settings alone and verdicts are the same on every run."""

    def __init__(
        self,
        *,
        n: int = 1,
        template: str | None = None,
        system: str | None = None,
        examples: Sequence[FewShot] | Sequence[Mapping[str, Any]] | None = None,
        fields: Mapping[str, str] | None = None,
        params: GenerationParams | Mapping[str, Any] | None = None,
        prefill: str | None = None,
        accept_truncated: bool = False,
        max_input_chars: int = 20_000,
        response_schema: Any = None,
    ) -> None:
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}", parameter="n")
        self.n = n
        self._template = self.template if template is None else template
        self._system = self.system if system is None else (system or None)
        self._examples = tuple(
            _few_shot(e) for e in (self.examples if examples is None else examples)
        )
        self._prefill = self.prefill if prefill is None else (prefill or None)
        known = set(self.roles) | set(self.optional_roles)
        mapping = dict(fields or {})
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ConfigError(
                f"unknown role(s) {', '.join(unknown)} in fields; "
                f"roles: {', '.join(sorted(known))}",
                parameter="fields",
            )
        self.fields = {
            role: mapping.get(role, role) for role in (*self.roles, *self.optional_roles)
        }
        if isinstance(params, GenerationParams):
            self.params = params
        else:
            merged = {**self.default_params.to_dict(), **dict(params or {})}
            self.params = GenerationParams.from_mapping(merged)
        declared = self.response_schema if response_schema is None else response_schema
        if declared is None:
            declared = self.params.response_schema
        if declared is not None:
            text = schema_text(declared, owner=f"strategy {self.name!r}")
            self.params = dataclasses.replace(self.params, response_schema=text)
            if self._prefill:
                raise ConfigError(
                    f"strategy {self.name!r}: a response_schema and a prefill cannot go "
                    "together (the reply must be JSON from its first character); pass "
                    "prefill=''",
                    parameter="prefill",
                )
        self.accept_truncated = accept_truncated
        self.max_input_chars = max_input_chars
        self._turns: tuple[Message, ...] | None = None

    # -- identity -------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """Everything about this strategy that shapes its requests or its verdicts."""
        return stable_hash(
            {
                "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "name": self.name,
                "version": self.version,
                "template": self._template,
                "system": self._system,
                "examples": [[dict(v), r] for v, r in self._examples],
                "prefill": self._prefill,
                "fields": self.fields,
                "params": self.params.to_dict(),
                "n": self.n,
                "settings": self.settings(),
            }
        )

    def settings(self) -> Mapping[str, Any]:
        """Parser settings that change verdicts (subclasses add theirs)."""
        return {"accept_truncated": self.accept_truncated, "max_input_chars": self.max_input_chars}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={self.n}, fields={self.fields!r})"

    # -- rendering ------------------------------------------------------------------------

    def variables(self, record: Record) -> dict[str, Any]:
        """The template variables for ``record``: required roles checked, optional ones or None."""
        values: dict[str, Any] = {}
        for role in self.roles:
            values[role] = record.text(self.fields[role], max_chars=self.max_input_chars)
        for role in self.optional_roles:
            name = self.fields[role]
            raw = record.fields.get(name)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                values[role] = None
            elif isinstance(raw, (int, float)) and not isinstance(raw, bool) and role == "answer":
                values[role] = str(raw)
            else:
                values[role] = record.text(name, max_chars=self.max_input_chars)
        return values

    def messages(self, variables: Mapping[str, Any]) -> tuple[Message, ...]:
        """System message, few-shot turns, then the user turn for ``variables``."""
        out: list[Message] = []
        if self._system:
            out.append(Message("system", render(self._system, variables)))
        out.extend(self._few_shot_turns())
        out.append(Message("user", render(self._template, variables)))
        return tuple(out)

    def _few_shot_turns(self) -> tuple[Message, ...]:
        """The few-shot turns, rendered once: they do not depend on the record."""
        if self._turns is None:
            built: list[Message] = []
            for shot_vars, reply in self._examples:
                full = {**dict.fromkeys(self.optional_roles), **shot_vars}
                built.append(Message("user", render(self._template, full)))
                built.append(Message("assistant", reply))
            self._turns = tuple(built)
        return self._turns

    def requests(self, record: Record) -> list[Request]:
        """One request per sample for ``record``; RecordError when a needed field is unusable."""
        variables = self.variables(record)
        variables.update(self.template_vars(record, variables))
        messages = self.messages(variables)
        prefill = render(self._prefill, variables).strip() if self._prefill else None
        return [
            Request(
                messages=messages,
                params=self.params,
                sample=i,
                prefill=prefill or None,
                source_id=record.id,
                strategy=self.name,
                strategy_version=self.version,
                variables=variables,
            )
            for i in range(self.n)
        ]

    def template_vars(self, record: Record, variables: Mapping[str, Any]) -> Mapping[str, Any]:
        """Extra template variables for ``record`` beyond its roles (``variables``); none here.

        Raise :class:`RecordError` when the record cannot be used.
        """
        return {}

    # -- parsing --------------------------------------------------------------------------

    def parse(
        self, record: Record, request: Request, completion: Completion
    ) -> list[Example | Rejection]:
        """Common checks (error, truncation, refusal, empty), then ``check`` for the rest."""

        def reject(
            reason: str, detail: str = "", stage: str = "parse"
        ) -> list[Example | Rejection]:
            row = {"reply": completion.text, "finish_reason": completion.finish_reason}
            return [Rejection(record.id, stage, reason, detail, self.name, None, row)]

        if not completion.ok:
            return reject("teacher error", completion.error or "", stage="teacher")
        if completion.finish_reason == "length" and not self.accept_truncated:
            return reject("truncated", f"reply hit max_new_tokens={request.params.max_new_tokens}")
        text = completion.text.strip()
        variables = dict(request.variables) or self.variables(record)
        if request.params.response_schema is not None:
            # the engine has validated the reply against the schema; here it is decoded
            try:
                data = json.loads(text)
            except ValueError as exc:
                return reject("schema", f"not JSON: {exc}")
            verdict = self.check_json(variables, data)
        elif not text:
            return reject("empty reply")
        elif is_refusal(text):
            return reject("refusal", text[:120])
        else:
            verdict = self.check(variables, text)
        if isinstance(verdict, Reject):
            return reject(verdict.reason, verdict.detail)
        rows = [verdict] if isinstance(verdict, Mapping) else list(verdict)
        out: list[Example | Rejection] = []
        for i, fields in enumerate(rows):  # i numbers the rows, kept or not: stable ids
            if isinstance(fields, Reject):
                out.extend(reject(fields.reason, fields.detail))
            else:
                out.append(Example.from_completion(request, completion, fields, i))
        return out

    def check(
        self, variables: Mapping[str, Any], text: str
    ) -> Mapping[str, Any] | Sequence[Mapping[str, Any] | Reject] | Reject:
        """Validate a reply: return the example's fields, or a :class:`Reject`; or a sequence
        of both (one reply may give several rows, some of them turned down)."""
        return {"input": variables.get("text"), "text": text, "answer": None}

    def check_json(
        self, variables: Mapping[str, Any], data: Any
    ) -> Mapping[str, Any] | Sequence[Mapping[str, Any] | Reject] | Reject:
        """Validate a schema reply, decoded (``data`` satisfies the response schema): return
        the example's fields (or several), or a :class:`Reject`. By default the row keeps
        the reply as JSON text in ``text`` and the decoded value in ``data``."""
        text = json.dumps(data, ensure_ascii=False)
        return {"input": variables.get("text"), "text": text, "answer": None, "data": data}


def _few_shot(item: FewShot | Mapping[str, Any]) -> FewShot:
    """Accept ``(variables, reply)`` pairs or ``{"reply": ..., **variables}`` tables (TOML)."""
    if isinstance(item, Mapping):
        data = dict(item)
        if "reply" not in data:
            raise ValueError("a few-shot example given as a table needs a 'reply' key")
        reply = data.pop("reply")
        return ({str(k): str(v) for k, v in data.items()}, str(reply))
    variables, reply = item
    return (dict(variables), reply)


def is_copy(text: str, source: str) -> bool:
    """Whether ``text`` says nothing but ``source`` again (ignoring case and punctuation)."""
    return normalize(text) == normalize(source)


__all__ = ["FewShot", "RecordError", "Reject", "TemplateStrategy", "is_copy"]
