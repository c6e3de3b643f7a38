"""Structured output: response schemas on strategies, validation in the parse step, teachers'
declared constraint (scripted, remote against the stub; the real engines are in
test_structured_engines.py and the llamacpp plugin's tests)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import read_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai_stub import StubServer

from mstudy import Study
from mstudy._schema import check_reply, schema_text
from mstudy.errors import ConfigError
from mstudy.interfaces import SchemaConstrained
from mstudy.records import (
    Completion,
    Example,
    GenerationParams,
    Message,
    Record,
    Rejection,
    Request,
)
from mstudy.strategies.base import Reject, TemplateStrategy
from mstudy.teachers.remote import RemoteTeacher
from mstudy.teachers.scripted import ScriptedTeacher

REPO = Path(__file__).resolve().parent.parent

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "population": {"type": "integer", "minimum": 0},
    },
    "required": ["city", "population"],
    "additionalProperties": False,
}


class City(TemplateStrategy):
    name = "city"
    template = "Which city does this name, and how many live there? {{ text }}"
    response_schema = CITY

    def check_json(self, variables: Mapping[str, Any], data: Any) -> Mapping[str, Any] | Reject:
        if data["city"].casefold() not in variables["text"].casefold():
            return Reject("city not in text", data["city"])
        return {"input": variables["text"], "text": data["city"], "population": data["population"]}


RECORDS = [
    {"id": "ok", "text": "Lyon is a city in France."},
    {"id": "prose", "text": "Oslo is a city in Norway."},
    {"id": "negative", "text": "Bern is a city."},
    {"id": "missing", "text": "Graz is a city."},
    {"id": "elsewhere", "text": "Turin is a city."},
]
REPLIES = {
    "ok": '{"city": "Lyon", "population": 520000}',
    "prose": "Oslo has about 700,000 people.",
    "negative": '{"city": "Bern", "population": -3}',
    "missing": '{"city": "Graz"}',
    "elsewhere": '{"city": "Milan", "population": 1}',
}


def scripted(request: Request) -> str:
    return REPLIES[request.source_id]


# -- declaring a schema ------------------------------------------------------------------------


def test_the_schema_goes_into_every_request_in_its_own_key_order() -> None:
    strategy = City(n=2)
    (a, b) = strategy.requests(Record.from_mapping(RECORDS[0]))
    assert a.params.schema() == CITY == b.params.schema()
    assert list(json.loads(a.params.response_schema or "")["properties"]) == ["city", "population"]
    assert a.key != b.key
    plain = TemplateStrategy().requests(Record.from_mapping(RECORDS[0]))[0]
    assert plain.params.response_schema is None


def test_the_schema_may_be_given_as_argument_text_or_params() -> None:
    by_argument = TemplateStrategy(response_schema=CITY)
    by_text = TemplateStrategy(response_schema=json.dumps(CITY))
    by_params = TemplateStrategy(params={"response_schema": CITY})
    assert by_argument.params.schema() == by_text.params.schema() == by_params.params.schema()
    assert by_argument.fingerprint != TemplateStrategy().fingerprint


def test_a_pydantic_model_is_a_schema() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):
        name: str
        born: int

    strategy = TemplateStrategy(response_schema=Person)
    schema = strategy.params.schema()
    assert schema is not None and schema["required"] == ["name", "born"]
    assert check_reply(strategy.params.response_schema or "", '{"name": "Ada", "born": 1815}').ok
    assert not check_reply(strategy.params.response_schema or "", '{"name": "Ada"}').ok


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "objekt"},
        {"type": "object", "properties": {"a": {"type": 5}}},
        {"type": "object", "required": "a"},
        {"minLength": -1},
        {"pattern": "("},
        '{"type": "object"',
        ["type", "object"],
        42,
        {"enum": {1, 2}},
    ],
)
def test_a_schema_that_is_not_json_schema_is_a_config_error_naming_the_strategy(
    schema: Any,
) -> None:
    with pytest.raises(ConfigError) as caught:
        City(response_schema=schema)
    assert caught.value.parameter == "response_schema"
    assert "strategy 'city'" in str(caught.value)


def test_a_bad_schema_in_params_is_caught_too() -> None:
    with pytest.raises(ConfigError) as caught:
        TemplateStrategy(params={"response_schema": {"type": "nope"}})
    assert caught.value.parameter == "response_schema"


def test_a_schema_strategy_takes_no_prefill() -> None:
    with pytest.raises(ConfigError) as caught:
        City(prefill="{")
    assert caught.value.parameter == "prefill"


# -- the parse step validates ------------------------------------------------------------------


def test_replies_that_are_not_json_or_break_the_schema_are_rejected_with_reason_schema(
    tmp_path: Path,
) -> None:
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    report = Study(ScriptedTeacher(scripted), [City()], sinks=[out], rejects=rejects).run(RECORDS)
    rows = read_jsonl(out)
    assert [(r["source_id"], r["text"], r["population"]) for r in rows] == [("ok", "Lyon", 520000)]
    rejected = {r["source_id"]: r for r in read_jsonl(rejects)}
    assert {k: r["reason"] for k, r in rejected.items()} == {
        "prose": "schema",
        "negative": "schema",
        "missing": "schema",
        "elsewhere": "city not in text",
    }
    assert rejected["prose"]["detail"].startswith("not JSON")
    assert "minimum of 0" in rejected["negative"]["detail"]
    assert "population" in rejected["negative"]["detail"]
    assert "'population' is a required property" in rejected["missing"]["detail"]
    assert rejected["prose"]["row"]["reply"] == REPLIES["prose"]
    assert report.accepted == 1 and report.rejected == 4
    assert report.strategies["city"].rejected[("parse", "schema")] == 3
    assert report.strategies["city"].rejected[("parse", "city not in text")] == 1
    assert "schema" in str(report)
    assert len(report.rejections(reason="schema")) == 3


def test_a_reply_cut_off_mid_json_says_so() -> None:
    teacher = ScriptedTeacher(lambda r: ('{"city": "Lyon", "popul', "length"))
    report = Study(teacher, [City()]).run(RECORDS[:1])
    (rejection,) = report.rejections()
    assert rejection["reason"] == "schema"
    assert "cut off at max_new_tokens" in rejection["detail"]


class PlainSchemaStrategy:
    """A strategy written against the protocol alone (no TemplateStrategy): it puts a schema
    into its requests and trusts every reply. The engine still validates."""

    name = "plain"
    version = "1"

    def requests(self, record: Record) -> list[Request]:
        params = GenerationParams(response_schema=CITY)
        return [Request((Message("user", record.text("text")),), params, source_id=record.id)]

    def parse(
        self, record: Record, request: Request, completion: Completion
    ) -> list[Example | Rejection]:
        data = json.loads(completion.text)  # would raise on prose: never reached
        return [Example.from_completion(request, completion, {"text": data["city"]})]


def test_the_engine_validates_for_any_strategy_not_only_template_ones() -> None:
    report = Study(ScriptedTeacher(scripted), [PlainSchemaStrategy()]).run(RECORDS)
    reasons = sorted(r["reason"] for r in report.rejections())
    assert reasons == ["schema", "schema", "schema"]
    assert report.accepted == 2  # "ok" and "elsewhere": valid JSON of the schema


def test_check_json_may_keep_some_rows_and_reject_others() -> None:
    class Cities(TemplateStrategy):
        name = "cities"
        response_schema: ClassVar[Any] = {"type": "array", "items": {"type": "string"}}

        def check_json(
            self, variables: Mapping[str, Any], data: Any
        ) -> Sequence[Mapping[str, Any] | Reject]:
            return [{"text": c} if c.istitle() else Reject("not a name", c) for c in data]

    report = Study(ScriptedTeacher('["Lyon", "oslo", "Graz"]'), [Cities()]).run(RECORDS[:1])
    assert report.accepted == 2
    assert [(r["reason"], r["detail"]) for r in report.rejections()] == [("not a name", "oslo")]


def test_the_default_check_json_keeps_the_reply_and_its_data(tmp_path: Path) -> None:
    strategy = TemplateStrategy(response_schema=CITY)
    Study(ScriptedTeacher(REPLIES["ok"]), [strategy], sinks=[tmp_path / "o.jsonl"]).run(RECORDS[:1])
    (row,) = read_jsonl(tmp_path / "o.jsonl")
    assert row["data"] == {"city": "Lyon", "population": 520000}
    assert json.loads(row["text"]) == row["data"]


# -- hypothesis: the validation path never crashes and agrees with jsonschema -----------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
leaf_schemas = st.one_of(
    st.just({}),
    st.sampled_from(["string", "integer", "number", "boolean", "null", "array", "object"]).map(
        lambda t: {"type": t}
    ),
    st.lists(json_values, min_size=1, max_size=3).map(lambda e: {"enum": e}),
    st.integers(0, 5).map(lambda n: {"type": "string", "maxLength": n}),
    st.integers(-5, 5).map(lambda n: {"type": "integer", "minimum": n}),
)
schemas = st.recursive(
    leaf_schemas,
    lambda inner: st.one_of(
        st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3).flatmap(
            lambda props: st.fixed_dictionaries(
                {
                    "type": st.just("object"),
                    "properties": st.just(props),
                    "required": st.lists(st.sampled_from(sorted(props) or [""]), unique=True).map(
                        lambda keys: [k for k in keys if k in props]
                    ),
                    "additionalProperties": st.booleans(),
                }
            )
        ),
        inner.map(lambda items: {"type": "array", "items": items, "maxItems": 3}),
        st.lists(inner, min_size=1, max_size=3).map(lambda parts: {"anyOf": parts}),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas, value=json_values)
def test_validation_agrees_with_jsonschema_on_random_schemas_and_values(
    schema: dict[str, Any], value: Any
) -> None:
    from jsonschema.validators import validator_for

    text = schema_text(schema, owner="strategy 'h'")
    verdict = check_reply(text, json.dumps(value))
    expected = validator_for(schema)(schema).is_valid(value)
    assert verdict.ok is expected
    if verdict.ok:
        assert verdict.value == value
    else:
        assert verdict.problem


@settings(max_examples=300, deadline=None)
@given(schema=schemas, reply=st.text(max_size=60))
def test_any_reply_text_gives_a_verdict_never_an_exception(
    schema: dict[str, Any], reply: str
) -> None:
    verdict = check_reply(schema_text(schema, owner="strategy 'h'"), reply)
    assert verdict.ok or verdict.problem


@pytest.mark.parametrize("reply", ["NaN", "[Infinity]", "{} {}", "```json\n{}\n```", "[" * 5000])
def test_what_is_not_strict_json_is_rejected(reply: str) -> None:
    verdict = check_reply("{}", reply)
    assert not verdict.ok and verdict.problem and verdict.problem.startswith("not JSON")


# -- teachers declare what they can -----------------------------------------------------------


def test_the_scripted_teacher_does_not_claim_to_constrain() -> None:
    assert not isinstance(ScriptedTeacher(), SchemaConstrained)


def test_remote_sends_the_schema_as_response_format(stub: StubServer) -> None:
    teacher = RemoteTeacher("stub-model", base_url=stub.url, max_retries=0)
    assert isinstance(teacher, SchemaConstrained) and teacher.constrains_schema
    with teacher:
        report = Study(teacher, [City()]).run(RECORDS[:2])
    bodies = [r.body for r in stub.requests]
    assert len(bodies) == 2
    for body in bodies:
        assert body is not None
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": CITY, "strict": True},
        }
    # the stub ignores response_format and answers prose: the parse step still validates
    assert [r["reason"] for r in report.rejections()] == ["schema", "schema"]


def test_remote_without_structured_output_sends_no_response_format(stub: StubServer) -> None:
    teacher = RemoteTeacher("stub-model", base_url=stub.url, structured_output=False)
    assert not teacher.constrains_schema
    assert teacher.fingerprint != RemoteTeacher("stub-model", base_url=stub.url).fingerprint
    with teacher:
        Study(teacher, [City()]).run(RECORDS[:1])
        Study(teacher, [TemplateStrategy()]).run(RECORDS[:1])
    assert all("response_format" not in (r.body or {}) for r in stub.requests)


def test_requests_without_a_schema_send_no_response_format(stub: StubServer) -> None:
    with RemoteTeacher("stub-model", base_url=stub.url) as teacher:
        Study(teacher, [TemplateStrategy()]).run(RECORDS[:1])
    assert "response_format" not in (stub.requests[0].body or {})


# -- registration -----------------------------------------------------------------------------


def test_facts_is_registered_as_a_strategy_entry_point() -> None:
    from importlib import import_module

    from mstudy.config import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    target = project["project"]["entry-points"]["mstudy.strategies"]["facts"]
    module, _, attr = target.partition(":")
    from mstudy.strategies.facts import Facts

    assert getattr(import_module(module), attr) is Facts
    assert "xgrammar" in " ".join(project["project"]["optional-dependencies"]["structured"])
