"""``judge``: a teacher scores examples on a rubric (the scripted teacher stands in for it)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mstudy import Completion, Example, Message, Rejection, Request, ScriptedTeacher, Study
from mstudy.config import parse_config
from mstudy.filters.judge import DEFAULT_RUBRIC, LLMJudge, parse_score
from mstudy.plugins import create


def example(text: str, strategy: str = "explain", sample: int = 0, **fields: Any) -> Example:
    request = Request((Message("user", text),), sample=sample, source_id="s", strategy=strategy)
    row = {"input": "Water boils at 100 C at sea level.", "text": text, **fields}
    return Example.from_completion(request, Completion(request.key, text), row)


def grader(request: Request) -> str:
    text = str(request.variables["text"])
    return "Score: 9\nClear and correct." if "boils" in text else "Score: 3\nOff topic."


class CountingTeacher(ScriptedTeacher):
    """A scripted teacher that counts generate() calls."""

    def __init__(self, reply: Any) -> None:
        super().__init__(reply)
        self.batches: list[int] = []

    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        batch = list(requests)
        self.batches.append(len(batch))
        yield from reversed([self.complete(r) for r in batch])  # out of order, matched by key


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Score: 8\nGood.", 8.0),
        ("score = 7.5", 7.5),
        ("**Score:** 9 - precise", 9.0),
        ("8/10, clear", 8.0),
        ("The score is 4.", 4.0),
        ("I like it.", None),
    ],
)
def test_parse_score(reply: str, score: float | None) -> None:
    assert parse_score(reply) == score


def test_scores_go_on_kept_and_rejected_rows() -> None:
    judge = LLMJudge(teacher=ScriptedTeacher(grader), threshold=6)
    good, bad = (
        judge.check(example("Water boils sooner up a mountain.")),
        judge.check(example("Cats purr.")),
    )
    assert isinstance(good, Example)
    assert good.fields["judge_score"] == 9.0 and good.fields["judge_reason"] == "Clear and correct."
    assert isinstance(bad, Rejection) and bad.stage == "filter:judge"
    assert bad.reason == "low judge score" and bad.detail.startswith("scored 3 < 6")
    assert bad.row is not None and bad.row["judge_score"] == 3.0


def test_threshold_is_inclusive_and_fields_configurable() -> None:
    judge = LLMJudge(
        teacher=ScriptedTeacher("Score: 7"), threshold=7, score_field="q", reason_field="why"
    )
    kept = judge.check(example("x"))
    assert isinstance(kept, Example) and kept.fields["q"] == 7.0 and "why" in kept.fields


def test_check_many_sends_one_batch_and_keeps_order() -> None:
    teacher = CountingTeacher(grader)
    judge = LLMJudge(teacher=teacher, threshold=6)
    texts = ["Water boils.", "Cats purr.", "Water boils.", "Water boils at 90 C up high."]
    verdicts = judge.check_many([example(t, sample=i) for i, t in enumerate(texts)])
    assert [type(v).__name__ for v in verdicts] == ["Example", "Rejection", "Example", "Example"]
    assert teacher.batches == [3]  # two identical requests are sent once


def test_unparseable_and_failed_replies() -> None:
    vague = LLMJudge(teacher=ScriptedTeacher("It is fine."))
    verdict = vague.check(example("x"))
    assert isinstance(verdict, Rejection) and verdict.reason == "judge unparseable"
    too_high = LLMJudge(teacher=ScriptedTeacher("Score: 42"), scale=10).check(example("x"))
    assert isinstance(too_high, Rejection) and too_high.reason == "judge unparseable"

    def broken(request: Request) -> str:
        raise RuntimeError("backend down")

    failed = LLMJudge(teacher=ScriptedTeacher(broken)).check(example("x"))
    assert isinstance(failed, Rejection) and failed.reason == "judge error"
    assert "backend down" in failed.detail
    lenient = LLMJudge(teacher=ScriptedTeacher(broken), on_error="keep").check(example("x"))
    assert isinstance(lenient, Example) and lenient.fields["judge_score"] is None


def test_rubric_sees_the_fields_and_strategies_limit_it() -> None:
    seen: list[str] = []

    def record(request: Request) -> str:
        seen.append(request.messages[-1].content)
        return "Score: 10"

    rubric = "Strategy {{ strategy }}, answer {{ answer }}, scale {{ scale }}: {{ text }}"
    judge = LLMJudge(teacher=ScriptedTeacher(record), rubric=rubric, system="", strategies=["cot"])
    assert isinstance(judge.check(example("skipped", "explain")), Example) and seen == []
    judge.check(example("Final answer: 4", "cot", answer="4"))
    assert seen == ["Strategy cot, answer 4, scale 10: Final answer: 4"]
    default = LLMJudge(teacher=ScriptedTeacher(record))
    message = default.request(example("Water boils.")).messages
    assert message[0].role == "system" and "Source: Water boils at 100 C" in message[1].content
    assert "{{" in DEFAULT_RUBRIC


def test_cache_judges_once(tmp_path: Path) -> None:
    teacher = CountingTeacher(grader)
    judge = LLMJudge(teacher=teacher, cache=tmp_path / "judge.sqlite")
    judge.check(example("Water boils."))
    judge.check(example("Water boils.", sample=1))
    assert teacher.batches == [1]


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        LLMJudge(teacher=ScriptedTeacher("x"), threshold=11)
    with pytest.raises(ValueError):
        LLMJudge(teacher=ScriptedTeacher("x"), on_error="ignore")
    with pytest.raises(ValueError, match="not installed"):
        LLMJudge(teacher="no-such-teacher")


def test_in_a_study_and_from_toml(tmp_path: Path) -> None:
    study = Study(
        ScriptedTeacher({"explain": "This says that {{ text }} It is worth remembering."}),
        ["explain"],
        [LLMJudge(teacher=ScriptedTeacher(grader), threshold=6)],
    )
    rows = [{"text": "Water boils at 100 C."}, {"text": "Cats purr when content."}]
    items = list(study.stream(rows))
    assert [type(i).__name__ for i in items] == ["Example", "Rejection"]
    assert study.last_report is not None
    assert study.last_report.strategies["explain"].rejected == {
        ("filter:judge", "low judge score"): 1
    }

    assert isinstance(create("filters", "judge", teacher="scripted"), LLMJudge)
    (tmp_path / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = parse_config(
        textwrap.dedent(
            """
            [source]
            path = "facts.jsonl"

            [teacher]
            name = "scripted"
            reply = "This says that {{ text }} It is worth remembering."

            [[strategies]]
            name = "explain"

            [[filters]]
            name = "judge"
            threshold = 5
            teacher = { name = "scripted", reply = "Score: {{ 8 if 'boils' in text else 2 }}" }
            rubric = "Rate: {{ text }}"
            """
        ),
        tmp_path / "study.toml",
    )
    built, source = config.build()
    kept = list(built.iter(source))
    assert [e.fields["judge_score"] for e in kept] == [8.0]
