"""Outcome memo: a cached re-run reads parsed outcomes back, and only when that is safe."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import given
from hypothesis import strategies as st

from mstudy import (
    ChainOfThought,
    Completion,
    Example,
    Explain,
    LengthFilter,
    Paraphrase,
    Record,
    Rejection,
    Request,
    Reverse,
    ScriptedTeacher,
    Study,
)
from mstudy import _memo as memo
from mstudy.cache import CallCache
from mstudy.records import Provenance

REPLIES = {
    "reverse": "{{ object }} is where {{ subject }} belongs.",
    "paraphrase": "Put another way: {{ text }}",
    "explain": "This says that {{ text }} It is worth remembering.",
    "cot": "1. Recall the fact.\nFinal answer: {{ answer }}",
}
RECORDS = [
    {
        "id": f"r{i}",
        "text": f"Item {i} is kept in Room {i}." if i % 5 else "Short.",
        "subject": f"Item {i}",
        "object": f"Room {i}",
        "question": f"Where is item {i} kept?",
        "answer": f"Room {i}",
    }
    for i in range(20)
]


class CountingReverse(Reverse):
    """Reverse that counts how often it parses a reply."""

    name = "reverse"
    parsed: ClassVar[int] = 0

    def parse(self, record: Any, request: Request, completion: Completion) -> Any:
        CountingReverse.parsed += 1
        return super().parse(record, request, completion)


class Unmemoizable(Paraphrase):
    memoizable = False


def run(tmp_path: Path, name: str, **kwargs: Any) -> tuple[Any, ScriptedTeacher, bytes]:
    teacher = kwargs.pop("teacher", None) or ScriptedTeacher(REPLIES)
    strategies = kwargs.pop("strategies", None) or [
        Explain(),
        CountingReverse(),
        Paraphrase(),
        ChainOfThought(),
    ]
    out = tmp_path / f"{name}.jsonl"
    study = Study(
        teacher,
        strategies,
        kwargs.pop("filters", ["dedup"]),
        sinks=[out],
        rejects=tmp_path / f"{name}.rejects.jsonl",
        cache=tmp_path / "calls.sqlite",
        **kwargs,
    )
    report = study.run(RECORDS)
    return report, teacher, out.read_bytes() + (tmp_path / f"{name}.rejects.jsonl").read_bytes()


def test_a_cached_rerun_reads_outcomes_back_and_writes_the_same_files(tmp_path: Path) -> None:
    first, teacher1, out1 = run(tmp_path, "first")
    parsed_first = CountingReverse.parsed
    second, teacher2, out2 = run(tmp_path, "second")
    assert teacher1.calls > 0 and teacher2.calls == 0
    assert CountingReverse.parsed == parsed_first  # not parsed again
    assert out2 == out1
    assert second.accepted == first.accepted and second.rejected == first.rejected
    assert second.rejections() == first.rejections()
    for name, stats in first.strategies.items():
        again = second.strategies[name]
        assert again.completions == stats.completions and again.cached == stats.completions
        assert again.completion_tokens == stats.completion_tokens
    assert second.spent_completion_tokens == 0
    with CallCache(tmp_path / "calls.sqlite") as cache:
        assert cache.stats().outcomes == len(RECORDS)


def test_changing_a_filter_reuses_outcomes_and_filters_again(tmp_path: Path) -> None:
    first, _, _ = run(tmp_path, "first")
    parsed = CountingReverse.parsed
    strict, teacher, _ = run(tmp_path, "strict", filters=["dedup", LengthFilter(min_words=8)])
    assert teacher.calls == 0 and CountingReverse.parsed == parsed
    assert strict.accepted < first.accepted
    assert strict.filters["length"].checked > 0


def test_a_changed_strategy_parses_again(tmp_path: Path) -> None:
    run(tmp_path, "first")
    parsed = CountingReverse.parsed
    changed = [Explain(min_words=3), CountingReverse(), Paraphrase(), ChainOfThought()]
    _, teacher, _ = run(tmp_path, "changed", strategies=changed)
    assert teacher.calls == 0  # the calls themselves are still cached
    assert CountingReverse.parsed == parsed + len(RECORDS)


def test_a_strategy_may_opt_out(tmp_path: Path) -> None:
    strategies = [CountingReverse(), Unmemoizable()]
    run(tmp_path, "first", strategies=strategies)
    parsed = CountingReverse.parsed
    _, teacher, _ = run(tmp_path, "second", strategies=strategies)
    assert teacher.calls == 0 and CountingReverse.parsed == parsed + len(RECORDS)
    with CallCache(tmp_path / "calls.sqlite") as cache:
        assert cache.stats().outcomes == 0


def test_a_record_with_a_failed_call_is_asked_again(tmp_path: Path) -> None:
    def flaky(request: Request) -> str:
        if request.source_id == "r3" and request.strategy == "reverse":
            raise RuntimeError("server said no")
        return "Room 1 is where Item 1 belongs."

    first, _, _ = run(tmp_path, "first", teacher=ScriptedTeacher(flaky))
    assert first.strategies["reverse"].rejected[("teacher", "teacher error")] == 1
    again, teacher2, _ = run(tmp_path, "second", teacher=ScriptedTeacher(flaky))
    assert teacher2.calls == 1  # only the failed call, everything else from the cache
    assert again.strategies["reverse"].rejected[("teacher", "teacher error")] == 1


def test_same_id_with_changed_fields_is_not_read_back(tmp_path: Path) -> None:
    prefix = memo.memo_prefix("teacher", [Reverse()])
    assert prefix is not None

    a = Record.from_mapping({"id": "1", "text": "A is B."})
    b = Record.from_mapping({"id": "1", "text": "A is C."})
    assert memo.outcome_key(prefix, a) != memo.outcome_key(prefix, b)
    assert memo.outcome_key(memo.memo_prefix("other", [Reverse()]) or "", a) != (
        memo.outcome_key(prefix, a)
    )


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.text(min_size=1).filter(lambda k: k not in {"id"}), plain, max_size=4))
def test_outcomes_round_trip_exactly(fields: dict[str, Any]) -> None:
    provenance = Provenance("s", "explain", "1", "t", "tf", {"seed": None}, 0, "stop", ())
    example = Example("e1", fields, provenance)
    rejection = Rejection("s", "parse", "too short", "2 words", "explain", None, {"reply": "x"})
    results: memo.Results = {(0, 0): [example], (1, -1): [rejection]}
    payload = memo.encode(
        results, {"explain": 1}, [("explain", Completion("k", "x", "stop", 3, 4))]
    )
    assert payload is not None
    decoded = memo.decode(payload)
    assert decoded is not None
    back, requests, calls = decoded
    assert back == results and requests == {"explain": 1}
    assert calls == {"explain": (1, 3, 4)}


SHARED_STRATEGIES = [Explain(), Reverse()]


@given(
    st.integers(0, 1),
    st.sampled_from(["r1", "other"]),
    st.sampled_from(["explain", "reverse"]),
    st.sampled_from(["1", "2"]),
    st.sampled_from(["tf", "other-teacher"]),
    st.sampled_from(
        [Explain().params, Reverse().params, dataclasses.replace(Reverse().params, seed=3)]
    ),
    st.sampled_from([(), ("r1", "r2")]),
    st.integers(0, 3),
)
def test_shared_values_are_left_out_only_when_they_match(
    s_index: int,
    source_id: str,
    strategy: str,
    version: str,
    teacher: str,
    params: Any,
    source_ids: tuple[str, ...],
    sample: int,
) -> None:
    shared = memo.Shared("tf", SHARED_STRATEGIES)
    provenance = Provenance(
        source_id, strategy, version, "th", teacher, params.to_dict(), sample, "stop", source_ids
    )
    results: memo.Results = {(s_index, 0): [Example("e1", {"text": "x"}, provenance)]}
    payload = memo.encode(results, {strategy: 1}, [], "r1", shared)
    assert payload is not None
    decoded = memo.decode(payload, "r1", shared)
    assert decoded is not None and decoded[0] == results
    [row] = json.loads(payload)["results"]
    [item] = row["items"]
    own = SHARED_STRATEGIES[s_index]
    expected = (source_id, strategy, version, teacher, params, source_ids) == (
        "r1", own.name, own.version, "tf", own.params, ()
    )  # fmt: skip
    assert ("provenance" not in item["example"]) == expected
    if expected:  # the shared values really are left out of the payload
        assert '"tf"' not in payload and '"max_new_tokens"' not in payload


@given(st.sampled_from([(1, 2), {1: "a"}, float("nan"), {"a": {2}}, b"x"]))
def test_values_json_would_change_are_not_memoised(value: Any) -> None:
    provenance = Provenance("s", "explain", "1", "t", "tf", {}, 0)
    results: memo.Results = {(0, 0): [Example("e", {"v": value}, provenance)]}
    assert memo.encode(results, {}, []) is None


def test_a_payload_of_another_format_is_not_read() -> None:
    """Outcomes stored by an older version are parsed afresh, not misread."""
    assert memo.decode(json.dumps([[], {}, []])) is None
    assert memo.decode(json.dumps({"format": "mstudy.outcome.v2", "results": []})) is None


def test_outcome_payload_is_json(tmp_path: Path) -> None:
    run(tmp_path, "first")
    with CallCache(tmp_path / "calls.sqlite") as cache:
        prefix = memo.memo_prefix(
            ScriptedTeacher(REPLIES).fingerprint,
            [Explain(), CountingReverse(), Paraphrase(), ChainOfThought()],
        )
        assert prefix is not None

        payload = cache.get_outcome(memo.outcome_key(prefix, Record.from_mapping(RECORDS[1])))
    assert payload is not None
    data = json.loads(payload)
    assert data["format"] == memo.FORMAT
    assert set(data) == {"format", "results", "requests", "calls"}
    assert {"strategy", "request", "items"} == set(data["results"][0])


def test_a_strategy_defined_without_a_source_file_is_hashed_by_its_source() -> None:
    namespace: dict[str, Any] = {"__name__": "notebook_cell"}
    code = "from mstudy import Reverse\nclass Mine(Reverse):\n    pass\n"
    exec(compile(code, "<cell>", "exec"), namespace)  # no file: getsource cannot find it
    assert memo.memo_prefix("t", [namespace["Mine"]()]) is None
    assert memo.memo_prefix("t", [CountingReverse()]) is not None


def test_a_cached_rerun_streams_instead_of_reading_ahead(tmp_path: Path) -> None:
    from mstudy._engine.run import LOOKAHEAD as MEMO_LOOKAHEAD
    from mstudy._engine.run import READY_CHUNK

    rows = [{"id": str(i), "text": f"Thing {i} is in Place {i}."} for i in range(1000)]
    read = 0

    def source() -> Any:
        nonlocal read
        for row in rows:
            read += 1
            yield row

    def study() -> Study:
        teacher = ScriptedTeacher("Put another way: {{ text }}")
        return Study(teacher, [Paraphrase()], cache=tmp_path / "calls.sqlite")

    first = [e.text for e in study().iter(rows)]
    run = study().stream(source())
    assert isinstance(next(run), Example)
    assert read <= READY_CHUNK + MEMO_LOOKAHEAD  # not the whole backlog (4096) at once
    rest = [e.text for e in run if isinstance(e, Example)]
    assert len(rest) == len(first) - 1 and run.report.cached == len(rows)
