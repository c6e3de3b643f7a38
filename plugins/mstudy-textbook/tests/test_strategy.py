"""The ``textbook`` strategy: its prompt, its verdicts, and a whole study with it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import mstudy
import pytest
from mstudy import Completion, ConfigError, Example, Record, RecordError, Rejection, Request
from mstudy import plugins as registry

from mstudy_textbook import Textbook, parse_section

FACT = {"id": "f1", "text": "Water boils at a lower temperature on a high mountain."}


def section(
    title: str = "Boiling on a mountain", exercises: int = 2, explanation: str | None = None
) -> str:
    """A well-formed reply with ``exercises`` exercises."""
    items = "\n".join(
        f"{i}. Question {i} about boiling?\nAnswer: Reply {i}." for i in range(1, 1 + exercises)
    )
    explanation = explanation or (
        "Water boils when its vapour pressure matches the pressure of the air above it, and "
        "high up the air presses less."
    )
    return (
        f"# {title}\n\n## Explanation\n{explanation}\n\n## Worked example\n"
        "Problem: Why does pasta cook slowly on a mountain?\nSolution: The water is cooler.\n\n"
        f"## Exercises\n{items}\n"
    )


def verdict(strategy: Textbook, fields: Mapping[str, Any], text: str, finish: str = "stop") -> Any:
    record = Record.from_mapping(dict(fields))
    request = strategy.requests(record)[0]
    completion = Completion(request.key, text, finish, teacher="t")  # type: ignore[arg-type]
    (result,) = strategy.parse(record, request, completion)
    return result


# -- the prompt ---------------------------------------------------------------------------------


def test_prompt_is_a_few_shot_chat_with_the_section_shape() -> None:
    strategy = Textbook(level="primary school", exercises=3, worked_examples=2)
    (request,) = strategy.requests(Record.from_mapping(FACT))
    assert [m.role for m in request.messages] == ["system", *["user", "assistant"] * 2, "user"]
    system = request.messages[0].content
    assert "## Worked example" in system and "Answer:" in system
    last = request.messages[-1].content
    assert "primary school students" in last
    assert "2 worked example(s) and 3 exercises" in last
    assert last.endswith(f"Statement: {FACT['text']}")
    assert "Topic:" not in last
    # every few-shot reply is a section the parser accepts, asked for in the same words
    for user, reply in zip(request.messages[1:-1:2], request.messages[2:-1:2], strict=True):
        assert "1 worked example(s) and 2 exercises" in user.content
        shot = parse_section(reply.content)
        assert (len(shot.examples), len(shot.exercises)) == (1, 2)
    assert request.variables["exercises"] == 3
    assert request.params.max_new_tokens >= 256


def test_fields_map_roles_and_topic_is_optional() -> None:
    strategy = Textbook(fields={"text": "fact", "topic": "subject"})
    record = Record.from_mapping({"fact": FACT["text"], "subject": "boiling point"})
    (request,) = strategy.requests(record)
    assert "Topic: boiling point\nStatement: Water boils" in request.messages[-1].content
    assert request.variables["topic"] == "boiling point"


def test_record_values_are_data_not_template_code() -> None:
    text = "{{ 7 * 7 }} and {% for x in range(3) %}x{% endfor %} are literal."
    (request,) = Textbook().requests(Record.from_mapping({"text": text}))
    assert request.messages[-1].content.endswith(f"Statement: {text}")


def test_a_missing_field_names_the_record_and_the_field() -> None:
    with pytest.raises(RecordError) as info:
        Textbook(fields={"text": "fact"}).requests(Record.from_mapping({"id": "r7", "text": "x"}))
    assert (info.value.record_id, info.value.field) == ("r7", "fact")
    assert "record 'r7': missing field 'fact'" in str(info.value)


def test_settings_enter_the_fingerprint_and_the_request() -> None:
    base = Textbook()
    record = Record.from_mapping(FACT)
    for other in (Textbook(level="university"), Textbook(exercises=4), Textbook(min_words=3)):
        assert other.fingerprint != base.fingerprint
    assert Textbook().fingerprint == base.fingerprint
    assert Textbook(level="university").requests(record)[0].key != base.requests(record)[0].key


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"exercises": 0}, "exercises must be an integer >= 1"),
        ({"worked_examples": -1}, "worked_examples must be an integer >= 1"),
        ({"level": " "}, "level must be a non-empty string"),
        ({"n": 0}, "n must be >= 1"),
    ],
)
def test_bad_parameters_are_config_errors_naming_the_strategy(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"strategy 'textbook': {message}"):
        registry.create("strategies", "textbook", **params)


def test_a_misspelt_parameter_is_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="unknown parameter 'exercise'; did you mean 'exercises'"):
        registry.create("strategies", "textbook", exercise=3)


# -- verdicts -----------------------------------------------------------------------------------


def test_a_good_section_becomes_one_row_in_the_built_in_columns() -> None:
    example = verdict(Textbook(), FACT, "Here you go!\n" + section())
    assert isinstance(example, Example)
    row = example.to_row()
    assert row["input"] == FACT["text"] and row["answer"] is None
    assert row["text"].startswith("# Boiling on a mountain\n\n## Explanation\n")
    assert parse_section(row["text"]).title == row["title"] == "Boiling on a mountain"
    assert row["worked_examples"] == [
        {"problem": "Why does pasta cook slowly on a mountain?", "solution": "The water is cooler."}
    ]
    assert [e["answer"] for e in row["exercises"]] == ["Reply 1.", "Reply 2."]
    assert row["level"] == "secondary school"
    assert row["provenance"]["strategy"] == "textbook"


@pytest.mark.parametrize(
    ("strategy", "fields", "reply", "reason"),
    [
        (Textbook(), FACT, section().split("## Exercises")[0], "no exercises"),
        (Textbook(), FACT, section().replace("## Worked example", "## Story"), "no worked example"),
        (Textbook(), FACT, section(explanation="Air presses less."), "explanation too short"),
        (Textbook(min_words=0), FACT, section(explanation=FACT["text"]), "copy of the source"),
        (Textbook(min_exercises=3), FACT, section(exercises=2), "too few exercises"),
        (Textbook(), {**FACT, "topic": "pressure cookers"}, section(), "off topic"),
        (Textbook(), FACT, "I'm sorry, I cannot write that.", "refusal"),
    ],
)
def test_malformed_sections_are_rejected_with_a_reason(
    strategy: Textbook, fields: Mapping[str, Any], reply: str, reason: str
) -> None:
    rejection = verdict(strategy, fields, reply)
    assert isinstance(rejection, Rejection)
    assert (rejection.stage, rejection.reason, rejection.strategy) == ("parse", reason, "textbook")
    assert rejection.row is not None and rejection.row["reply"] == reply


def test_a_truncated_section_is_rejected_unless_accepted() -> None:
    assert verdict(Textbook(), FACT, section(), finish="length").reason == "truncated"
    kept = verdict(Textbook(accept_truncated=True), FACT, section(), finish="length")
    assert isinstance(kept, Example)


# -- a whole study --------------------------------------------------------------------------------

RECORDS = [
    {"id": "boil", "text": "Water boils at a lower temperature on a high mountain."},
    {"id": "area", "text": "The area of a rectangle is its length times its width."},
    {"id": "lazy", "text": "Light travels faster than sound."},
]


def scripted_section(request: Request) -> str:
    """A teacher that writes sections of the asked-for size, and a lazy one for 'lazy'."""
    text = str(request.variables["text"])
    body = section(title=f"About: {text[:-1]}", exercises=int(request.variables["exercises"]))
    return body.split("## Exercises")[0] if request.source_id == "lazy" else body


def test_study_end_to_end_with_sinks(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    teacher = mstudy.ScriptedTeacher(scripted_section)
    study = mstudy.Study(
        teacher,
        [Textbook(exercises=3, n=2)],
        sinks=[tmp_path / "out.jsonl", tmp_path / "out.parquet"],
        rejects=tmp_path / "rejects.jsonl",
    )
    report = study.run(RECORDS)
    assert (report.accepted, report.rejected, report.requests) == (4, 2, 6)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["source_id"] for r in rows] == ["boil", "boil", "area", "area"]
    assert all(len(r["exercises"]) == 3 and r["worked_examples"] for r in rows)
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert {(r["source_id"], r["reason"]) for r in rejects} == {("lazy", "no exercises")}

    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out.parquet")
    assert {"input", "text", "answer", "title", "exercises", "worked_examples"} <= set(
        table.column_names
    )
    assert table.column("exercises").to_pylist() == [r["exercises"] for r in rows]


def test_study_by_plugin_name_from_a_toml_config(tmp_path: Path) -> None:
    (tmp_path / "facts.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS[:2]) + "\n")
    reply = (
        "# {{ text }}\n## Explanation\n{{ text }} That is the whole idea, said again in other "
        "words for {{ level }} students.\n## Worked example\nProblem: Use it.\nSolution: Done.\n"
        "## Exercises\n{% for i in range(exercises) %}{{ i + 1 }}. Q{{ i }}?\nAnswer: A{{ i }}.\n"
        "{% endfor %}"
    )
    (tmp_path / "study.toml").write_text(
        "[source]\npath = 'facts.jsonl'\n\n"
        f"[teacher]\nname = 'scripted'\nreply = {{ textbook = {json.dumps(reply)} }}\n\n"
        "[[strategies]]\nname = 'textbook'\nlevel = 'university'\nexercises = 4\n\n"
        "[[sinks]]\nname = 'jsonl'\npath = 'out/textbook.jsonl'\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mstudy", "run", str(tmp_path / "study.toml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / "textbook.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["strategy"] for r in rows] == ["textbook", "textbook"]
    assert all(r["level"] == "university" and len(r["exercises"]) == 4 for r in rows)


def test_mstudy_plugins_lists_the_installed_distribution() -> None:
    try:
        version = metadata.version("mstudy-textbook")
    except metadata.PackageNotFoundError:
        pytest.skip("mstudy-textbook is not installed (pip install -e plugins/mstudy-textbook)")
    done = subprocess.run(
        [sys.executable, "-m", "mstudy", "plugins", "--json", "--kind", "strategies"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [r for r in json.loads(done.stdout) if r["name"] == "textbook"]
    assert [(r["distribution"], r["version"], r["status"]) for r in rows] == [
        ("mstudy-textbook", version, "available")
    ]
    import mstudy_textbook

    assert version == mstudy_textbook.__version__
    assert registry.create("strategies", "textbook").name == "textbook"  # type: ignore[attr-defined]
