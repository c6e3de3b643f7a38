"""The Parquet sink's schema covers every column a study emits, whenever it first appears."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mstudy import ChainOfThought, Request, ScriptedTeacher, Study

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from mstudy.sinks.parquet import ParquetSink  # noqa: E402


def files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_study_where_cot_first_accepts_after_10000_rows(tmp_path: Path) -> None:
    """The issue's run: ``cot`` adds ``gold``, and its first row comes after 10,000 rows."""
    n = 10_050
    records = [
        {"id": f"r{i}", "text": f"Item {i} is kept in Room {i}.", "question": "Where?"}
        for i in range(n)
    ] + [{"id": "last", "text": "Item x is kept.", "question": "Where?", "answer": "Room x"}]

    def reply(request: Request) -> str:
        if request.strategy == "cot":  # only "last" has an answer to check against
            return "1. Recall.\nFinal answer: Room x"
        return "It says where the item is."

    study = Study(
        ScriptedTeacher(reply),
        ["explain", ChainOfThought(require_gold=True)],
        sinks=[tmp_path / "out.jsonl", tmp_path / "out.parquet"],
        rejects=tmp_path / "rejects.parquet",
    )
    report = study.run(records)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == report.accepted == n + 2
    assert "gold" in table.column_names
    gold = [g for g in table.column("gold").to_pylist() if g is not None]
    assert gold == ["Room x"]
    jsonl = (tmp_path / "out.jsonl").read_bytes().split(b"\n")
    assert len([line for line in jsonl if line]) == table.num_rows  # the sinks agree
    rejects = pq.read_table(tmp_path / "rejects.parquet")
    assert rejects.num_rows == report.rejected == n  # cot without an answer field
    assert files(tmp_path) == ["out.jsonl", "out.parquet", "rejects.parquet"]


def test_rejects_sink_past_a_row_group_of_rejections_without_rows(tmp_path: Path) -> None:
    """Input rejections (no row) fill the first row group; later ones carry a row."""
    target = tmp_path / "rejects.parquet"
    first = [{"source_id": f"#{i}", "reason": "invalid_json", "row": None} for i in range(30)]
    later = [
        {"source_id": "a", "reason": "short", "row": {"id": "x", "text": "t"}},
        {"source_id": "b", "reason": "wrong", "row": {"id": "y", "text": "u", "gold": "g"}},
    ]
    with ParquetSink(target, row_group_size=10) as sink:
        sink.write(first)
        sink.write(later[:1])
        sink.write([{"source_id": f"c{i}", "reason": "dup", "row": None} for i in range(15)])
        sink.write(later[1:])
    rows = pq.read_table(target).to_pylist()
    assert len(rows) == 47 and [r["source_id"] for r in rows[:2]] == ["#0", "#1"]
    assert rows[30]["row"] == {"id": "x", "text": "t", "gold": None}
    assert rows[-1]["row"] == {"id": "y", "text": "u", "gold": "g"}
    assert files(tmp_path) == ["rejects.parquet"]


def test_null_for_a_row_group_then_strings(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    with ParquetSink(target, row_group_size=10_000) as sink:
        sink.write([{"id": i, "note": None} for i in range(10_000)])
        sink.write([{"id": 10_000, "note": "now text"}])
    table = pq.read_table(target)
    assert table.schema.field("note").type == pa.string()
    assert table.column("note").to_pylist()[-2:] == [None, "now text"]


def test_nulls_then_ints_keep_the_int_type_and_the_schema_reads_as_one(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    with ParquetSink(target, row_group_size=2) as sink:
        sink.write([{"a": None, "m": {}}, {"a": None, "m": {}}])
        sink.write([{"a": 3, "m": {"k": [1]}}, {"a": 4, "m": {}}])
    table = pq.read_table(target)
    assert table.schema.field("a").type == pa.int64()
    assert table.column("a").to_pylist() == [None, None, 3, 4]
    assert table.column("m").to_pylist() == [{"k": None}, {"k": None}, {"k": [1]}, {"k": None}]


def test_conflicting_types_in_a_column_become_text(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    with ParquetSink(target, row_group_size=1) as sink:
        sink.write([{"score": 1}, {"score": "high"}, {"score": {"n": 2}}, {"score": 0.5}])
        sink.write([{"mixed": 1}, {"mixed": "x"}])
    table = pq.read_table(target)
    assert table.column("score").to_pylist() == ["1", "high", '{"n": 2}', "0.5", None, None]
    assert table.column("mixed").to_pylist() == [None] * 4 + ["1", "x"]
    with ParquetSink(target, row_group_size=1) as sink:  # ints and floats: floats
        sink.write([{"x": 1}, {"x": 2.5}])
    assert pq.read_table(target).column("x").to_pylist() == [1.0, 2.5]


def test_an_unchanging_schema_writes_straight_to_the_output(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    sink = ParquetSink(target, row_group_size=5)
    sink.write([{"a": i, "b": str(i)} for i in range(12)])
    assert files(tmp_path) == [".out.parquet.lock", ".out.parquet.partial"]  # no segment files
    sink.close()
    assert pq.ParquetFile(target).metadata.num_row_groups == 3


def test_segments_are_removed_on_abort(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    target.write_bytes(b"old")
    sink = ParquetSink(target, row_group_size=1)
    sink.write([{"a": 1}, {"a": 2, "b": "x"}, {"a": 3, "c": [1]}])
    assert len(files(tmp_path)) == 5  # the output, its lock, the partial and two segments
    sink.abort()
    assert files(tmp_path) == ["out.parquet"] and target.read_bytes() == b"old"


def test_rewrite_memory_stays_at_a_row_group(tmp_path: Path) -> None:
    """Many row groups under changing schemas: the merged file holds them all, in order."""
    target = tmp_path / "out.parquet"
    with ParquetSink(target, row_group_size=100) as sink:
        for i in range(20):
            sink.write([{"i": i * 100 + j, f"c{i % 3}": j} for j in range(100)])
    table = pq.read_table(target)
    assert table.column("i").to_pylist() == list(range(2000))
    assert set(table.column_names) == {"i", "c0", "c1", "c2"}
    assert pq.ParquetFile(target).metadata.num_row_groups == 20


def test_hf_dataset_sink_takes_late_columns_and_conflicts(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    from mstudy.sinks.hf import DatasetSink

    with DatasetSink() as sink:
        sink.write([{"a": 1, "row": None}] * 3)
        sink.write([{"a": "x", "row": {"id": "r"}, "late": True}])
    rows = sink.dataset.to_list()
    assert rows[-1] == {"a": "x", "row": {"id": "r"}, "late": True}
    assert rows[0] == {"a": "1", "row": None, "late": None}


def test_json_dump_of_nested_conflict_is_readable(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    value: dict[str, Any] = {"k": [1, {"z": None}]}
    with ParquetSink(target, row_group_size=1) as sink:
        sink.write([{"v": "plain"}, {"v": value}])
    assert json.loads(pq.read_table(target).column("v").to_pylist()[1]) == value
