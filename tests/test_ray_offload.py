"""Parsing where the teacher runs (mstudy.offload), without Ray: a teacher that parses its
replies with pickled copies of the study's strategies and filters gives the rows and report
of a plain one-process run, also where a filter fails, a request repeats, or a strategy
or filter must stay in the study's process."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl
from harness.ray_teachers import OddWords, PickyParaphrase, ShortAfterDedup, sleepy
from hypothesis import given, settings
from hypothesis import strategies as st

import mstudy
from mstudy._engine.filtering import FilterChain
from mstudy._engine.placement import Placement
from mstudy.filters.base import RowFilter
from mstudy.interfaces import Filter, ParsesReplies, Strategy
from mstudy.offload import Parsed, ParseJob, run_job, trail
from mstudy.records import Completion, Example, Provenance, Rejection, Request
from mstudy.report import FilterStats, Report


class ParsingTeacher:
    """The scripted teacher, parsing as a worker would: with unpickled copies of what the
    study binds, a batch of four requests at a time."""

    def __init__(self) -> None:
        self.teacher = sleepy(0.0)
        self.name, self.fingerprint = self.teacher.name, self.teacher.fingerprint
        self.bound: list[tuple[list[Strategy], list[Filter]]] = []
        self.parsed = 0

    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        return self.teacher.generate(requests)

    def bind_parsing(self, strategies: Sequence[Strategy], filters: Sequence[Filter]) -> int:
        self.bound.append(pickle.loads(pickle.dumps((list(strategies), list(filters)))))
        return len(self.bound) - 1

    def generate_parsed(self, jobs: Iterable[ParseJob], binding: Any) -> Iterator[Parsed]:
        strategies, filters = self.bound[binding]
        source = iter(jobs)
        while batch := [job for _, job in zip(range(4), source, strict=False)]:
            by_key = {job.request.key: job for job in batch}
            for completion in self.teacher.generate([job.request for job in batch]):
                self.parsed += 1
                yield run_job(by_key[completion.key], completion, strategies, filters)


class Fussy(RowFilter):
    """A per-record filter with a bug: it raises on the second sample of some records (in
    one process, every example of such a record is rejected: the filter failed on it)."""

    name = "fussy"

    def reason(self, example: Example) -> str | None:
        prov = example.provenance
        if int(prov.source_id[1:]) % 3 == 0 and prov.sample == 1:
            raise RuntimeError("fussy broke")
        return None


class Local(RowFilter):
    """A per-record filter that must stay in the study's process."""

    name = "local"
    portable = False

    def reason(self, example: Example) -> str | None:
        return None


def records(count: int) -> list[dict[str, Any]]:
    names = ["Ada Quill", "Jürgen Øberg", "Li Wei", "Amara Okafor-Nwosu", "Ada Quill"]
    return [
        {"id": f"r{i:03d}", "text": f"{names[i % 5]} founded company number {i % 17}."}
        for i in range(count)
    ]


def run(teacher: Any, out: Path, filters: list[Any], **kwargs: Any) -> dict[str, Any]:
    study = mstudy.Study(
        teacher=teacher,
        strategies=[PickyParaphrase(n=2), mstudy.Explain()],
        filters=filters,
        sinks=[out / "rows.jsonl"],
        rejects=out / "rejects.jsonl",
        progress=False,
        **kwargs,
    )
    report = study.run(records(60)).to_dict()
    del report["elapsed_s"]
    return report


FILTERS = {
    "per-record first": lambda: [OddWords(), "length", "dedup", "near_dedup", ShortAfterDedup()],
    "a filter that raises": lambda: [Fussy(), OddWords(), "dedup"],
    "a filter that stays": lambda: [Local(), OddWords(), "dedup"],
    "stream-level first": lambda: ["dedup", OddWords()],
}


@pytest.mark.parametrize("case", sorted(FILTERS))
def test_parsing_in_the_teacher_gives_the_rows_and_report_of_one_process(
    case: str, tmp_path: Path
) -> None:
    one = run(sleepy(0.0), tmp_path / "one", FILTERS[case]())
    teacher = ParsingTeacher()
    assert isinstance(teacher, ParsesReplies)
    placed = run(teacher, tmp_path / "placed", FILTERS[case]())
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(tmp_path / "placed" / name) == read_jsonl(tmp_path / "one" / name)
    assert placed == one
    assert teacher.parsed > 0
    (strategies, filters) = teacher.bound[0]
    assert [s.name for s in strategies] == ["picky", "explain"]
    leading = {"per-record first": 2, "a filter that raises": 2}.get(case, 0)
    assert len(filters) == leading  # up to the first stream-level or local filter
    if case == "a filter that raises":
        reasons = {row["reason"] for row in read_jsonl(tmp_path / "placed" / "rejects.jsonl")}
        assert "filter error" in reasons


def test_a_call_cache_rerun_parses_in_the_study_and_gives_the_same_rows(tmp_path: Path) -> None:
    cache = tmp_path / "calls.sqlite"
    first = ParsingTeacher()
    run(first, tmp_path / "first", FILTERS["per-record first"](), cache=cache)
    again = ParsingTeacher()
    run(again, tmp_path / "again", FILTERS["per-record first"](), cache=cache)
    assert first.parsed > 0 and again.parsed == 0  # every call and outcome came from the cache
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(tmp_path / "again" / name) == read_jsonl(tmp_path / "first" / name)


