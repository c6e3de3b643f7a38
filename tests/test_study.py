"""The Study loop end to end with the scripted teacher: the loop's logic, not a backend."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import mstudy
from mstudy import (
    ChainOfThought,
    Completion,
    ExactDedup,
    Example,
    Explain,
    LengthFilter,
    Paraphrase,
    Rejection,
    Request,
    Reverse,
    ScriptedTeacher,
    Study,
    TeacherError,
    TemplateStrategy,
)

REPLIES = {
    "reverse": "{{ object }} is where {{ subject }} belongs.",
    "paraphrase": "Put another way: {{ text }}",
    "explain": "This says that {{ text }} It is worth remembering.",
    "cot": "1. Recall the fact.\nFinal answer: {{ answer }}",
}

RECORDS = [
    {
        "id": f"r{i}",
        "text": f"Item {i} is kept in Room {i}.",
        "subject": f"Item {i}",
        "object": f"Room {i}",
        "question": f"Where is item {i} kept?",
        "answer": f"Room {i}",
    }
    for i in range(10)
]


def four() -> list[Any]:
    return [Explain(), Reverse(), Paraphrase(), ChainOfThought()]


def test_quickstart_four_strategies_jsonl_and_dataset(tmp_path: Path) -> None:
    out = tmp_path / "enriched.jsonl"
    study = Study(ScriptedTeacher(REPLIES), four(), sinks=[out])
    report = study.run(RECORDS)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert report.accepted == len(rows) == 40 and report.rejected == 0
    assert {r["strategy"] for r in rows} == {"explain", "reverse", "paraphrase", "cot"}
    for row in rows:
        prov = row["provenance"]
        assert prov["source_id"] == row["source_id"]
        assert prov["teacher"] == study.teacher.fingerprint
        assert set(prov) >= {"strategy_version", "template_hash", "params", "sample"}
    rev = next(r for r in rows if r["strategy"] == "reverse" and r["source_id"] == "r3")
    assert rev["text"] == "Room 3 is where Item 3 belongs."
    dataset = Study(ScriptedTeacher(REPLIES), four()).to_dataset(RECORDS)
    assert dataset.num_rows == 40
    assert set(dataset.column_names) >= {"id", "source_id", "strategy", "text", "provenance"}


def test_bad_records_become_rejections_with_record_and_field(tmp_path: Path) -> None:
    records = [
        {"id": "ok", "text": "A is in B.", "subject": "A", "object": "B"},
        {"id": "nofield", "txt": "A is in B."},
        {"id": "notstr", "text": 12},
        {"id": "empty", "text": ""},
        {"id": "huge", "text": "x" * 1_000_000},
        "not a mapping",
    ]
    rejects = tmp_path / "rejects.jsonl"
    study = Study(ScriptedTeacher(REPLIES), [Reverse()], rejects=rejects)
    report = study.run(records)
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    by_id = {r["source_id"]: r for r in rows}
    assert report.accepted == 1 and report.rejected == 5 == len(rows)
    assert (
        by_id["nofield"]["field"] == "text" and "missing field 'text'" in by_id["nofield"]["detail"]
    )
    assert "must be a string, got int" in by_id["notstr"]["detail"]
    assert "is empty" in by_id["empty"]["detail"]
    assert "more than the limit" in by_id["huge"]["detail"]
    assert any(r["stage"] == "input" for r in rows)
    assert report.records + sum(report.input_rejected.values()) == len(records)


def test_every_rejection_is_counted_and_sampled() -> None:
    teacher = ScriptedTeacher({"reverse": "{{ text }}"})  # a copy: always rejected
    report = Study(teacher, [Reverse(prefill="", n=2)]).run(RECORDS)
    assert report.accepted == 0 and report.rejected == 20
    assert report.strategies["reverse"].rejected[("parse", "copy of the source")] == 20
    assert 0 < len(report.samples) <= 3
    assert "copy of the source" in str(report) and "copy of the source" in report._repr_html_()
    assert report.to_dict()["strategies"]["reverse"]["rejected"] == 20


def test_filters_see_examples_and_report_funnel() -> None:
    teacher = ScriptedTeacher({"paraphrase": "Same words for everyone here."})
    study = Study(teacher, [Paraphrase(n=2, max_ratio=5)], [LengthFilter(min_chars=3), "dedup"])
    report = study.run(RECORDS)
    assert report.accepted == 1
    assert report.filters["dedup"].rejected["duplicate"] == 19
    assert report.filters["length"].checked == 20 and report.filters["dedup"].checked == 20


class OutOfOrder:
    """Wraps a teacher; answers windows of requests in reverse order (like a remote backend)."""

    name = "ooo"

    def __init__(self, inner: ScriptedTeacher, window: int = 7) -> None:
        self.inner, self.window, self.pulled = inner, window, 0

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        it = iter(requests)
        while batch := list(itertools.islice(it, self.window)):
            self.pulled += len(batch)
            yield from reversed([self.inner.complete(r) for r in batch])


def test_out_of_order_completions_are_matched_by_key() -> None:
    in_order = {
        (e.source_id, e.strategy, e.text)
        for e in Study(ScriptedTeacher(REPLIES), four()).iter(RECORDS)
    }
    shuffled = {
        (e.source_id, e.strategy, e.text)
        for e in Study(OutOfOrder(ScriptedTeacher(REPLIES)), four()).iter(RECORDS)
    }
    assert in_order == shuffled and len(in_order) == 40


def test_identical_prompts_in_flight_are_sent_once_and_answer_every_record() -> None:
    teacher = OutOfOrder(ScriptedTeacher(REPLIES))
    twins = [{**RECORDS[0], "id": "a"}, {**RECORDS[0], "id": "b"}]
    examples = list(Study(teacher, [Reverse()]).iter(twins))
    assert teacher.inner.calls == 1
    assert sorted(e.source_id for e in examples) == ["a", "b"]
    assert examples[0].id != examples[1].id


class Forgetful(ScriptedTeacher):
    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        for i, r in enumerate(requests):
            if i % 2 == 0:
                yield self.complete(r)


def test_requests_the_teacher_never_answered_are_rejected_not_lost() -> None:
    study = Study(Forgetful(REPLIES), [Reverse()])
    report = study.run(RECORDS)
    assert report.accepted == 5
    assert report.strategies["reverse"].rejected[("teacher", "no completion")] == 5


def test_teacher_errors_become_rejections() -> None:
    def flaky(request: Request) -> str:
        if request.source_id.endswith(("1", "3")):
            raise ConnectionError("server went away")
        return f"{request.variables['object']} holds {request.variables['subject']}."

    report = Study(ScriptedTeacher(flaky), [Reverse()]).run(RECORDS)
    assert report.accepted == 8
    assert report.strategies["reverse"].rejected[("teacher", "teacher error")] == 2


def test_a_failed_run_leaves_no_complete_looking_output(tmp_path: Path) -> None:
    class Broken(ScriptedTeacher):
        def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
            for i, r in enumerate(requests):
                if i == 5:
                    raise TeacherError("backend down for good")
                yield self.complete(r)

    out = tmp_path / "out.jsonl"
    with pytest.raises(TeacherError):
        Study(Broken(REPLIES), [Reverse()], sinks=[out]).run(RECORDS)
    assert not out.exists()


def test_streaming_pulls_records_only_as_the_teacher_asks() -> None:
    consumed = 0

    def endless() -> Iterator[dict[str, Any]]:
        nonlocal consumed
        for i in itertools.count():
            consumed += 1
            yield {
                "id": str(i),
                "text": f"Thing {i} rests in Place {i}.",
                "subject": f"Thing {i}",
                "object": f"Place {i}",
            }

    teacher = OutOfOrder(ScriptedTeacher(REPLIES), window=4)
    first = list(itertools.islice(Study(teacher, [Reverse()]).iter(endless()), 3))
    assert len(first) == 3 and consumed <= 5


def test_memory_does_not_grow_with_the_number_of_records() -> None:
    def rows(n: int) -> Iterator[dict[str, Any]]:
        for i in range(n):
            yield {
                "id": str(i),
                "text": f"Thing {i} rests in Place {i}.",
                "subject": f"Thing {i}",
                "object": f"Place {i}",
            }

    def peak(n: int) -> int:
        study = Study(OutOfOrder(ScriptedTeacher(REPLIES)), [Reverse(), Paraphrase()])
        tracemalloc.start()
        count = sum(1 for _ in study.iter(rows(n)))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == 2 * n
        return top

    # An untimed first run fills the interpreter's free lists (of tuples, say): bounded caches
    # that tracemalloc would count as memory the second run holds.
    peak(3000)
    small, large = peak(300), peak(3000)
    assert large < small * 1.5


def test_each_run_starts_afresh_with_stateful_filters(tmp_path: Path) -> None:
    study = Study(ScriptedTeacher(REPLIES), [Reverse()], ["dedup", "near_dedup"])
    first = study.run(RECORDS)
    second = study.run(RECORDS)
    assert first.accepted == second.accepted == len(RECORDS)
    assert [e.text for e in study.iter(RECORDS)] == [e.text for e in study.iter(RECORDS)]


def test_names_resolve_through_plugins_and_objects_pass_through() -> None:
    teacher = ScriptedTeacher(REPLIES)
    study = Study(teacher, ["reverse", Paraphrase()], ["dedup"])
    assert study.teacher is teacher
    assert [s.name for s in study.strategies] == ["reverse", "paraphrase"]
    assert isinstance(study.filters[0], ExactDedup)


def test_duplicate_strategy_names_are_refused() -> None:
    with pytest.raises(ValueError, match="share a name"):
        Study(ScriptedTeacher(), [Reverse(), Reverse(n=2)])


def test_parser_bugs_in_plugins_are_reported_not_fatal() -> None:
    class Buggy(Reverse):
        def check(self, variables: Any, text: str) -> Any:
            raise KeyError("oops")

    report = Study(ScriptedTeacher(REPLIES), [Buggy()]).run(RECORDS[:3])
    assert report.strategies["reverse"].rejected[("parse", "parser error")] == 3
    assert report.status == "done"


def test_iter_yields_examples_and_stream_yields_both() -> None:
    teacher = ScriptedTeacher(
        {"reverse": "{{ text }}", "paraphrase": "Put another way: {{ text }}"}
    )
    study = Study(teacher, [Reverse(prefill=""), Paraphrase()])
    assert all(isinstance(e, Example) for e in study.iter(RECORDS))
    items = list(study.stream(RECORDS))
    assert sum(isinstance(i, Rejection) for i in items) == 10
    assert sum(isinstance(i, Example) for i in items) == 10
    assert study.last_report is not None and study.last_report.status == "done"


def test_limit() -> None:
    report = Study(ScriptedTeacher(REPLIES), [Reverse()]).run(RECORDS, limit=4)
    assert report.records == 4 and report.accepted == 4


def test_public_names() -> None:
    for name in mstudy.__all__:
        assert getattr(mstudy, name) is not None


def test_output_order_is_the_source_order_whatever_the_teacher_order() -> None:
    def rows(study: Study) -> list[tuple[str, str, str]]:
        return [(e.source_id, e.strategy, e.text) for e in study.iter(RECORDS)]

    expected = rows(Study(ScriptedTeacher(REPLIES), four()))
    assert rows(Study(OutOfOrder(ScriptedTeacher(REPLIES), window=7), four())) == expected
    assert [r[0] for r in expected[:4]] == ["r0"] * 4
    tight = Study(OutOfOrder(ScriptedTeacher(REPLIES), window=7), four(), max_backlog=2)
    assert rows(tight) == expected


def test_cached_rerun_makes_no_teacher_calls(tmp_path: Path) -> None:
    cache = tmp_path / "calls.sqlite"
    first_teacher = ScriptedTeacher(REPLIES)
    first = Study(first_teacher, four(), cache=cache).run(RECORDS)
    assert first_teacher.calls == 40 and first.cached == 0
    again = ScriptedTeacher(REPLIES)
    second = Study(again, four(), cache=cache).run(RECORDS)
    assert again.calls == 0 and second.cached == 40 and second.accepted == first.accepted
    other_strategies = ScriptedTeacher(REPLIES)
    Study(other_strategies, [Reverse(), Paraphrase(n=2)], cache=cache).run(RECORDS)
    assert other_strategies.calls == 10  # only the new second paraphrase sample is asked for


def test_failed_calls_are_not_cached(tmp_path: Path) -> None:
    def failing(request: Request) -> str:
        raise TimeoutError("slow server")

    cache = tmp_path / "calls.sqlite"
    Study(ScriptedTeacher(failing, fingerprint="same"), [Reverse()], cache=cache).run(RECORDS)
    retry = ScriptedTeacher(REPLIES, fingerprint="same")
    report = Study(retry, [Reverse()], cache=cache).run(RECORDS)
    assert retry.calls == 10 and report.accepted == 10


def test_dry_run_counts_requests_and_tokens_without_calling(tmp_path: Path) -> None:
    from mstudy import Budget

    teacher = ScriptedTeacher(REPLIES)
    study = Study(teacher, four(), budget=Budget(price_in=1.0, price_out=2.0))
    estimate = study.estimate([*RECORDS, "bad"])
    assert teacher.calls == 0
    assert (estimate.records, estimate.rejected_inputs, estimate.requests) == (10, 1, 40)
    assert estimate.per_strategy == {"explain": 10, "reverse": 10, "paraphrase": 10, "cot": 10}
    assert estimate.max_completion_tokens == 10 * (160 + 64 + 128 + 256)
    assert estimate.prompt_tokens > 0
    expected = (estimate.prompt_tokens * 1.0 + estimate.max_completion_tokens * 2.0) / 1e6
    assert estimate.max_cost == pytest.approx(expected)
    assert "40 teacher requests" in str(estimate)
    cache = tmp_path / "c.sqlite"
    Study(ScriptedTeacher(REPLIES), [Reverse()], cache=cache).run(RECORDS[:4])
    assert Study(teacher, four(), cache=cache).estimate(RECORDS).cached == 4


def test_a_spent_budget_stops_cleanly_and_a_journaled_run_goes_on(tmp_path: Path) -> None:
    from mstudy import Budget

    out, journal = tmp_path / "out.jsonl", tmp_path / "journal"
    first = ScriptedTeacher(REPLIES)
    report = Study(
        first, [Reverse()], sinks=[out], journal=journal, budget=Budget(max_tokens=300)
    ).run(RECORDS)
    assert report.status == "stopped" and "token budget reached" in report.note
    done = len(out.read_text().splitlines())
    assert 0 < done < 10 and journal.exists()
    second = ScriptedTeacher(REPLIES)
    report = Study(second, [Reverse()], sinks=[out], journal=journal).run(RECORDS)
    assert report.status == "done" and report.accepted == 10
    assert len(out.read_text().splitlines()) == 10 and not journal.exists()
    assert first.calls + second.calls <= 10 + 4  # only a few in-flight calls may repeat


def test_funnel_and_batched_filters() -> None:
    class Batched(LengthFilter):
        name = "batched"
        batches: ClassVar[list[int]] = []

        def check_many(self, examples: list[Example]) -> list[Example | Rejection]:
            self.batches.append(len(examples))
            return [self.check(e) for e in examples]

    teacher = ScriptedTeacher({"paraphrase": "Same words for everyone here."})
    batched = Batched(min_chars=1)
    study = Study(teacher, [Paraphrase(n=3, max_ratio=5)], [batched, "dedup"])
    report = study.run(RECORDS)
    assert batched.batches == [3] * 10  # one call per record, all its samples
    stats = report.strategies["paraphrase"]
    assert stats.checked == {"batched": 30, "dedup": 30}
    assert stats.funnel()[1] == {"filter": "dedup", "checked": 30, "rejected_by": {"duplicate": 29}}
    line = stats.funnel_line("paraphrase")
    assert (
        line == "paraphrase: 30 parsed -> batched 30 -> dedup 30 (-29: duplicate 29) -> 1 accepted"
    )
    assert line in str(report)
    assert len(report.rejections(strategy="paraphrase", reason="duplicate")) == 3
    assert report.rejections(stage="parse") == []
    assert report.to_dict()["strategies"]["paraphrase"]["funnel"][1]["checked"] == 30


def test_filter_verdicts_keep_their_places_among_rejections() -> None:
    """A record's rows come out in strategy and sample order; filters see only the examples
    still alive, and each verdict takes its example's place."""
    teacher = ScriptedTeacher(
        {
            "reverse": "{{ text }}",  # a copy of the source: rejected by the parser
            "paraphrase": "{% if sample %}In other words, as the note says: {{ text }}"
            "{% else %}So: {{ text }}{% endif %}",
        }
    )
    dedup = ExactDedup()
    study = Study(
        teacher,
        [Paraphrase(n=2, max_ratio=5), Reverse(prefill="")],
        [LengthFilter(min_chars=40), dedup],
    )
    rows = list(study.stream(RECORDS[:3]))
    stages = [
        (
            row.source_id,
            row.stage if isinstance(row, Rejection) else f"kept {row.provenance.sample}",
        )
        for row in rows
    ]
    assert stages == [
        (record["id"], stage)
        for record in RECORDS[:3]
        for stage in ("filter:length", "kept 1", "parse")
    ]
    assert study.last_report is not None
    assert study.last_report.filters["length"].checked == 6
    assert study.last_report.filters["dedup"].checked == 3


