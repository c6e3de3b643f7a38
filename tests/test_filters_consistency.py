"""Consistency filters (reverse, paraphrase, refusal), and every selection filter on odd text."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mstudy import (
    Completion,
    ExactDedup,
    Example,
    LengthFilter,
    Message,
    Record,
    Reject,
    Rejection,
    Request,
    Reverse,
    ScriptedTeacher,
)
from mstudy.config import parse_config
from mstudy.filters.consistency import (
    ParaphraseCheck,
    RefusalFilter,
    ReverseCheck,
    entities,
    numbers,
)
from mstudy.filters.decontaminate import Decontaminate
from mstudy.filters.judge import LLMJudge
from mstudy.filters.minhash import NearDedup
from mstudy.filters.verify import AnswerCheck, ProgramCheck
from mstudy.plugins import create

FACT = "Olaf Brandt is the father of Lena Brandt."


def example(strategy: str = "reverse", sample: int = 0, **fields: Any) -> Example:
    request = Request((Message("user", "x"),), sample=sample, source_id="s1", strategy=strategy)
    return Example.from_completion(request, Completion(request.key, "x"), fields)


def reverse(text: str, source: str = FACT, **extra: Any) -> Example | Rejection:
    entities = {"subject": "Olaf Brandt", "object": "Lena Brandt"} if source == FACT else {}
    row = example(input=source, text=text, **{**entities, **extra})
    return ReverseCheck().check(row)


def reason(verdict: Example | Rejection) -> str | None:
    return verdict.reason if isinstance(verdict, Rejection) else None


# -- reverse --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Lena Brandt's father is Olaf Brandt.",
        "Lena Brandt is the daughter of Olaf Brandt.",
        "Lena Brandt is the child of Olaf Brandt.",
        "Lena Brandt has a father named Olaf Brandt.",
    ],
)
def test_good_reversals_pass(text: str) -> None:
    assert reason(reverse(text)) is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (FACT, "copy of the source"),
        ("olaf brandt IS the father of lena brandt", "copy of the source"),
        ("Lena Brandt's father is Olaf.", "subject missing"),
        ("Lena's father is Olaf Brandt.", "object missing"),
        ("Olaf Brandt is Lena Brandt's father.", "not reversed"),
        ("Lena Brandt is the father of Olaf Brandt.", "relation not rewritten"),
        ("Lena Brandt is related to Olaf Brandt.", "relation not rewritten"),
        ("", "empty"),
        ("...", "empty"),
    ],
)
def test_bad_reversals_are_rejected(text: str, why: str) -> None:
    verdict = reverse(text)
    assert reason(verdict) == why
    assert isinstance(verdict, Rejection) and verdict.stage == "filter:reverse_check"


def test_swapped_entities_with_the_same_relation_invert_the_fact() -> None:
    source = "Ada Vance mentors Bo Lind."
    row = example(
        input=source, text="Bo Lind mentors Ada Vance.", subject="Ada Vance", object="Bo Lind"
    )
    verdict = ReverseCheck().check(row)
    assert reason(verdict) == "relation not rewritten" and "inverts" in verdict.detail  # type: ignore[union-attr]
    good = example(
        input=source,
        text="Bo Lind is mentored by Ada Vance.",
        subject="Ada Vance",
        object="Bo Lind",
    )
    assert isinstance(ReverseCheck().check(good), Example)


def test_symmetric_relations_may_swap() -> None:
    row = example(
        input="Ann Lee is married to Bo Chan.",
        text="Bo Chan is married to Ann Lee.",
        subject="Ann Lee",
        object="Bo Chan",
    )
    assert isinstance(ReverseCheck().check(row), Example)
    strict = ReverseCheck(symmetric=[])
    assert reason(strict.check(row)) == "relation not rewritten"


def test_rules_are_configurable() -> None:
    row = example(input="Zed Aro coaches Kim Oda.", text="Kim Oda is trained by Zed Aro.")
    assert isinstance(ReverseCheck().check(row), Example)
    ruled = ReverseCheck(rules={"coaches": ["coached by", "'s coach"]})
    assert reason(ruled.check(row)) == "relation not rewritten"
    ok = example(input="Zed Aro coaches Kim Oda.", text="Kim Oda's coach is Zed Aro.")
    assert isinstance(ruled.check(ok), Example)
    bare = ReverseCheck(default_rules=False)
    assert isinstance(
        bare.check(example(input=FACT, text="Lena Brandt is related to Olaf Brandt.")), Example
    )


def test_entities_only_when_given() -> None:
    without = example(input=FACT, text="Lena Brandt's father is Olaf Brandt.")
    assert isinstance(ReverseCheck().check(without), Example)
    assert reason(ReverseCheck(require_entities=True).check(without)) == "no entities"
    same_order = example(
        input=FACT,
        text="Olaf Brandt is Lena Brandt's father.",
        subject="Olaf Brandt",
        object="Lena Brandt",
    )
    assert reason(ReverseCheck().check(same_order)) == "not reversed"
    assert isinstance(ReverseCheck(require_order=False).check(same_order), Example)


def test_a_lone_entity_is_checked_as_the_strategy_checks_it() -> None:
    only_object = example(input=FACT, text="Olaf Brandt's daughter is Lena.", object="Lena Brandt")
    assert reason(ReverseCheck().check(only_object)) == "object missing"
    only_subject = example(input=FACT, text="Lena Brandt's father is Olaf Brandt.", subject="Olaf")
    assert isinstance(ReverseCheck().check(only_subject), Example)
    assert reason(ReverseCheck(require_entities=True).check(only_subject)) == "no entities"


_LETTERS = "abcdefghijklmnopqrstuvwxyzéøßçåñüłžжпрлдあ李"
_WORD_ST = st.text(alphabet=_LETTERS, min_size=1, max_size=7).map(str.capitalize)
_NAME_ST = st.one_of(
    st.lists(_WORD_ST, min_size=1, max_size=3).map(" ".join),
    st.sampled_from(
        ["Zoë Ångström", "José María Pérez", "Олег Петров", "李小龙", "Jean-Luc O'Neil", "Ada"]
    ),
)
_RELATION_ST = st.one_of(
    st.sampled_from(
        [
            "is the father of",
            "wrote",
            "mentors",
            "is married to",
            "discovered",
            "is the capital of",
            "lives next to",
            "works for",
        ]
    ),
    st.lists(st.text(alphabet="abcdefxyz", min_size=1, max_size=6), min_size=1, max_size=3).map(
        " ".join
    ),
)
_ENTITY_ST = st.one_of(st.none(), st.just("  "), st.just("given"))


@st.composite
def _reversal_cases(draw: st.DrawFn) -> tuple[dict[str, str], str]:
    subject, obj = draw(_NAME_ST), draw(_NAME_ST)
    relation = draw(_RELATION_ST)
    source = f"{subject} {relation} {obj}."
    back = draw(_RELATION_ST)
    reply = draw(
        st.sampled_from(
            [
                f"{obj} {back} {subject}.",
                f"{obj.upper()} {relation} {subject.lower()}!",
                f"{subject} {back} {obj}.",
                source,
                f"{obj} {back}.",
                f"{subject} {back}.",
                f"{back} {draw(_NAME_ST)}.",
                "...",
            ]
        )
    )
    record = {"id": "r", "text": source}
    for role, name in (("subject", subject), ("object", obj)):
        given = draw(_ENTITY_ST)
        if given is not None:
            record[role] = name if given == "given" else given
    return record, reply


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_reversal_cases())
def test_the_reverse_strategy_and_filter_agree(case: tuple[dict[str, str], str]) -> None:
    """What the strategy rejects, the filter rejects alike; what it keeps, the filter keeps
    unless the relation was not rewritten (the filter's one check of its own)."""
    fields, reply = case
    strategy = Reverse()
    variables = strategy.variables(Record.from_mapping(fields))
    verdict = strategy.check(variables, reply)
    row = example(
        input=fields["text"],
        text=reply,
        **{k: v for k, v in fields.items() if k in ("subject", "object")},
    )
    filtered = ReverseCheck().check(row)
    if isinstance(verdict, Reject):
        assert isinstance(filtered, Rejection)
        assert (filtered.reason, filtered.detail) == (verdict.reason, verdict.detail)
    else:
        assert verdict["text"] == reply
        assert reason(filtered) in (None, "relation not rewritten")


def test_other_strategies_pass_through() -> None:
    row = example("paraphrase", input=FACT, text=FACT)
    assert isinstance(ReverseCheck().check(row), Example)
    assert reason(ReverseCheck(strategies=[]).check(row)) == "copy of the source"


# -- paraphrase -----------------------------------------------------------------------------------

SOURCE = "The bridge over the Elbe was closed for repairs in 1998 after 3 accidents."


def para(text: str, source: str = SOURCE, **kwargs: Any) -> Example | Rejection:
    return ParaphraseCheck(**kwargs).check(example("paraphrase", input=source, text=text))


def test_paraphrase_keeping_names_and_numbers_passes() -> None:
    assert (
        reason(para("In 1998, repair work shut the bridge over the Elbe after three accidents."))
        is None
    )
    assert (
        reason(para("Following 3 accidents, the Elbe bridge was shut in 1998 to be repaired."))
        is None
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (SOURCE, "copy of the source"),
        (
            "the bridge over the Elbe was closed for repairs, in 1998, after 3 accidents",
            "copy of the source",
        ),
        (
            "The bridge over the Elbe was closed for repairs in 1998 after 3 accidents today.",
            "too close to the source",
        ),
        ("In 1999, repair work shut the bridge over the Elbe after 3 accidents.", "number changed"),
        ("Repair work shut the bridge in 1998 after 3 accidents.", "entity dropped"),
        ("In 1998, 12 workers shut the bridge over the Elbe after 3 accidents.", "number added"),
        ("", "empty"),
    ],
)
def test_bad_paraphrases_are_rejected(text: str, why: str) -> None:
    verdict = para(text)
    assert reason(verdict) == why
    assert isinstance(verdict, Rejection) and verdict.stage == "filter:paraphrase_check"


