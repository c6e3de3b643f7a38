"""Bad input is refused record by record at stage ``input``; nothing a row holds crashes a run.

Uses only the public API (``mstudy.Study``, ``iter_source``, the CLI's ``main``), so that it
holds for any implementation of the study loop.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mstudy import Record, Rejection, Study
from mstudy.cli import main
from mstudy.sources import iter_source

STRATEGIES = ["explain", "paraphrase"]
SURROGATE_LINE = '{"id": "b", "text": "Item b \\ud800 is kept."}'


def deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def input_rejections(source: object, **kwargs: Any) -> dict[str, Rejection]:
    return {
        item.source_id: item
        for item in iter_source(source, **kwargs)
        if isinstance(item, Rejection) and item.stage == "input"
    }


def study(tmp_path: Path, name: str = "run", **kwargs: Any) -> Study:
    return Study(
        "scripted",
        STRATEGIES,
        sinks=[tmp_path / f"{name}.jsonl", tmp_path / f"{name}.parquet"],
        rejects=tmp_path / f"{name}.rejects.jsonl",
        **kwargs,
    )


# -- lone surrogates -----------------------------------------------------------------------------


@pytest.mark.parametrize("with_ids", [True, False])
def test_cli_run_with_a_lone_surrogate_rejects_that_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], with_ids: bool
) -> None:
    lines = [
        '{"id": "a", "text": "Item a is kept."}',
        SURROGATE_LINE,
        '{"id": "c", "text": "Item c is kept."}',
    ]
    if not with_ids:
        lines = [json.dumps({k: v for k, v in json.loads(x).items() if k != "id"}) for x in lines]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "study.toml").write_text(
        '[source]\npath = "data.jsonl"\n[teacher]\nname = "scripted"\n'
        '[[strategies]]\nname = "explain"\n[[sinks]]\nname = "jsonl"\npath = "out.jsonl"\n'
        '[rejects]\nname = "jsonl"\npath = "rejects.jsonl"\n[run]\ncache = "calls.sqlite"\n'
    )
    for _ in range(2):  # the journaled, cached rerun too
        assert main(["run", str(tmp_path / "study.toml"), "--quiet"]) == 0, capsys.readouterr()
        assert "Traceback" not in capsys.readouterr().err
        rows = read_jsonl(tmp_path / "out.jsonl")
        assert [r["input"] for r in rows] == ["Item a is kept.", "Item c is kept."]
        (rejected,) = read_jsonl(tmp_path / "rejects.jsonl")
        assert rejected["stage"] == "input" and rejected["reason"] == "invalid_unicode"
        assert rejected["field"] == "text" and rejected["source_id"] == "data.jsonl:2"
        assert "'text'" in rejected["detail"] and "U+D800" in rejected["detail"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"id": "x", "text": "ok", "meta": {"k": ["fine", "bad \udfff"]}}, "meta"),
        ({"id": "x", "text": "ok", "meta": {"key \ud83d": 1}}, "meta"),
        ({"id": "x", "text": "ok", "na\udc80me": "value"}, "na\\udc80me"),
        ({"id": "x\ud800", "text": "ok"}, "id"),
        ({"text": "no id \ud800"}, "text"),
    ],
)
def test_surrogates_anywhere_in_a_dict_source_are_refused(row: dict[str, Any], field: str) -> None:
    items = list(iter_source([{"id": "first", "text": "fine"}, row, {"id": "last", "text": "z"}]))
    assert [type(i) for i in items] == [Record, Rejection, Record]
    rejection = items[1]
    assert isinstance(rejection, Rejection)
    assert (rejection.stage, rejection.reason, rejection.field) == (
        "input",
        "invalid_unicode",
        field,
    )
    rejection.detail.encode("utf-8")  # what a rejects sink writes must encode
    assert rejection.field is not None and rejection.field.encode("utf-8")


def test_surrogate_in_a_record_object_is_refused() -> None:
    record = Record(id="r", fields={"text": "a \ud800 b"})
    (item,) = iter_source([record])
    assert isinstance(item, Rejection) and item.reason == "invalid_unicode"


def test_json_array_file_with_surrogates(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(f'[{{"id": "a", "text": "A."}}, {SURROGATE_LINE}]', encoding="utf-8")
    rejected = input_rejections(path)
    assert list(rejected) == ["data.json[1]"] and rejected["data.json[1]"].field == "text"


# -- deep nesting --------------------------------------------------------------------------------


def test_deeply_nested_jsonl_line_is_refused_and_the_journaled_run_goes_on(tmp_path: Path) -> None:
    meta = json.dumps(deep(500))
    source = tmp_path / "deep.jsonl"
    source.write_text(
        '{"id": "a", "text": "Item a is kept."}\n'
        f'{{"id": "b", "text": "Item b is kept.", "meta": {meta}}}\n'
        '{"id": "c", "text": "Item c is kept."}\n'
    )
    report = study(tmp_path, journal=tmp_path / "journal").run(source)
    assert report.accepted == 4 and report.rejected == 1
    (rejected,) = read_jsonl(tmp_path / "run.rejects.jsonl")
    assert rejected["reason"] == "too_deeply_nested" and rejected["field"] == "meta"
    assert rejected["source_id"] == "deep.jsonl:2" and "64" in rejected["detail"]


def test_depth_limit_is_64_levels() -> None:
    ok, too_deep = {"id": "ok", "meta": deep(64)}, {"id": "no", "meta": deep(65)}
    nested_dicts: Any = "leaf"
    for _ in range(200):
        nested_dicts = {"k": nested_dicts}
    circular: list[Any] = []
    circular.append(circular)
    rejected = input_rejections([ok, too_deep, {"id": "d", "m": nested_dicts}, {"c": circular}])
    assert set(rejected) == {"#1", "#2", "#3"}
    assert {r.reason for r in rejected.values()} == {"too_deeply_nested"}
    assert [r.field for r in rejected.values()] == ["meta", "m", "c"]


# -- values without a stable JSON form, unparsable lines -----------------------------------------


class Opaque:
    """An object with no text form of its own (its repr holds a memory address)."""


class BrokenStr:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_values_without_a_stable_form_are_refused_and_others_kept() -> None:
    kept = [
        {"id": "set", "m": {1, 2}},
        {"id": "bytes", "m": b"\xff\x00"},
        {"id": "nan", "m": math.nan, "n": [math.inf]},
        {"id": "tuple", "m": (1, "a"), "k": {1: "int key"}},
    ]
    refused = [
        {"id": "opaque", "m": Opaque()},
        {"id": "broken", "m": [BrokenStr()]},
        {"id": "bigint", "m": 10**5000},
        {"id": 10**5000},
        {"id": "key", "m": {Opaque(): 1}},
    ]
    items = list(iter_source(kept + refused))
    assert [r.id for r in items[: len(kept)] if isinstance(r, Record)] == [
        "set",
        "bytes",
        "nan",
        "tuple",
    ]
    rejected = items[len(kept) :]
    assert all(isinstance(r, Rejection) for r in rejected)
    assert [r.reason for r in rejected] == ["unsupported_value"] * len(refused)  # type: ignore[union-attr]
    assert [r.field for r in rejected] == ["m", "m", "m", "id", "m"]  # type: ignore[union-attr]
    # kept values hash stably: the same records get the same ids again
    again = [r.id for r in iter_source([{k: v for k, v in kept[0].items() if k != "id"}] * 1)]
    assert again == [r.id for r in iter_source([{"m": {2, 1}}])]


def test_unparsable_line_and_bad_id_messages_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"id": "a", "text": "A."}\n{"id": \n{"id": 1.5, "text": "B."}\n')
    rejected = input_rejections(path)
    assert rejected["data.jsonl:2"].reason == "invalid_json"
    bad_id = rejected["data.jsonl:3"]
    assert bad_id.reason == "invalid_record" and bad_id.field == "id"
    assert bad_id.detail == "data.jsonl:3: field 'id' must be a string or integer id, got float"


# -- ids -----------------------------------------------------------------------------------------


def test_ids_are_strings_and_a_repeated_id_is_refused() -> None:
    items = list(
        iter_source(
            [
                {"id": 7, "text": "seven"},
                {"id": "7", "text": "also seven"},
                {"id": "8", "text": "eight"},
                {"text": "no id"},
                {"text": "no id"},  # identical rows without ids: left to the dedup filter
            ]
        )
    )
    assert [i.id for i in items if isinstance(i, Record)] == ["7", "8", items[3].id, items[3].id]  # type: ignore[union-attr]
    duplicate = items[1]
    assert isinstance(duplicate, Rejection)
    assert (duplicate.stage, duplicate.reason, duplicate.field) == ("input", "duplicate_id", "id")
    assert duplicate.source_id == "#1" and "'7'" in duplicate.detail


def test_duplicate_ids_past_the_small_id_set(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    n = 300_000  # past the first, smaller set of remembered ids
    with open(path, "w") as f:
        for i in range(n):
            f.write(f'{{"id": "r{i}"}}\n')
        f.write('{"id": "r5"}\n{"id": "r299999"}\n{"id": "new"}\n')
    rejected = input_rejections(path)
    assert sorted(rejected) == [f"many.jsonl:{n + 1}", f"many.jsonl:{n + 2}"]
    assert {r.reason for r in rejected.values()} == {"duplicate_id"}


# -- any row, any run ----------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(alphabet=st.characters(exclude_categories=()), max_size=20)  # surrogates included
    | st.sampled_from(["\ud800", "x\udfff", "", " ", "{{ text }}", "é" * 3])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
) | st.builds(deep, st.integers(60, 120))
_ids = st.none() | st.integers(-3, 3) | st.sampled_from(["a", "1", "", " ", "\ud800", "x" * 300])
_rows = st.one_of(
    st.fixed_dictionaries(
        {"text": st.text(max_size=40) | _values},
        optional={"id": _ids, "meta": _values, "other": _values},
    ),
    st.dictionaries(st.text(max_size=6), _values, max_size=3),
    st.just({}),
    st.builds(lambda n: {"id": "huge", "text": "y" * n}, st.integers(10_000, 200_000)),
    _values,  # rows that are not mappings at all
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=st.lists(_rows, max_size=6))
def test_any_rows_through_a_journaled_cached_study(tmp_path: Path, rows: list[Any]) -> None:
    run_dir = Path(tempfile_dir(tmp_path))
    study_ = study(run_dir, journal=run_dir / "journal", cache=run_dir / "calls.sqlite")
    report = study_.run(rows)
    accepted = read_jsonl(run_dir / "run.jsonl")
    rejected = read_jsonl(run_dir / "run.rejects.jsonl")
    import pyarrow.parquet as pq

    assert pq.read_table(run_dir / "run.parquet").num_rows == len(accepted) == report.accepted
    assert len(rejected) == report.rejected
    # every row is accounted for: a record (with one outcome per strategy) or an input rejection
    inputs = [r for r in rejected if r["stage"] == "input"]
    assert report.records + len(inputs) == len(rows)
    outcomes = [r for r in accepted + rejected if r["strategy"]]  # one per record and strategy
    assert len(outcomes) == report.records * len(STRATEGIES)
    for row in rejected:
        assert row["reason"] and row["detail"]
    again = study(run_dir, "again", journal=run_dir / "journal2", cache=run_dir / "calls.sqlite")
    assert again.run(rows).accepted == report.accepted  # the cached rerun agrees


_counter = iter(range(10**9))


def tempfile_dir(tmp_path: Path) -> Path:
    """A fresh folder per hypothesis example (the fixture's tmp_path is shared by them)."""
    path = tmp_path / f"ex{next(_counter)}"
    path.mkdir()
    return path
