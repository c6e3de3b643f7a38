"""``round_trip``: a reversal restated back subject-first must give its source again."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mstudy
from mstudy.filters.roundtrip import RoundTrip, restates_source
from mstudy.records import Example, Rejection, Request

_part = st.text(alphabet="bdfgklmnprstvz", min_size=3, max_size=8).map(str.capitalize)
_name = st.lists(_part, min_size=1, max_size=3, unique=True).map(" ".join)

# (forward with {s} {o}, a subject-first restatement that keeps the roles, one that swaps them
# or names the inverse relation)
RELATIONS = [
    ("{s} teaches {o}.", "{s} is the teacher of {o}.", "{s} is taught by {o}."),
    ("{s} employs {o}.", "{s} is the employer of {o}.", "{s} works for {o}."),
    ("{s} is the grandmother of {o}.", "{s} is a grandmother to {o}.",
     "{s} is the grandchild of {o}."),
    ("{s} is the captain of {o}.", "{s} captains {o}.", "{s} is captained by {o}."),
    ("{s} sponsors {o}.", "{s} is the sponsor of {o}.", "{s} is sponsored by {o}."),
    ("{s} edits {o}.", "{s} is the editor of {o}.", "{s} is edited by {o}."),
]  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(s=_name, o=_name, which=st.integers(0, len(RELATIONS) - 1))
def test_restatements_keep_or_lose_the_source(s: str, o: str, which: int) -> None:
    if s.casefold() in o.casefold() or o.casefold() in s.casefold():
        return
    forward, kept, wrong = (t.format(s=s, o=o) for t in RELATIONS[which])
    assert restates_source(forward, forward, s, o)[0]
    assert restates_source(forward, kept, s, o)[0]
    assert not restates_source(forward, wrong, s, o)[0]
    assert not restates_source(forward, RELATIONS[which][0].format(s=o, o=s), s, o)[0]
    added = forward.rstrip(".") + " and Quorth."
    assert not restates_source(forward, added, s, o)[0]


# A teacher that knows the inverse relations: it restates a reversal back from the given name.
_BACK = {
    "works for": "{s} employs {o}.",
    "is the employee of": "{s} employs {o}.",
    "is the employer of": "{s} works for {o}.",
    "is the grandchild of": "{s} is the grandmother of {o}.",
    "is the grandmother of": "{s} is the grandchild of {o}.",
}


def _restate(request: Request) -> str:
    text, s = str(request.variables["text"]), str(request.variables["subject"])
    o = text.split(" ")[0] + " " + text.split(" ")[1]
    for phrase, back in _BACK.items():
        if phrase in text:
            return back.format(s=s, o=o)[len(s) :]  # the reply goes on after the prefill
    return " is unknown."


def _rows() -> list[dict[str, str]]:
    return [
        {"id": "e1", "text": "Ada Quill employs Bo Renn.", "subject": "Ada Quill",
         "object": "Bo Renn"},
        {"id": "e2", "text": "Cy Marr employs Di Senn.", "subject": "Cy Marr",
         "object": "Di Senn"},
        {"id": "g1", "text": "Ed Voss is the grandmother of Fa Lenn.", "subject": "Ed Voss",
         "object": "Fa Lenn"},
        {"id": "g2", "text": "Gu Tarr is the grandmother of Ha Benn.", "subject": "Gu Tarr",
         "object": "Ha Benn"},
    ]  # fmt: skip


REPLIES = {
    "e1": "Bo Renn works for Ada Quill.",  # true, no word of "employs": ungrounded
    "e2": "Di Senn is the employer of Cy Marr.",  # roles swapped
    "g1": "Fa Lenn is the grandchild of Ed Voss.",  # true, ungrounded
    "g2": "Ha Benn is the grandmother of Gu Tarr.",  # roles swapped
}


def _reply(request: Request) -> str:
    if request.strategy == "round_trip":
        return _restate(request)
    return REPLIES[request.source_id][len(str(request.variables["object"])) :]


def _teacher() -> mstudy.ScriptedTeacher:
    return mstudy.ScriptedTeacher(_reply)


def _run(study: mstudy.Study, rows: list[dict[str, str]]) -> tuple[list[Example], list[Rejection]]:
    kept: list[Example] = []
    lost: list[Rejection] = []
    for item in study.stream(rows):
        (kept if isinstance(item, Example) else lost).append(item)  # type: ignore[arg-type]
    return kept, lost


def test_round_trip_keeps_true_inverse_forms_and_rejects_swapped_roles() -> None:
    teacher = _teacher()
    check = RoundTrip(teacher=teacher, readings=())
    study = mstudy.Study(teacher, ["reverse"], [check])
    kept, lost = _run(study, _rows())
    assert sorted(row.source_id for row in kept) == ["e1", "g1"]
    assert {row.fields["round_trip"] for row in kept} == {
        "Ada Quill employs Bo Renn.",
        "Ed Voss is the grandmother of Fa Lenn.",
    }
    rejected = [r for r in lost if r.stage == "filter:round_trip"]
    assert sorted(r.source_id for r in rejected) == ["e2", "g2"]
    assert {r.reason for r in rejected} == {"round trip differs"}


def test_round_trip_asks_only_about_the_readings_it_is_given() -> None:
    calls: list[str] = []

    def reply(request: Request) -> str:
        if request.strategy == "round_trip":
            calls.append(str(request.variables["text"]))
        return _reply(request)

    teacher = mstudy.ScriptedTeacher(reply)
    # default readings: only what role_check cannot settle (the two true, ungrounded ones)
    study = mstudy.Study(teacher, ["reverse"], [RoundTrip(teacher=teacher)])
    kept = sorted(row.source_id for row in study.iter(_rows()))
    assert sorted(calls) == [
        "Bo Renn works for Ada Quill.",
        "Fa Lenn is the grandchild of Ed Voss.",
    ]
    assert kept == ["e1", "e2", "g1", "g2"]  # the swapped ones are role_check's to reject


def test_round_trip_failures_and_bad_settings() -> None:
    def broken(request: Request) -> str:
        if request.strategy == "round_trip":
            raise RuntimeError("down")
        return REPLIES[request.source_id][len(str(request.variables["object"])) :]

    teacher = mstudy.ScriptedTeacher(broken)
    rows = _rows()[:1]
    strict = mstudy.Study(teacher, ["reverse"], [RoundTrip(teacher=teacher, readings=())])
    kept, lost = _run(strict, rows)
    assert kept == [] and [r.reason for r in lost] == ["round trip failed"]
    lenient = RoundTrip(teacher=teacher, readings=(), on_error="keep")
    assert len(list(mstudy.Study(teacher, ["reverse"], [lenient]).iter(rows))) == 1
    with pytest.raises(ValueError, match="unknown reading"):
        RoundTrip(teacher=teacher, readings=("sideways",))
    with pytest.raises(ValueError, match="on_error"):
        RoundTrip(teacher=teacher, on_error="ignore")
