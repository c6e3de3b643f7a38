"""The journal's checkpoint is versioned JSON: the report and filter states round-trip exactly,
an old pickle checkpoint is refused unread, and leftovers of a removal are cleared."""

from __future__ import annotations

import dataclasses
import json
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mstudy import ConfigError, ExactDedup, Reverse, ScriptedTeacher, Study
from mstudy._journal import CHECKPOINT, FORMAT, Journal, tombstone_path
from mstudy.report import FilterStats, Report, StrategyStats

REPLIES = {"reverse": "{{ object }} holds {{ subject }}."}
RECORDS = [
    {"id": f"r{i}", "text": f"A{i} is in B{i}.", "subject": f"A{i}", "object": f"B{i}"}
    for i in range(30)
]

text = st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates too
counts = st.integers(min_value=-(2**70), max_value=2**70)
json_values = st.recursive(
    st.none() | st.booleans() | counts | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def reports(draw: st.DrawFn) -> Report:
    strategies = {
        name: StrategyStats(
            *draw(st.lists(counts, min_size=6, max_size=6)),
            rejected=Counter(draw(st.dictionaries(st.tuples(text, text), counts, max_size=4))),
            checked=Counter(draw(st.dictionaries(text, counts, max_size=3))),
        )
        for name in draw(st.lists(text, max_size=3, unique=True))
    }
    filters = {
        name: FilterStats(draw(counts), Counter(draw(st.dictionaries(text, counts, max_size=3))))
        for name in draw(st.lists(text, max_size=3, unique=True))
    }
    report = Report(
        records=draw(counts),
        input_rejected=Counter(draw(st.dictionaries(text, counts, max_size=3))),
        strategies=strategies,
        filters=filters,
        samples=draw(st.lists(st.dictionaries(text, json_values, max_size=4), max_size=4)),
        started=draw(st.floats(allow_nan=False, allow_infinity=False)),
        elapsed=draw(st.floats(min_value=0, max_value=1e9)),
        status=draw(text),
        spent_prompt_tokens=draw(counts),
        spent_completion_tokens=draw(counts),
        note=draw(text),
    )
    keys = st.tuples(st.none() | text, text, text)
    report._sampled = Counter(draw(st.dictionaries(keys, counts, max_size=4)))
    return report


def as_compared(report: Report) -> dict[str, Any]:
    """Every field but the clock, counters as ordered item lists (order shows in the report)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Counter):
            return list(value.items())
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return [(k, plain(v)) for k, v in value.items()]
        return value

    fields = {f.name: plain(getattr(report, f.name)) for f in dataclasses.fields(report)}
    del fields["_t0"]
    return fields


@settings(max_examples=150, deadline=None)
@given(reports())
def test_a_report_round_trips_through_json_exactly(report: Report) -> None:
    state = json.loads(json.dumps(report.to_state(), ensure_ascii=True, allow_nan=False))
    again = Report.from_state(state)
    assert as_compared(again) == as_compared(report)
    assert str(again) == str(report) and again.to_dict() == report.to_dict()


def test_the_saved_report_covers_every_field() -> None:
    report = Report()
    report.count_round("reverse", 0, accepted=True)  # rounds and stages are saved when
    report.stages["first"] = Report()  # there are any, so that older states still load
    saved = set(report.to_state())
    fields = {f.name.lstrip("_") for f in dataclasses.fields(Report)} - {"t0"}
    assert saved == fields


@pytest.mark.parametrize(
    "broken",
    [{}, {"records": "3"}, {**Report().to_state(), "strategies": {"s": {"requests": 1}}}],
)
def test_a_broken_saved_report_is_a_value_error(broken: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not a saved report"):
        Report.from_state(broken)


class Stop(Exception):
    pass


def interrupted(tmp_path: Path, filters: list[Any] | None = None) -> Path:
    """A journal left by a run stopped after 10 records."""
    journal = tmp_path / "journal"

    class Stopping(ScriptedTeacher):
        def complete(self, request):  # type: ignore[no-untyped-def]
            if self.calls >= 10:
                raise Stop
            return super().complete(request)

    study = Study(
        Stopping(REPLIES, fingerprint="t"),
        [Reverse()],
        filters or [ExactDedup()],
        sinks=[tmp_path / "out.jsonl"],
        journal=journal,
        checkpoint_every=0,
    )
    with pytest.raises(Stop):
        study.run(RECORDS)
    return journal


def resume(tmp_path: Path, **kwargs: Any) -> Report:
    study = Study(
        ScriptedTeacher(REPLIES, fingerprint="t"),
        [Reverse()],
        [ExactDedup()],
        sinks=[tmp_path / "out.jsonl"],
        journal=tmp_path / "journal",
    )
    return study.run(RECORDS, **kwargs)


def test_the_checkpoint_is_versioned_json_with_the_filter_state(tmp_path: Path) -> None:
    journal = interrupted(tmp_path)
    saved = json.loads((journal / CHECKPOINT).read_text())
    assert saved["format"] == FORMAT == "mstudy._journal.v2"
    assert 1 <= saved["items_done"] <= 10 and saved["report"]["records"] >= saved["items_done"]
    assert set(saved["filter_states"]) == {"dedup"}
    assert sorted(p.name for p in journal.iterdir() if "calls" not in p.name) == [
        "accepted.jsonl",
        CHECKPOINT,
        "rejects.jsonl",
    ]  # no temporary file left beside it
    report = resume(tmp_path)
    assert report.records == 30 and report.accepted == 30 and report.requests == 30


class Planted:
    """Unpickling this would leave a file behind: the proof that a checkpoint was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_an_old_pickle_checkpoint_is_refused_unread(tmp_path: Path) -> None:
    journal = interrupted(tmp_path)
    (journal / CHECKPOINT).unlink()
    proof = tmp_path / "unpickled"
    (journal / "checkpoint.pkl").write_bytes(pickle.dumps(Planted(proof)))
    with pytest.raises(ConfigError, match=r"older mstudy version.*--restart"):
        resume(tmp_path)
    assert not proof.exists()
    assert resume(tmp_path, restart=True).accepted == 30
    assert not proof.exists() and not journal.exists()


@pytest.mark.parametrize(
    "content",
    [b"\x80\x04not json", b'{"format": "mstudy._journal.v9"}', b"[1, 2]", b'{"format": 1}'],
)
def test_an_unknown_checkpoint_is_refused_with_the_way_out(tmp_path: Path, content: bytes) -> None:
    journal = interrupted(tmp_path)
    (journal / CHECKPOINT).write_bytes(content)
    with pytest.raises(ConfigError, match=r"--restart") as info:
        resume(tmp_path)
    assert str(journal) in str(info.value)
    assert resume(tmp_path, restart=True).accepted == 30


def test_a_checkpoint_without_its_spool_is_refused_with_the_way_out(tmp_path: Path) -> None:
    journal = interrupted(tmp_path)
    (journal / "accepted.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"accepted\.jsonl is missing.*--restart"):
        resume(tmp_path)


class BytesState(ExactDedup):
    """A stateful filter breaking the contract: its state is bytes, not a JSON value."""

    name = "bytes_dedup"

    def get_state(self) -> Any:
        return b"\x00\x01"


def test_a_filter_state_that_is_not_json_is_an_error_naming_the_filter(tmp_path: Path) -> None:
    study = Study(
        ScriptedTeacher(REPLIES, fingerprint="t"),
        [Reverse()],
        [BytesState()],
        sinks=[tmp_path / "out.jsonl"],
        journal=tmp_path / "journal",
    )
    with pytest.raises(ConfigError, match=r"filter 'bytes_dedup': get_state\(\) .* not JSON"):
        study.run(RECORDS)


def test_a_tombstone_left_by_a_killed_removal_is_cleared(tmp_path: Path) -> None:
    journal = interrupted(tmp_path)
    tomb = tombstone_path(journal)
    journal.rename(tomb)  # killed after ending the journal, before deleting it
    (tomb / "accepted.jsonl").unlink()  # ... part way through
    report = resume(tmp_path)
    assert report.status == "done" and report.accepted == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_state_of_an_open_journal_survives_close_and_reopen(tmp_path: Path) -> None:
    report = Report(records=2, status="running")
    with Journal(tmp_path / "j", {"a": [1, "x"]}) as journal:
        journal.open_spools()
        journal.append("accepted", [b'{"id": "1"}\n'])
        journal.checkpoint(
            items_done=2, last_id="b", report=report, filter_states={"f": {"k": [1, 2.5]}}
        )
    with Journal(tmp_path / "j", {"a": [1, "x"]}) as again:
        assert again.state is not None
        assert again.state.items_done == 2 and again.state.last_id == "b"
        assert again.state.filter_states == {"f": {"k": [1, 2.5]}}
        assert again.state.report is not None and again.state.report.records == 2
        assert list(again.rows("accepted")) == [{"id": "1"}]