class Hint(TemplateStrategy):
    """A template that can fail on one record's value (a division by its answer)."""

    name = "hint"
    roles = ("text", "answer")
    template = "Fact: {{ text }}\nHint: one part in {{ 100 // (answer | int) }}"


@pytest.mark.parametrize("journaled", [False, True])
def test_a_template_error_on_one_record_rejects_that_record_only(
    tmp_path: Path, journaled: bool
) -> None:
    """Any exception while rendering one record's requests (here ZeroDivisionError inside the
    template) is a rejection at stage render; the rows before and after reach the sinks, and a
    rerun does the same."""
    rows = [{"id": f"r{i}", "text": f"Fact number {i}.", "answer": str(i % 50)} for i in range(120)]
    out = tmp_path / "out.jsonl"
    for _ in range(2):  # the rerun (on the cache the journal left, or afresh) decides alike
        study = Study(
            ScriptedTeacher("A reply about {{ text }}"),
            [Hint()],
            sinks=[out],
            rejects=tmp_path / "rejects.jsonl",
            journal=tmp_path / "journal" if journaled else None,
            cache=tmp_path / "calls.sqlite",
        )
        report = study.run(rows)
        assert report.status == "done"
        rejects = [
            json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()
        ]
        assert [(r["source_id"], r["stage"], r["reason"]) for r in rejects] == [
            ("r0", "render", "render error"),
            ("r50", "render", "render error"),
            ("r100", "render", "render error"),
        ]
        assert rejects[0]["detail"].startswith("ZeroDivisionError")
        assert len(out.read_text().splitlines()) == 117 == report.accepted