def test_a_strategy_that_stays_keeps_all_parsing_in_the_study(tmp_path: Path) -> None:
    class Staying(PickyParaphrase):
        portable = False

    teacher = ParsingTeacher()
    sinks = [tmp_path / "rows.jsonl"]
    study = mstudy.Study(teacher, [Staying(), mstudy.Explain()], [OddWords()], sinks)
    assert study.run(records(10)).records == 10
    assert teacher.parsed == 0 and not teacher.bound


def test_filters_that_do_not_pickle_stay_and_the_strategies_go_alone(tmp_path: Path) -> None:
    class Unpicklable(OddWords):
        def __reduce__(self) -> Any:
            raise TypeError("cannot pickle this filter")

    one = run(sleepy(0.0), tmp_path / "one", [Unpicklable(), "dedup"])
    teacher = ParsingTeacher()
    with pytest.raises(TypeError):
        teacher.bind_parsing([], [Unpicklable()])
    teacher = TolerantTeacher()
    placed = run(teacher, tmp_path / "placed", [Unpicklable(), "dedup"])
    assert placed == one and teacher.parsed > 0
    assert [len(filters) for _, filters in teacher.bound] == [0]
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(tmp_path / "placed" / name) == read_jsonl(tmp_path / "one" / name)


class TolerantTeacher(ParsingTeacher):
    """Says None (parse in the study) when what it is given does not pickle, as the Ray
    pool does."""

    def bind_parsing(self, strategies: Sequence[Strategy], filters: Sequence[Filter]) -> Any:
        try:
            return super().bind_parsing(strategies, filters)
        except TypeError:
            return None


# -- the verdicts given per request equal the filter chain's over the whole record ----------


class Rule(RowFilter):
    """A per-record filter from drawn numbers: rejects texts whose length is ``r`` modulo
    ``m``, rewrites (annotates) those whose length is ``a`` modulo ``m``, keeps the rest as
    they are; optionally a batch filter."""

    def __init__(self, name: str, m: int, r: int, a: int) -> None:
        self.name, self.m, self.r, self.a = name, m, r, a  # type: ignore[misc]

    def check(self, example: Example) -> Example | Rejection:
        size = len(example.fields["text"])
        if size % self.m == self.r:
            return example.reject(self.stage, f"mod {self.m}", str(size))
        if size % self.m == self.a:
            return dataclasses.replace(example, fields={**example.fields, "text": "x" * size + "y"})
        return example


class BatchRule(Rule):
    def check_many(self, examples: Sequence[Example]) -> list[Example | Rejection]:
        return [self.check(e) for e in examples]


class InPlaceRule(Rule):
    """Rewrites the example it is given in place and returns it (the same object)."""

    def check(self, example: Example) -> Example | Rejection:
        verdict = super().check(example)
        if isinstance(verdict, Example) and verdict is not example:
            example.fields["text"] = verdict.fields["text"]
            return example
        return verdict


def _example(key: tuple[int, int], index: int, text: str) -> Example:
    provenance = Provenance("r1", f"s{key[0]}", "1", "t", "teacher", {}, key[1])
    return Example(f"e{key}{index}", {"text": text}, provenance)


rules = st.builds(
    lambda kind, m, r, a: kind(f"f{m}{r}{a}", m, r, a),
    st.sampled_from([Rule, BatchRule, InPlaceRule]),
    st.integers(2, 5),
    st.integers(0, 4),
    st.integers(0, 4),
)
requests_results = st.dictionaries(
    st.tuples(st.integers(0, 2), st.integers(0, 3)),
    st.lists(st.one_of(st.text(max_size=12), st.none()), max_size=4),
    max_size=5,
)


@settings(max_examples=200, deadline=None)
@given(results=requests_results, filters=st.lists(rules, max_size=4))
def test_verdicts_given_per_request_equal_the_chain_over_the_record(
    results: dict[tuple[int, int], list[str | None]], filters: list[Rule]
) -> None:
    def items() -> dict[tuple[int, int], list[Example | Rejection]]:
        return {
            key: [
                _example(key, i, text)
                if text is not None
                else Rejection("r1", "parse", "unparsed", "", f"s{key[0]}")
                for i, text in enumerate(texts)
            ]
            for key, texts in results.items()
        }

    def chain() -> tuple[FilterChain, Report]:
        report = Report()
        for f in filters:
            report.filters.setdefault(f.name, FilterStats())
        return FilterChain(filters, report), report

    local, local_report = chain()
    here = items()
    expected = local.apply([item for key in sorted(here) for item in here[key]])

    placed, placed_report = chain()
    there = items()
    shipped = pickle.loads(pickle.dumps(there))  # what a worker parses: a copy
    trails = {key: trail(found, filters) for key, found in shipped.items()}
    assert all(t is not None for t in trails.values())
    placement = Placement(ParsingTeacher(), None, len(filters))
    given_ = placement.given(there, {k: t for k, t in trails.items() if t is not None})
    got = placed.apply([item for key in sorted(there) for item in there[key]], given_)

    assert [_row(i) for i in got] == [_row(i) for i in expected]
    assert placed_report.to_dict() == local_report.to_dict()


def _row(item: Example | Rejection) -> dict[str, Any]:
    return item.to_row()