def test_paraphrase_settings() -> None:
    dropped = "Repair work shut the bridge in 1998 after 3 accidents."
    assert reason(para(dropped, min_entity_recall=0.0)) is None
    assert (
        reason(
            para(
                "In 1998, 12 workers shut the bridge over the Elbe after 3 accidents.",
                allow_new_numbers=True,
            )
        )
        is None
    )
    assert (
        reason(para("The Elbe bridge shut for repairs after the accidents.", keep_numbers=False))
        is None
    )


def test_numbers_and_entities() -> None:
    assert numbers("1,000 people paid $3.50 or 3,5 euros, one of them twice") == {
        "1000",
        "3.5",
        "1",
    }
    assert numbers("one of them", words=False) == set()
    assert entities("Ada Lovelace met Charles Babbage in London. She wrote notes.") == {
        "lovelace",
        "charles",
        "babbage",
        "london",
    }
    assert entities("東京は日本の首都です。") == set()


def test_non_latin_paraphrase() -> None:
    source = "東京の人口は1400万人です。"
    assert reason(para("東京には1400万人が住んでいます。", source)) is None
    assert reason(para("東京には1300万人が住んでいます。", source)) == "number changed"


# -- refusal --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("I'm sorry, but I can't help with that.", "refusal"),
        ("I cannot provide a reversed version of this.", "refusal"),
        ("As an AI language model, I do not have opinions.", "refusal"),
        ("Sure! Here's the paraphrase: the cat sat on the mat.", "boilerplate"),
        ("Here is a reversed version of the fact: Lena's father is Olaf.", "boilerplate"),
        ("Lena's father is Olaf. I hope this helps!", "boilerplate"),
        ("The answer is 4. Let me know if you need anything else.", "boilerplate"),
    ],
)
def test_refusals_and_boilerplate(text: str, why: str) -> None:
    verdict = RefusalFilter().check(example("explain", text=text))
    assert reason(verdict) == why
    assert isinstance(verdict, Rejection) and verdict.stage == "filter:refusal"