@pytest.mark.parametrize("text", ["\ud800", "tail \udfff", "é\udc80ü"])
def test_a_reply_with_a_lone_surrogate_rejects_that_reply_only(tmp_path: Path, text: str) -> None:
    """No UTF-8 file or cache can hold a lone surrogate: the reply is rejected at stage
    teacher, it is not cached, and the rest of a journaled, cached run is written."""

    def reply(request: Any) -> str:
        extra = text if request.source_id == "a" else ""
        return f"Said again: {request.variables['text']}{extra}"

    out = tmp_path / "out"
    study = Study(
        ScriptedTeacher(reply, fingerprint="surrogates"),
        [Paraphrase()],
        sinks=[out / "rows.jsonl", out / "rows.parquet"],
        rejects=out / "rejects.jsonl",
        journal=tmp_path / "journal",
    )
    report = study.run(
        [
            {"id": "a", "text": "Ada keeps a lamp."},
            {"id": "b", "text": "Bo rows a boat on the lake."},
        ]
    )
    assert (report.accepted, report.rejected) == (1, 1)
    [rejected] = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert (rejected["source_id"], rejected["stage"]) == ("a", "teacher")
    assert "surrogate" in rejected["detail"]
    assert [json.loads(x)["source_id"] for x in (out / "rows.jsonl").read_text().splitlines()] == [
        "b"
    ]


