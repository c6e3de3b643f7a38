"""The ``facts`` strategy: free text -> checked atomic facts that feed ``reverse``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl
from hypothesis import given, settings
from hypothesis import strategies as st

from mstudy import Study
from mstudy.errors import ConfigError
from mstudy.filters.consistency import ReverseCheck
from mstudy.records import Record, Request
from mstudy.strategies.facts import FACTS_SCHEMA, Facts, facts_schema
from mstudy.strategies.reverse import Reverse
from mstudy.teachers.scripted import ScriptedTeacher


def fact(subject: str, relation: str, obj: str, statement: str) -> dict[str, str]:
    return {"subject": subject, "relation": relation, "object": obj, "statement": statement}


def reply(*facts: dict[str, str]) -> str:
    return json.dumps({"facts": list(facts)}, ensure_ascii=False)


TEXT = "Ada Lovelace wrote the first program for the Analytical Engine in London."


def test_the_schema_is_a_list_of_facts_in_generation_order() -> None:
    strategy = Facts()
    (request,) = strategy.requests(Record.from_mapping({"text": TEXT}))
    schema = json.loads(request.params.response_schema or "")
    assert schema == FACTS_SCHEMA
    item = schema["properties"]["facts"]["items"]
    assert list(item["properties"]) == ["subject", "relation", "object", "statement"]
    assert Facts(max_facts=3).params.schema() == facts_schema(3)
    with pytest.raises(ConfigError) as caught:
        Facts(max_facts=0)
    assert caught.value.parameter == "max_facts"


def test_the_few_shot_replies_satisfy_the_schema_and_the_checks() -> None:
    strategy = Facts()
    for variables, shot in strategy._examples:
        rows = strategy.check_json(variables, json.loads(shot))
        assert rows and all(isinstance(r, dict) for r in rows), rows


def test_each_checked_fact_is_a_row_and_the_rest_are_rejected_with_reasons(
    tmp_path: Path,
) -> None:
    answer = reply(
        fact("Ada Lovelace", "wrote", "the first program", "Ada Lovelace wrote the first program."),
        fact("ada  LOVELACE", "worked in", "London", "ADA Lovelace worked in london."),
        fact("Ada Lovelace", "wrote", "the first program", "Ada Lovelace wrote the first program."),
        fact("Charles Babbage", "designed", "the Analytical Engine", "Babbage designed it."),
        fact("Ada Lovelace", "knew", "the Analytical Engine", "She knew the machine."),
        fact("London", "is", "london", "London is London."),
    )
    out, rejects = tmp_path / "facts.jsonl", tmp_path / "rejects.jsonl"
    report = Study(ScriptedTeacher(answer), [Facts()], sinks=[out], rejects=rejects).run(
        [{"id": "ada", "text": TEXT}]
    )
    rows = read_jsonl(out)
    assert [(r["subject"], r["relation"], r["object"], r["text"]) for r in rows] == [
        ("Ada Lovelace", "wrote", "the first program", "Ada Lovelace wrote the first program."),
        ("ada  LOVELACE", "worked in", "London", "ADA Lovelace worked in london."),
    ]
    assert all(r["input"] == TEXT and r["source_id"] == "ada" for r in rows)
    reasons = [(r["reason"], r["detail"]) for r in read_jsonl(rejects)]
    assert [reason for reason, _ in reasons] == [
        "duplicate fact",
        "subject not in text",
        "subject not in statement",
        "same entity",
    ]
    assert "'Charles Babbage' does not occur in the source text" in reasons[1][1]
    assert report.accepted == 2 and report.rejected == 4
    assert len({r["id"] for r in rows}) == 2


def test_a_reply_that_is_not_a_list_of_facts_is_a_schema_rejection() -> None:
    bad = [
        "Ada Lovelace wrote the first program.",
        '{"facts": []}',
        '{"facts": [{"subject": "Ada Lovelace", "relation": "wrote"}]}',
        reply(fact("Ada Lovelace", "wrote", "", "Ada Lovelace wrote.")),
        '{"facts": [], "extra": 1}',
    ]
    records = [{"id": str(i), "text": TEXT} for i in range(len(bad))]
    teacher = ScriptedTeacher(lambda r: bad[int(r.source_id)])
    report = Study(teacher, [Facts()]).run(records)
    assert report.accepted == 0
    assert dict(report.strategies["facts"].rejected) == {("parse", "schema"): len(bad)}


def test_facts_rows_feed_reverse_and_reverse_check_directly(tmp_path: Path) -> None:
    answer = reply(
        fact(
            "Olaf Brandt", "father of", "Lena Brandt", "Olaf Brandt is the father of Lena Brandt."
        ),
        fact("Olaf Brandt", "lives in", "Meridia", "Olaf Brandt lives in Meridia."),
    )
    facts_out = tmp_path / "facts.jsonl"
    Study(ScriptedTeacher(answer), [Facts()], sinks=[facts_out]).run(
        [
            {
                "id": "brandt",
                "text": "Olaf Brandt, who lives in Meridia, is the father of Lena Brandt.",
            }
        ]
    )

    def reversed_(request: Request) -> str:
        v = request.variables
        return (
            f"{v['object']} is where {v['subject']} lives."
            if "Meridia" in v["text"]
            else (f"{v['object']} is the child of {v['subject']}.")
        )

    out = tmp_path / "reversed.jsonl"
    report = Study(ScriptedTeacher(reversed_), [Reverse()], [ReverseCheck()], sinks=[out]).run(
        str(facts_out)
    )
    assert report.accepted == 2, report.rejections()
    rows = read_jsonl(out)
    assert {r["text"] for r in rows} == {
        "Lena Brandt is the child of Olaf Brandt.",
        "Meridia is where Olaf Brandt lives.",
    }
    assert {r["input"] for r in rows} == {
        "Olaf Brandt is the father of Lena Brandt.",
        "Olaf Brandt lives in Meridia.",
    }


# -- hypothesis: names in any script, spaced and cased any way ---------------------------------

SCRIPTS = {
    "latin": "abcdefghijklmnopqrstuvwxyzäöüéñçø",
    "cyrillic": "абвгдежзийклмнопрстуфхцчшщэюя",
    "greek": "αβγδεζηθικλμνξοπρστυφχψω",
    "cjk": "山川田中林森水火木金土日月星海",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "devanagari": "कखगघचछजझटठडढणतथदधनपफबभमयरलवशसह",
}
words = st.sampled_from(sorted(SCRIPTS)).flatmap(
    lambda script: st.text(alphabet=SCRIPTS[script], min_size=2, max_size=7)
)
names = st.lists(words, min_size=1, max_size=3).map(" ".join)
relations = st.sampled_from(["is the father of", "wrote", "founded", "lives next to"])


def recased(name: str, upper: bool) -> str:
    return "  ".join(w.upper() if upper else w.capitalize() for w in name.split())


@settings(max_examples=60, deadline=None)
@given(subject=names, obj=names, relation=relations, upper=st.booleans(), outsider=names)
def test_entities_are_found_in_any_script_case_and_spacing(
    subject: str, obj: str, relation: str, upper: bool, outsider: str
) -> None:
    from mstudy.strategies.facts import _fold

    text = f"In the story, {subject} {relation} {obj}, said the narrator."
    statement = f"{recased(subject, upper)} {relation} {recased(obj, not upper)}."
    kept = fact(recased(subject, upper), relation, recased(obj, not upper), statement)
    stranger = fact(outsider, relation, obj, f"{outsider} {relation} {obj}.")
    answer = reply(kept, stranger)
    report = Study(ScriptedTeacher(answer), [Facts()]).run([{"id": "t", "text": text}])
    rejections = report.rejections()
    distinct = _fold(subject) != _fold(obj)
    outsider_in_text = _fold(outsider) in _fold(text)
    if not distinct:
        assert rejections and rejections[0]["reason"] == "same entity"
        return
    expected_accepted = 1 + (
        outsider_in_text
        and _fold(outsider) != _fold(obj)
        and (
            (_fold(outsider), _fold(relation), _fold(obj))
            != (_fold(subject), _fold(relation), _fold(obj))
        )
    )
    assert report.accepted == expected_accepted, rejections
    if not outsider_in_text:
        assert [r["reason"] for r in rejections] == ["subject not in text"]


def test_a_facts_study_by_name_from_python_params() -> None:
    strategy: Any = Facts(max_facts=2, params={"max_new_tokens": 64})
    assert strategy.params.max_new_tokens == 64
    assert strategy.params.schema()["properties"]["facts"]["maxItems"] == 2
