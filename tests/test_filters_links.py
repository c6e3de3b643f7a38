"""``link_check``: a composed statement read against its own two source facts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mstudy.filters.links import LinkCheck, link_problem
from mstudy.records import Completion, Example, Request

FIRST, SECOND = "Zapoth's mentor is Rigux.", "Rigux lives in Fadukov."
NAMES = ("Zapoth", "Rigux", "Fadukov")


@pytest.mark.parametrize(
    "text",
    [
        "Zapoth's mentor lives in Fadukov; that mentor is Rigux.",
        "Zapoth's mentor lives in Fadukov.",
        "The mentor of Zapoth lives in Fadukov, and that mentor is Rigux.",
    ],
)
def test_role_keeping_compositions_pass(text: str) -> None:
    assert link_problem(text, FIRST, SECOND, *NAMES) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Zapoth lives in Fadukov.", "first hop dropped"),
        ("Rigux's mentor Zapoth lives in Fadukov.", "roles swapped"),
        ("Zapoth is the mentor of Rigux, who lives in Fadukov.", "roles swapped"),
        ("Zapoth's mentor is Rigux and Rigux lives in Fadukov.", "restates the second fact"),
        ("Zapoth's mentor Rigux lives in Fadukov.", "restates the second fact"),
        ("Fadukov is where Zapoth's mentor lives.", "object before subject"),
        ("Zapoth's mentor works in Fadukov.", "second relation missing"),
        ("Zapoth's mentor lives in Fadukov with Kellan.", "adds a name"),
        ("Zapoth's mentor lives somewhere.", "missing entity"),
    ],
)
def test_broken_compositions_are_named(text: str, reason: str) -> None:
    got = link_problem(text, FIRST, SECOND, *NAMES)
    assert got is not None and got[0] == reason


def test_relation_before_the_subject_and_multi_word_names() -> None:
    first = "The advisor of Ann Vel is Prof Kor."
    second = "Prof Kor has an office in Hall Ub."
    names = ("Ann Vel", "Prof Kor", "Hall Ub")
    good = "The advisor of Ann Vel has an office in Hall Ub, and is Prof Kor."
    assert link_problem(good, first, second, *names) is None
    bad = link_problem("Ann Vel has an office in Hall Ub.", first, second, *names)
    assert bad is not None and bad[0] == "first hop dropped"
    swapped = link_problem(
        "The advisor of Prof Kor, Ann Vel, has an office in Hall Ub.", first, second, *names
    )
    assert swapped is not None and swapped[0] == "roles swapped"
    needs = link_problem(
        "The advisor of Ann Vel has an office in Hall Ub.",
        first,
        second,
        *names,
        require_middle=True,
    )
    assert needs is not None and needs[0] == "missing entity"


def _example(text: str, strategy: str = "connect", **fields: str) -> Example:
    request = Request(messages=(), source_id="r1", strategy=strategy)
    row = {"text": text, "input": FIRST, "second": SECOND, "subject": "Zapoth"}
    row.update({"middle": "Rigux", "object": "Fadukov", **fields})
    return Example.from_completion(request, Completion(request.key, text), row)


def test_filter_rejects_with_reason_and_skips_what_it_cannot_read() -> None:
    check = LinkCheck()
    assert check.check(_example("Zapoth's mentor lives in Fadukov.")).__class__ is Example
    rejected = check.check(_example("Zapoth lives in Fadukov."))
    assert getattr(rejected, "reason", None) == "first hop dropped"
    assert getattr(rejected, "stage", None) == "filter:link_check"
    # other strategies, and rows without the source facts, pass unchecked
    assert isinstance(check.check(_example("Zapoth lives in Fadukov.", "paraphrase")), Example)
    assert isinstance(check.check(_example("Zapoth lives in Fadukov.", second="")), Example)
    with pytest.raises(ValueError, match="window"):
        LinkCheck(window=0)


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=8)


@given(s=_word, m=_word, o=_word, noise=st.text(max_size=60))
def test_never_crashes_and_never_keeps_a_statement_without_the_subject(
    s: str, m: str, o: str, noise: str
) -> None:
    s, m, o = (f"{x.capitalize()}x{i}" for i, x in enumerate((s, m, o)))
    first, second = f"{s}'s mentor is {m}.", f"{m} lives in {o}."
    assert link_problem(f"{noise} {o}", first, second, s, m, o) is not None
    link_problem(noise, first, second, s, m, o)  # any text: a verdict, never an exception