def test_a_failed_cache_commit_leaves_no_transaction_open(tmp_path: Path) -> None:
    from mstudy.cache import CallCache
    from mstudy.records import Completion

    cache = CallCache(tmp_path / "calls.sqlite")
    cache.put("t", Completion("k1", "bad \ud800 text"))
    with pytest.raises(UnicodeEncodeError):
        cache.commit()
    cache._buffer.clear()  # the bad put is dropped; the cache must work on
    cache.put("t", Completion("k2", "good text"))
    cache.commit()
    assert cache.get("t", "k2") is not None


def test_a_sink_that_cannot_commit_leaves_no_other_sink_committed(tmp_path: Path) -> None:
    """Sinks are prepared together before any is closed: when one fails to prepare (its
    conversion, a full disk), the JSONL file beside it is not published either."""
    from mstudy.errors import SinkError
    from mstudy.sinks.base import BaseSink

    class Failing(BaseSink):
        def _write(self, rows: list[dict[str, Any]]) -> None:
            pass

        def _prepare(self) -> None:
            raise SinkError("cannot convert the rows")

        def _commit(self) -> None:
            raise AssertionError("never reached")

        def _discard(self) -> None:
            pass

    out = tmp_path / "rows.jsonl"
    for sinks in ([out, Failing()], [Failing(), out]):
        study = Study(ScriptedTeacher("So: {{ text }}"), [Paraphrase()], sinks=sinks)
        with pytest.raises(SinkError, match="cannot convert"):
            study.run([{"text": "Ada keeps a lamp in the tower."}])
        assert not out.exists()
        assert list(tmp_path.iterdir()) == []  # no partial file left either


@pytest.mark.parametrize("every", [float("nan"), float("inf"), -1.0])
def test_checkpoint_every_must_be_a_finite_number_of_seconds(every: float) -> None:
    """NaN compared false with every interval, so checkpoints silently never happened."""
    with pytest.raises(mstudy.ConfigError) as caught:
        Study(ScriptedTeacher("So: {{ text }}"), [Paraphrase()], checkpoint_every=every)
    assert caught.value.parameter == "checkpoint_every"
