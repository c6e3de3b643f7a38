"""Built-in strategies: prompts small models can follow, and parsers that say why they reject."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mstudy import (
    ChainOfThought,
    Completion,
    Example,
    Explain,
    Paraphrase,
    Record,
    RecordError,
    Reject,
    Rejection,
    Reverse,
    TemplateStrategy,
)
from mstudy.strategies.cot import extract_final_answer
from mstudy.text import answers_match, first_line

FACT = {
    "id": "f1",
    "text": "Olaf Brandt is the father of Lena Brandt.",
    "subject": "Olaf Brandt",
    "object": "Lena Brandt",
}


def reply(strategy: Any, fields: Mapping[str, Any], text: str, finish: str = "stop") -> Any:
    record = Record.from_mapping(dict(fields))
    request = strategy.requests(record)[0]
    completion = Completion(request.key, text, finish, teacher="t")  # type: ignore[arg-type]
    results = strategy.parse(record, request, completion)
    assert len(results) == 1
    return results[0]


def test_reverse_prompt_is_few_shot_and_prefilled_with_the_object() -> None:
    (request,) = Reverse().requests(Record.from_mapping(FACT))
    roles = [m.role for m in request.messages]
    assert roles == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert request.messages[-1].content.startswith('Restate this fact so that it starts with "Lena')
    assert request.prefill == "Lena Brandt"
    assert request.params.stop == ("\n",)


def test_reverse_accepts_a_true_reversal() -> None:
    result = reply(Reverse(), FACT, "Lena Brandt's father is Olaf Brandt.\nMore text")
    assert isinstance(result, Example)
    assert result.fields == {
        "input": FACT["text"],
        "text": "Lena Brandt's father is Olaf Brandt.",
        "answer": None,
        "subject": "Olaf Brandt",
        "object": "Lena Brandt",
    }


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Olaf Brandt is the father of Lena Brandt.", "copy of the source"),
        ("Lena Brandt has a father.", "subject missing"),
        ("Olaf Brandt's daughter is Lena Brandt.", "not reversed"),
        ("   ", "empty reply"),
        ('""', "empty reply"),
        ("...", "empty"),
        ("I'm sorry, I cannot help with that.", "refusal"),
    ],
)
def test_reverse_rejections_say_why(text: str, reason: str) -> None:
    result = reply(Reverse(prefill=""), FACT, text)
    assert isinstance(result, Rejection)
    assert (result.stage, result.reason) == ("parse", reason)
    assert result.source_id == "f1" and result.strategy == "reverse"


def test_truncated_and_failed_replies_are_rejections() -> None:
    truncated = reply(Reverse(), FACT, "Lena Brandt's father is", "length")
    assert isinstance(truncated, Rejection) and truncated.reason == "truncated"
    record = Record.from_mapping(FACT)
    request = Reverse().requests(record)[0]
    failed = Reverse().parse(
        record, request, Completion(request.key, "", "error", error="HTTP 500")
    )
    assert isinstance(failed[0], Rejection)
    assert (failed[0].stage, failed[0].detail) == ("teacher", "HTTP 500")


def test_reverse_without_entities_only_checks_for_a_copy() -> None:
    fields = {"id": "x", "text": "Paris is the capital of France."}
    (request,) = Reverse().requests(Record.from_mapping(fields))
    assert request.prefill is None and "the other way round" in request.messages[-1].content
    assert isinstance(reply(Reverse(), fields, "France's capital is Paris."), Example)


def test_field_mapping_and_missing_fields() -> None:
    strategy = Reverse(fields={"text": "fact", "subject": "a", "object": "b"})
    ok = {"id": "m", "fact": "A likes B.", "a": "A", "b": "B"}
    assert strategy.requests(Record.from_mapping(ok))[0].prefill == "B"
    with pytest.raises(RecordError, match=r"record 'm': missing field 'fact'"):
        Reverse(fields={"text": "fact"}).requests(Record.from_mapping({"id": "m", "text": "x"}))
    with pytest.raises(ValueError, match="unknown role"):
        Reverse(fields={"txt": "fact"})


def test_n_samples_make_distinct_requests() -> None:
    requests = Paraphrase(n=3, params={"seed": 7}).requests(Record.from_mapping(FACT))
    assert [r.sample for r in requests] == [0, 1, 2]
    assert len({r.key for r in requests}) == 3 and len({r.seed for r in requests}) == 3


def test_paraphrase_checks() -> None:
    fields = {"id": "p", "text": "The bridge was closed for repairs in 1998."}
    good = reply(Paraphrase(), fields, "Paraphrase: In 1998 the bridge shut for repair work.")
    assert isinstance(good, Example) and good.text == "In 1998 the bridge shut for repair work."
    copy = reply(Paraphrase(), fields, "the bridge was closed for repairs in 1998")
    assert isinstance(copy, Rejection) and copy.reason == "copy of the source"
    short = reply(Paraphrase(), fields, "Closed.")
    assert isinstance(short, Rejection) and short.reason == "length ratio out of bounds"


def test_explain_checks() -> None:
    fields = {"id": "e", "text": "Ice floats on water."}
    good = reply(Explain(), fields, "Ice is less dense than liquid water, so it floats on top.")
    assert isinstance(good, Example) and good.fields["input"] == "Ice floats on water."
    short = reply(Explain(), fields, "Density.")
    assert isinstance(short, Rejection) and short.reason == "too short"
    boiler = reply(Explain(), fields, "As an AI language model, I think ice floats because...")
    assert isinstance(boiler, Rejection) and boiler.reason == "refusal"


def test_cot_compares_final_answer_with_gold() -> None:
    fields = {"id": "q", "question": "What is 6 times 7?", "answer": "42"}
    good = reply(ChainOfThought(), fields, "1. 6 x 7 = 42.\nFinal answer: 42")
    assert isinstance(good, Example) and good.fields["answer"] == "42"
    wrong = reply(ChainOfThought(), fields, "1. 6 x 7 = 43.\nFinal answer: 43")
    assert isinstance(wrong, Rejection) and wrong.reason == "wrong answer"
    assert "expected '42'" in wrong.detail
    none = reply(ChainOfThought(), fields, "It is a product.")
    assert isinstance(none, Rejection) and none.reason == "no final answer"
    numeric_gold = reply(ChainOfThought(), {**fields, "answer": 42}, "Final answer: 42.0")
    assert isinstance(numeric_gold, Example)


def test_cot_without_gold_keeps_any_final_answer_unless_required() -> None:
    fields = {"id": "q", "question": "Name a prime."}
    assert isinstance(reply(ChainOfThought(), fields, "Final answer: 7"), Example)
    strict = reply(ChainOfThought(require_gold=True), fields, "Final answer: 7")
    assert isinstance(strict, Rejection) and strict.reason == "no gold answer"


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so it is 5.\nFinal answer: 12", "12"),
        ("The answer is \\boxed{3/4}.", "3/4"),
        ("steps\n#### 1,000", "1,000"),
        ("Final Answer: **Paris**.", "Paris"),
        ("no answer here", None),
    ],
)
def test_extract_final_answer(text: str, answer: str | None) -> None:
    assert extract_final_answer(text) == answer


@given(st.integers(-(10**9), 10**9))
def test_numeric_answers_match_in_any_format(n: int) -> None:
    assert answers_match(f"{n:,}", str(n))
    assert answers_match(f"{n}.0", str(n))
    assert not answers_match(str(n + 1), str(n))


def test_answers_match_normalises_words() -> None:
    assert answers_match("The Eiffel Tower", "eiffel tower.")
    assert answers_match("50%", "0.5")
    assert not answers_match("", "")


def test_a_new_strategy_in_a_few_lines() -> None:
    class Quiz(TemplateStrategy):
        name = "quiz"
        template = "Write one quiz question about this fact.\nFact: {{ text }}"

        def check(self, variables: Mapping[str, Any], text: str) -> dict[str, Any] | Reject:
            question = first_line(text)
            if not question.endswith("?"):
                return Reject("not a question", question[:80])
            return {"input": variables["text"], "text": question, "answer": None}

    fields = {"id": "z", "text": "Ada Lovelace wrote the first program."}
    assert isinstance(reply(Quiz(), fields, "Who wrote the first program?"), Example)
    bad = reply(Quiz(), fields, "Ada did.")
    assert isinstance(bad, Rejection) and bad.reason == "not a question"


def test_fingerprint_changes_with_what_changes_outputs() -> None:
    assert Reverse().fingerprint == Reverse().fingerprint
    assert Reverse().fingerprint != Reverse(template="{{ text }}").fingerprint
    assert Reverse().fingerprint != Reverse(n=2).fingerprint
    assert Reverse().fingerprint != Reverse(require_order=False).fingerprint


def test_few_shot_from_toml_tables() -> None:
    strategy = Paraphrase(examples=[{"text": "A is big.", "reply": "A is large."}])
    messages = strategy.requests(Record.from_mapping({"text": "B is small."}))[0].messages
    assert [m.content for m in messages[1:3]] == [
        "Paraphrase this text.\nText: A is big.",
        "A is large.",
    ]