def test_refusal_settings() -> None:
    clean = example("explain", text="Lena Brandt's father is Olaf Brandt.")
    assert isinstance(RefusalFilter().check(clean), Example)
    custom = RefusalFilter(patterns=[r"\bolaf\b"], default_patterns=False)
    assert reason(custom.check(clean)) == "boilerplate"
    assert reason(custom.check(example("explain", text="I hope this helps!"))) is None
    assert isinstance(
        RefusalFilter(strategies=["cot"]).check(example("explain", text="As an AI, no.")), Example
    )
    with pytest.raises(ValueError, match="bad pattern"):
        RefusalFilter(patterns=["("])


# -- by name and from TOML ------------------------------------------------------------------------


def test_by_name_and_from_toml(tmp_path: Path) -> None:
    for name, cls in (
        ("reverse_check", ReverseCheck),
        ("paraphrase_check", ParaphraseCheck),
        ("refusal", RefusalFilter),
    ):
        assert isinstance(create("filters", name), cls)
    rows = [{"id": "f1", "text": FACT, "subject": "Olaf Brandt", "object": "Lena Brandt"}]
    (tmp_path / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = parse_config(
        textwrap.dedent(
            """
            [source]
            path = "facts.jsonl"

            [teacher]
            name = "scripted"
            reply.reverse = "{{ object }} is the father of {{ subject }}."
            reply.paraphrase = "As an AI, I would say: {{ text }}"

            [[strategies]]
            name = "reverse"

            [[strategies]]
            name = "paraphrase"

            [[filters]]
            name = "refusal"

            [[filters]]
            name = "reverse_check"
            rules = { "father of" = ["child of", "s father"] }

            [[filters]]
            name = "paraphrase_check"
            min_entity_recall = 0.5
            """
        ),
        tmp_path / "study.toml",
    )
    study, source = config.build()
    report = study.run(source)
    assert report.accepted == 0
    assert report.strategies["reverse"].rejected == {
        ("filter:reverse_check", "relation not rewritten"): 1
    }
    # the built-in parser already drops "As an AI" replies; the refusal filter covers plugins
    assert sum(report.strategies["paraphrase"].rejected.values()) == 1


# -- every selection filter on odd text -----------------------------------------------------------

BIG = {
    "1MB-latin": ("Olaf Brandt is the father of Lena Brandt in 1998. " * 20_000)[:1_000_000],
    "1MB-cjk": ("東京は日本の首都であり人口は1400万人です。" * 50_000)[:1_000_000],
    "1MB-mixed": ("Tokyo 東京 Москва مصر 42 ünïcödé 🙂 " * 35_000)[:1_000_000],
    "1MB-one-token": "x" * 1_000_000,
}


def all_filters() -> list[Any]:
    judge_teacher = ScriptedTeacher(lambda request: "Score: 8\nFine.")
    return [
        LengthFilter(),
        ExactDedup(),
        NearDedup(num_perm=32),
        NearDedup(unit="char", num_perm=32, scope="global"),
        ReverseCheck(strategies=[]),
        ParaphraseCheck(strategies=[]),
        RefusalFilter(),
        AnswerCheck(strategies=[], on_missing_gold="keep"),
        Decontaminate(
            eval_sets={
                "evals": [
                    "Olaf Brandt is the father of Lena Brandt in 1998 and 1999 too, they say."
                ]
            }
        ),
        LLMJudge(teacher=judge_teacher, threshold=5),
    ]


ODD = st.one_of(
    st.just(""),
    st.sampled_from(["x", " ", "42", "东", "😀", "\x00", "ـ", "\u200b", "a\u0301"]),
    st.text(max_size=80),
    st.text(alphabet="日本語のテキスト東京 ", max_size=40),
    st.text(alphabet="абвгд עברית عربى ไทย ", max_size=40),
    st.lists(
        st.sampled_from(["Olaf", "Brandt", "東京", "Москва", "1,000", "!", "\n"]), max_size=30
    ).map(" ".join),
)


def run_all(filters: list[Any], fields: dict[str, Any], strategy: str, sample: int) -> None:
    for f in filters:
        verdict = f.check(example(strategy, sample, **fields))
        assert isinstance(verdict, (Example, Rejection)), f
        if isinstance(verdict, Rejection):
            assert verdict.stage == f"filter:{f.name}" and verdict.reason


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=ODD,
    source=ODD,
    entity=ODD,
    strategy=st.sampled_from(["reverse", "paraphrase", "cot", "pot", "explain"]),
)
def test_every_filter_survives_odd_text(text: str, source: str, entity: str, strategy: str) -> None:
    fields = {
        "text": text,
        "input": source,
        "subject": entity,
        "object": text[:5],
        "answer": entity,
    }
    run_all(all_filters(), fields, strategy, 0)


@pytest.mark.parametrize("name", sorted(BIG))
def test_every_filter_survives_huge_text(name: str) -> None:
    text = BIG[name]
    filters = all_filters()
    for i, fields in enumerate(
        [
            {"text": text, "input": text[:200], "subject": "Olaf", "object": "Lena"},
            {"text": text[:300], "input": text, "answer": text},
            {"text": text, "input": text, "subject": text, "object": text},
        ]
    ):
        run_all(filters, fields, "reverse" if i != 1 else "paraphrase", i)
    code = ProgramCheck(timeout=3, workers=1).check(example("pot", text=text, gold="1"))
    assert isinstance(code, Rejection)
