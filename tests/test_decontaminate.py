"""``decontaminate``: long n-gram overlap with evaluation sets."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mstudy import Completion, Example, Message, Rejection, Request
from mstudy.config import parse_config
from mstudy.filters.decontaminate import Decontaminate, ngram_hashes
from mstudy.plugins import create

GSM = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)
MMLU = {
    "id": "anatomy-7",
    "question": "Which of the following is the body cavity that contains the pituitary gland?",
    "answer": "Cranial",
}


def example(text: str, strategy: str = "explain", sample: int = 0, **fields: Any) -> Example:
    request = Request((Message("user", text),), sample=sample, source_id="s", strategy=strategy)
    return Example.from_completion(request, Completion(request.key, text), {"text": text, **fields})


def reason(verdict: Example | Rejection) -> str | None:
    return verdict.reason if isinstance(verdict, Rejection) else None


def test_thirteen_word_overlap_is_dropped_with_its_evidence() -> None:
    f = Decontaminate(eval_sets={"gsm8k": [GSM], "mmlu": [MMLU]})
    copied = example(
        "Story: natalia SOLD clips to 48 of her friends in April, and then she sold half."
    )
    verdict = f.check(copied)
    assert isinstance(verdict, Rejection)
    assert verdict.stage == "filter:decontaminate" and verdict.reason == "contaminated: gsm8k"
    assert "gsm8k row '0'" in verdict.detail
    assert "natalia sold clips to 48 of her friends in april and then she sold" in verdict.detail
    assert f.summary()["dropped"] == {"gsm8k": 1}


def test_shorter_overlap_is_kept() -> None:
    f = Decontaminate(eval_sets={"gsm8k": [GSM]})
    twelve = "sold clips to 48 of her friends in april and then she"
    assert len(twelve.split()) == 12
    assert isinstance(f.check(example(f"We know {twelve} ...")), Example)
    assert isinstance(
        Decontaminate(eval_sets={"gsm8k": [GSM]}, n=8).check(example(twelve)), Rejection
    )


def test_rows_and_fields() -> None:
    f = Decontaminate(eval_sets={"mmlu": [MMLU]})
    question = "which of the following is the body cavity that contains the pituitary gland"
    hit = f.check(example("Unrelated explanation.", input=f"Q: {question}? A: cranial"))
    assert reason(hit) == "contaminated: mmlu" and "'anatomy-7'" in hit.detail  # type: ignore[union-attr]
    only_text = Decontaminate(eval_sets={"mmlu": [MMLU]}, fields=["text"])
    assert isinstance(only_text.check(example("Unrelated.", input=question)), Example)
    answers_only = Decontaminate(eval_sets={"mmlu": [MMLU]}, eval_fields=["answer"])
    assert answers_only.ngrams == 0  # "Cranial" is too short to mean anything


def test_short_eval_items_match_whole() -> None:
    short = "the quick brown fox jumps over the dog"  # 8 words < 13
    f = Decontaminate(eval_sets={"s": [short, "too short to count"]})
    assert reason(f.check(example(f"Yes: {short}!"))) == "contaminated: s"
    assert isinstance(f.check(example("it is too short to count here")), Example)
    assert isinstance(
        Decontaminate(eval_sets={"s": [short]}, min_tokens=9).check(example(short)), Example
    )


def test_min_matches() -> None:
    f = Decontaminate(eval_sets={"gsm8k": [GSM]}, min_matches=5)
    words = GSM.split()
    assert isinstance(f.check(example(" ".join(words[:14]))), Example)  # 2 shared 13-grams
    assert isinstance(f.check(example(" ".join(words[:20]))), Rejection)  # 8


def test_eval_sets_from_files(tmp_path: Path) -> None:
    (tmp_path / "gsm8k_test.jsonl").write_text(json.dumps({"id": "g1", "question": GSM}) + "\n")
    (tmp_path / "lines.txt").write_text("\n" + GSM + "\n")
    f = Decontaminate(eval_sets=[str(tmp_path / "gsm8k_test.jsonl"), tmp_path / "lines.txt"])
    assert [s.name for s in f.sets] == ["gsm8k_test", "lines"]
    verdict = f.check(example(GSM))
    assert reason(verdict) == "contaminated: gsm8k_test" and "'g1'" in verdict.detail  # type: ignore[union-attr]
    g = Decontaminate(eval_path=str(tmp_path / "lines.txt"))
    assert "row 'line 2'" in g.check(example(GSM)).detail  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="eval_sets or eval_path"):
        Decontaminate()


def test_check_many_equals_check() -> None:
    f = Decontaminate(eval_sets={"gsm8k": [GSM]})
    items = [example(t, sample=i) for i, t in enumerate([GSM, "clean text", "", GSM.upper()])]
    many = [reason(v) for v in f.check_many(items)]
    assert many == [reason(f.check(e)) for e in items]
    assert many == ["contaminated: gsm8k", None, None, "contaminated: gsm8k"]


VOCAB = [f"w{i}" for i in range(400)]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(13, 20), st.integers(0, 30), st.integers(0, 30))
def test_a_planted_ngram_is_always_found_and_nothing_else(
    seed: int, n: int, before: int, after: int
) -> None:
    rng = random.Random(seed)
    evals = [" ".join(rng.choice(VOCAB) for _ in range(rng.randint(n, 40))) for _ in range(5)]
    f = Decontaminate(eval_sets={"e": evals}, n=n)
    source = evals[rng.randrange(5)].split()
    start = rng.randrange(len(source) - n + 1)
    window = source[start : start + n]
    other = [f"z{i}" for i in range(before + after)]  # words no evaluation text has
    planted = " ".join(other[:before] + window + other[before:])
    assert isinstance(f.check(example(planted)), Rejection)
    assert isinstance(f.check(example(" ".join(other + window[:-1]))), Example)


@given(st.lists(st.text(max_size=30), max_size=5), st.integers(1, 6))
def test_ngram_hashes_shape(texts: list[str], n: int) -> None:
    hashes, doc, start = ngram_hashes(texts, n)
    assert len(hashes) == len(doc) == len(start)
    from mstudy.text import normalize

    assert len(hashes) == sum(max(len(normalize(t).split()) - n + 1, 0) for t in texts)


def test_by_name_and_from_toml(tmp_path: Path) -> None:
    assert isinstance(create("filters", "decontaminate", eval_sets={"x": [GSM]}), Decontaminate)
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "gsm8k.jsonl").write_text(json.dumps({"id": "g1", "question": GSM}) + "\n")
    rows = [
        {"id": "r1", "text": GSM},
        {"id": "r2", "text": "Olaf Brandt is the father of Lena Brandt."},
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = parse_config(
        textwrap.dedent(
            """
            [source]
            path = "train.jsonl"

            [teacher]
            name = "scripted"
            reply = "This says that {{ text }} It is worth remembering."

            [[strategies]]
            name = "explain"

            [[filters]]
            name = "decontaminate"
            eval_path = "evals/gsm8k.jsonl"
            n = 13
            """
        ),
        tmp_path / "study.toml",
    )
    study, source = config.build()
    report = study.run(source)
    assert report.accepted == 1
    assert report.strategies["explain"].rejected == {
        ("filter:decontaminate", "contaminated: gsm8k"): 1
    }
    assert report.filters["decontaminate"].rejected == {"contaminated: gsm8k": 1}
    sample = report.samples[0]
    assert sample["reason"] == "contaminated: gsm8k" and sample["row"]["input"] == GSM
