"""Sinks: JSON Lines, Parquet, datasets; atomic commits, errors naming paths, schemas."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import read_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mstudy._locks import lock_path
from mstudy.errors import SinkError
from mstudy.interfaces import Sink
from mstudy.records import Completion, Example, Message, Request
from mstudy.sinks.base import AtomicFile, BaseSink, partial_path
from mstudy.sinks.jsonl import JSONLSink, dumps_row


def example_row(i: int, **fields: Any) -> dict[str, Any]:
    request = Request(
        messages=(Message("user", f"reverse fact {i}"),),
        source_id=f"src-{i}",
        strategy="reverse",
        strategy_version="1",
    )
    completion = Completion(key=request.key, text="B is A", teacher="scripted")
    return Example.from_completion(request, completion, {"text": f"row {i}", **fields}).to_row()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def pa() -> Any:
    return pytest.importorskip("pyarrow")


@pytest.fixture
def pq() -> Any:
    return pytest.importorskip("pyarrow.parquet")


@pytest.fixture
def datasets() -> Any:
    return pytest.importorskip("datasets")


# -- life cycle -----------------------------------------------------------------------------------


def test_sinks_satisfy_the_protocol(tmp_path: Path, pq: Any, datasets: Any) -> None:
    from mstudy.sinks.hf import DatasetSink
    from mstudy.sinks.parquet import ParquetSink

    sinks = [JSONLSink(tmp_path / "a.jsonl"), ParquetSink(tmp_path / "a.parquet"), DatasetSink()]
    for sink in sinks:
        assert isinstance(sink, Sink)
        sink.abort()


def test_write_after_close_raises_and_close_is_idempotent(tmp_path: Path) -> None:
    sink = JSONLSink(tmp_path / "out.jsonl")
    sink.write([{"a": 1}])
    sink.close()
    sink.close()
    sink.abort()  # no-op once closed: the committed file stays
    assert read_jsonl(tmp_path / "out.jsonl") == [{"a": 1}]
    with pytest.raises(SinkError, match="closed"):
        sink.write([{"a": 2}])
    assert sink.rows_written == 1


def test_write_rejects_non_rows(tmp_path: Path) -> None:
    with JSONLSink(tmp_path / "out.jsonl") as sink:
        with pytest.raises(SinkError, match="single row"):
            sink.write({"a": 1})  # type: ignore[arg-type]
        with pytest.raises(SinkError, match=r"row 1 .* str"):
            sink.write([{"a": 1}, "oops"])  # type: ignore[list-item]
    assert read_jsonl(tmp_path / "out.jsonl") == []


def test_examples_are_accepted_as_rows(tmp_path: Path) -> None:
    request = Request(messages=(Message("user", "q"),), source_id="s", strategy="explain")
    example = Example.from_completion(request, Completion(key=request.key, text="t"), {"x": 1})
    with JSONLSink(tmp_path / "out.jsonl") as sink:
        sink.write([example])  # type: ignore[list-item]
    (row,) = read_jsonl(tmp_path / "out.jsonl")
    assert row["x"] == 1 and row["provenance"]["source_id"] == "s"


def test_rows_are_copied_when_written(tmp_path: Path, datasets: Any) -> None:
    from mstudy.sinks.hf import DatasetSink

    rows = [{"a": 1}]
    with DatasetSink() as sink:
        sink.write(rows)
        rows[0]["a"] = 99
        rows.clear()
    assert sink.dataset["a"] == [1]


# -- atomic commit ---------------------------------------------------------------------------------


def test_target_appears_only_on_close(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir" / "out.jsonl"  # parents are created
    with JSONLSink(target) as sink:
        sink.write([{"a": 1}])
        assert not target.exists()
        assert partial_path(target).exists()
    assert read_jsonl(target) == [{"a": 1}]
    assert leftovers(target.parent) == ["out.jsonl"]


def test_exception_inside_with_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), JSONLSink(target) as sink:
        sink.write([{"a": 1}])
        raise RuntimeError("boom")
    assert leftovers(tmp_path) == []


def test_abort_keeps_an_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text('{"old": true}\n', encoding="utf-8")
    sink = JSONLSink(target)
    sink.write([{"new": True}])
    sink.abort()
    assert read_jsonl(target) == [{"old": True}]
    assert leftovers(tmp_path) == ["out.jsonl"]


def test_close_replaces_an_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text('{"old": true}\n', encoding="utf-8")
    with JSONLSink(target) as sink:
        sink.write([{"new": True}])
    assert read_jsonl(target) == [{"new": True}]


def test_append_adds_to_the_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text('{"n": 1}', encoding="utf-8")  # no final newline
    with JSONLSink(target, append=True) as sink:
        sink.write([{"n": 2}])
    with JSONLSink(target, append=True) as sink:
        sink.write([{"n": 3}])
    assert read_jsonl(target) == [{"n": 1}, {"n": 2}, {"n": 3}]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_killed_process_leaves_only_the_partial(tmp_path: Path, kind: str, pq: Any) -> None:
    target = tmp_path / f"out.{kind}"
    cls = "mstudy.sinks.jsonl.JSONLSink" if kind == "jsonl" else "mstudy.sinks.parquet.ParquetSink"
    module, name = cls.rsplit(".", 1)
    code = textwrap.dedent(
        f"""
        import os, signal
        from {module} import {name}
        kwargs = {{"row_group_size": 2}} if {name!r} == "ParquetSink" else {{}}
        sink = {name}({str(target)!r}, **kwargs)
        sink.write([{{"text": "row %d" % i}} for i in range(5)])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert not target.exists()
    assert leftovers(tmp_path) == sorted([partial_path(target).name, lock_path(target).name])


def test_a_file_in_place_of_the_directory_gives_a_sink_error(
    tmp_path: Path, pq: Any, datasets: Any
) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x", encoding="utf-8")
    target = blocker / "out.jsonl"
    with pytest.raises(SinkError, match=r"not_a_dir"):
        JSONLSink(target)
    from mstudy.sinks.hf import SaveToDiskSink
    from mstudy.sinks.parquet import ParquetSink

    with pytest.raises(SinkError, match=r"not_a_dir"):
        ParquetSink(blocker / "out.parquet")
    with pytest.raises(SinkError, match=r"not_a_dir"):
        SaveToDiskSink(blocker / "ds")


def test_a_directory_at_the_target_gives_a_sink_error(tmp_path: Path) -> None:
    (tmp_path / "out.jsonl").mkdir()
    with pytest.raises(SinkError, match="existing directory"):
        JSONLSink(tmp_path / "out.jsonl")


def test_a_failed_commit_names_the_path_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.jsonl"
    sink = JSONLSink(target)
    sink.write([{"a": 1}])

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SinkError, match=r"out\.jsonl.*No space left.*disk full") as info:
        sink.close()
    assert info.value.errno == errno.ENOSPC
    assert leftovers(tmp_path) == []
    with pytest.raises(SinkError):
        sink.write([{"a": 2}])


def test_atomic_file_helper(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    f = AtomicFile(target)
    f.write(b"abc")
    assert not target.exists() and f.partial.exists()
    f.commit()
    f.commit()
    assert target.read_bytes() == b"abc"
    g = AtomicFile(target)
    g.write(b"zzz")
    g.discard()
    assert target.read_bytes() == b"abc" and not g.partial.exists()


class _ListSink(BaseSink):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.committed = self.discarded = False

    def _write(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def _commit(self) -> None:
        self.committed = True

    def _discard(self) -> None:
        self.discarded = True


def test_base_sink_context_manager() -> None:
    with _ListSink() as ok:
        ok.write([{"a": 1}])
    assert ok.committed and not ok.discarded and ok.closed
    with pytest.raises(KeyError), _ListSink() as bad:
        raise KeyError("x")
    assert bad.discarded and not bad.committed


# -- JSON Lines ------------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["{{ x }}", "{% if %}", "a\nb\r\nc", "\u2028\u2029", "日本語 ✓ العربية", "\x00"]
)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.dictionaries(_text, _values, max_size=4), max_size=5))
def test_jsonl_round_trip(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    target = tmp_path / "rt.jsonl"
    with JSONLSink(target) as sink:
        sink.write(rows)
    data = target.read_bytes()
    assert data.count(b"\n") == len(rows)  # one line per row, whatever the text holds
    assert [json.loads(line) for line in data.split(b"\n")[:-1]] == rows


def test_jsonl_keeps_text_unescaped(tmp_path: Path) -> None:
    target = tmp_path / "t.jsonl"
    with JSONLSink(target) as sink:
        sink.write([{"text": "Ünïcödé 日本 {{ name }}"}])
    assert "日本 {{ name }}" in target.read_text(encoding="utf-8")


def test_jsonl_converts_non_json_values() -> None:
    row = {
        "np_int": np.int64(3),
        "np_float": np.float32(0.5),
        "array": np.arange(3),
        "bytes": b"hi",
        "binary": b"\xff\x00",
        "set": {3, 1, 2},
        "mixed_set": {1, "a"},
        "when": dt.datetime(2024, 1, 2, 3, 4, 5),
        "day": dt.date(2024, 1, 2),
        "nan": float("nan"),
        "inf": np.float64("inf"),
        "dec": Decimal("1.10"),
        "path": Path("a/b"),
        "obj": object(),
        "tuple_key": {(1, 2): "x"},
        "surrogate": "a\udc80b",
    }
    line = dumps_row(row)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = json.loads(line)
    assert back["np_int"] == 3 and back["np_float"] == 0.5 and back["array"] == [0, 1, 2]
    assert back["bytes"] == "hi" and back["binary"] == {"$base64": "/wA="}
    assert back["set"] == [1, 2, 3] and sorted(map(str, back["mixed_set"])) == ["1", "a"]
    assert back["when"] == "2024-01-02T03:04:05" and back["day"] == "2024-01-02"
    assert back["nan"] is None and back["inf"] is None
    assert back["dec"] == "1.10" and back["path"] == str(Path("a/b"))
    assert back["obj"].startswith("<object object")
    assert back["tuple_key"] == {"[1, 2]": "x"}
    assert back["surrogate"] == "a\udc80b"


def test_jsonl_circular_value_does_not_crash() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert json.loads(dumps_row({"loop": loop}))["loop"]


# -- Parquet ---------------------------------------------------------------------------------------


def test_parquet_round_trip_with_provenance(tmp_path: Path, pa: Any, pq: Any) -> None:
    from mstudy.sinks.parquet import ParquetSink

    target = tmp_path / "out.parquet"
    rows = [example_row(i) for i in range(5)]
    with ParquetSink(target, row_group_size=2) as sink:
        sink.write(rows[:3])
        assert not target.exists()
        sink.write(rows[3:])
    assert pq.read_table(target).to_pylist() == [
        {**r, "provenance": {**r["provenance"], "params": {**r["provenance"]["params"]}}}
        for r in rows
    ]
    assert pq.ParquetFile(target).metadata.num_row_groups == 3
    assert leftovers(tmp_path) == ["out.parquet"]
    provenance = pq.read_schema(target).field("provenance").type
    assert provenance.field("params").type.field("seed").type == pa.int64()  # known type


def test_parquet_keeps_provenance_types_when_the_first_rows_are_unseeded(
    tmp_path: Path, pq: Any
) -> None:
    from mstudy.sinks.parquet import ParquetSink

    target = tmp_path / "out.parquet"
    unseeded, seeded = example_row(0), example_row(1)
    seeded["provenance"]["params"]["seed"] = 42
    with ParquetSink(target, row_group_size=1) as sink:
        sink.write([unseeded])
        sink.write([seeded])
    seeds = [r["provenance"]["params"]["seed"] for r in pq.read_table(target).to_pylist()]
    assert seeds == [None, 42]


def test_parquet_null_columns_become_string_and_missing_keys_null(
    tmp_path: Path, pa: Any, pq: Any
) -> None:
    from mstudy.sinks.parquet import ParquetSink

    target = tmp_path / "out.parquet"
    with ParquetSink(target, row_group_size=2) as sink:
        sink.write([{"a": 1, "note": None, "tags": []}, {"a": 2, "note": None, "tags": []}])
        sink.write([{"a": 3, "note": "hi", "tags": ["x"]}, {"note": "only note"}])
    table = pq.read_table(target)
    assert table.schema.field("note").type == pa.string()
    assert table.schema.field("tags").type == pa.list_(pa.string())
    assert table.column("a").to_pylist() == [1, 2, 3, None]
    assert table.column("tags").to_pylist() == [[], [], ["x"], None]


def test_parquet_nested_missing_field_is_null_and_ints_widen(tmp_path: Path, pq: Any) -> None:
    from mstudy.sinks.parquet import ParquetSink

    target = tmp_path / "out.parquet"
    with ParquetSink(target, row_group_size=1) as sink:
        sink.write([{"p": {"x": 1.5, "y": "a"}}, {"p": {"x": 2}}, {"p": None}])
    assert pq.read_table(target).column("p").to_pylist() == [
        {"x": 1.5, "y": "a"},
        {"x": 2.0, "y": None},
        None,
    ]


def test_parquet_dicts_in_a_string_column_become_json(tmp_path: Path, pq: Any) -> None:
    from mstudy.sinks.parquet import ParquetSink

    target = tmp_path / "rejects.parquet"
    with ParquetSink(target, row_group_size=1) as sink:
        sink.write(
            [{"reason": "bad", "row": "text"}, {"reason": "dup", "row": {"id": "x", "n": 1}}]
        )
    rows = pq.read_table(target).column("row").to_pylist()
    assert rows[0] == "text" and json.loads(rows[1]) == {"id": "x", "n": 1}
    with ParquetSink(target, row_group_size=1) as sink:  # null first: the dicts keep their shape
        sink.write([{"reason": "bad", "row": None}, {"reason": "dup", "row": {"id": "x", "n": 1}}])
    assert pq.read_table(target).column("row").to_pylist() == [None, {"id": "x", "n": 1}]


def test_parquet_explicit_schema_refuses_a_column_it_lacks(tmp_path: Path, pa: Any) -> None:
    from mstudy.sinks.parquet import ParquetSink

    target, schema = tmp_path / "out.parquet", pa.schema([("a", pa.int64())])
    with (
        pytest.raises(SinkError, match="'late'"),
        ParquetSink(target, row_group_size=1, schema=schema) as sink,
    ):
        sink.write([{"a": 1}, {"a": 2, "late": "x"}])
    assert leftovers(tmp_path) == []


def test_parquet_zero_rows_and_explicit_schema(tmp_path: Path, pa: Any, pq: Any) -> None:
    from mstudy.sinks.parquet import ParquetSink

    with ParquetSink(tmp_path / "empty.parquet"):
        pass
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0
    schema = pa.schema([("text", pa.string()), ("score", pa.float64())])
    with ParquetSink(tmp_path / "typed.parquet", schema=schema) as sink:
        sink.write([{"text": "a", "score": 1}])
    typed = pq.read_table(tmp_path / "typed.parquet")
    assert typed.schema == schema and typed.to_pylist() == [{"text": "a", "score": 1.0}]


def test_parquet_converts_sets_and_odd_values(tmp_path: Path, pq: Any) -> None:
    from mstudy.sinks.parquet import ParquetSink

    with ParquetSink(tmp_path / "o.parquet") as sink:
        sink.write([{"s": {2, 1}, "n": np.int32(4), "o": object()}])
    (row,) = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert row["s"] == [1, 2] and row["n"] == 4 and row["o"].startswith("<object")


def test_missing_pyarrow_gives_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mstudy.sinks.parquet import ParquetSink

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r'pip install "mstudy\[parquet\]"'):
        ParquetSink(tmp_path / "o.parquet")
    assert leftovers(tmp_path) == []


def test_sink_modules_import_no_heavy_library() -> None:
    code = (
        "import sys, mstudy.sinks, mstudy.sinks.base, mstudy.sinks.jsonl, mstudy.sources;"
        "mstudy.sinks.JSONLSink;"
        "print([m for m in ('pyarrow', 'datasets', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_package_exports(pq: Any, datasets: Any) -> None:
    import mstudy.sinks as sinks
    from mstudy.sinks.parquet import ParquetSink

    assert sinks.ParquetSink is ParquetSink and "SaveToDiskSink" in dir(sinks)
    with pytest.raises(AttributeError):
        _ = sinks.NoSuchSink


# -- datasets --------------------------------------------------------------------------------------


def test_dataset_sink_unifies_keys(datasets: Any) -> None:
    from mstudy.sinks.hf import DatasetSink

    sink = DatasetSink()
    with pytest.raises(SinkError, match="after close"):
        _ = sink.dataset
    with sink:
        sink.write([{"a": 1, "p": {"x": 1}}, {"b": "x", "p": {"y": "s"}}])
        sink.write([{"a": 2.5, "c": None}])
    ds = sink.dataset
    assert isinstance(ds, datasets.Dataset)
    assert ds.column_names == ["a", "p", "b", "c"]
    assert ds.to_list() == [
        {"a": 1.0, "p": {"x": 1, "y": None}, "b": None, "c": None},
        {"a": None, "p": {"x": None, "y": "s"}, "b": "x", "c": None},
        {"a": 2.5, "p": None, "b": None, "c": None},
    ]


def test_dataset_sink_zero_rows_and_errors(datasets: Any) -> None:
    from mstudy.sinks.hf import DatasetSink

    with DatasetSink() as empty:
        pass
    assert len(empty.dataset) == 0
    mixed = DatasetSink()
    mixed.write([{"a": 1}, {"a": "x"}])
    mixed.close()  # values of conflicting types: JSON text, never a failed commit
    assert mixed.dataset["a"] == ["1", "x"]
    aborted = DatasetSink()
    aborted.abort()
    with pytest.raises(SinkError, match="aborted"):
        _ = aborted.dataset


def test_dataset_sink_with_example_rows(datasets: Any) -> None:
    from mstudy.sinks.hf import DatasetSink

    with DatasetSink() as sink:
        sink.write([example_row(i) for i in range(3)])
    ds = sink.dataset
    assert ds[0]["provenance"]["strategy"] == "reverse" and len(ds) == 3


def test_save_to_disk_round_trip_and_replace(tmp_path: Path, datasets: Any) -> None:
    from mstudy.sinks.hf import SaveToDiskSink

    target = tmp_path / "ds"
    with SaveToDiskSink(target) as sink:
        sink.write([{"text": "old"}])
    assert datasets.load_from_disk(str(target))["text"] == ["old"]

    sink = SaveToDiskSink(target)
    sink.write([{"text": "new", "n": 1}, {"text": "newer"}])
    sink.write([{"text": f"{i:0100d}", "n": i} for i in range(1000)])
    spool = [p for p in tmp_path.iterdir() if p.name.startswith(".ds.") and p.suffix == ".tmp"]
    assert len(spool) == 1 and (spool[0] / "spool.pickle").stat().st_size > 50_000  # on disk
    assert datasets.load_from_disk(str(target))["text"] == ["old"]  # untouched until close
    sink.close()
    reloaded = datasets.load_from_disk(str(target))
    assert len(reloaded) == 1002
    assert reloaded.select(range(2)).to_list() == [
        {"text": "new", "n": 1},
        {"text": "newer", "n": None},
    ]
    assert leftovers(tmp_path) == ["ds"]


def test_save_to_disk_abort_keeps_old_and_cleans_up(tmp_path: Path, datasets: Any) -> None:
    from mstudy.sinks.hf import SaveToDiskSink

    target = tmp_path / "ds"
    with SaveToDiskSink(target) as sink:
        sink.write([{"text": "old"}])
    with pytest.raises(ValueError), SaveToDiskSink(target) as sink:
        sink.write([{"text": "new"}])
        raise ValueError("stop")
    assert datasets.load_from_disk(str(target))["text"] == ["old"]
    assert leftovers(tmp_path) == ["ds"]


def test_save_to_disk_zero_rows_and_type_errors(tmp_path: Path, datasets: Any) -> None:
    from mstudy.sinks.hf import SaveToDiskSink

    with SaveToDiskSink(tmp_path / "empty"):
        pass
    assert len(datasets.load_from_disk(str(tmp_path / "empty"))) == 0
    sink = SaveToDiskSink(tmp_path / "mixed")
    sink.write([{"a": 1}])
    sink.write([{"a": "text"}])
    sink.close()  # values of conflicting types: JSON text, never a failed commit
    assert datasets.load_from_disk(str(tmp_path / "mixed"))["a"] == ["1", "text"]
    assert leftovers(tmp_path) == ["empty", "mixed"]


def test_save_to_disk_refuses_to_replace_a_foreign_folder(tmp_path: Path, datasets: Any) -> None:
    from mstudy.sinks.hf import SaveToDiskSink

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(SinkError, match="refusing"):
        SaveToDiskSink(tmp_path / "mine")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(SinkError, match="not a directory"):
        SaveToDiskSink(tmp_path / "file")
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "precious"


def test_a_failed_write_poisons_the_sink(tmp_path: Path, pq: Any) -> None:
    import pyarrow as pa

    from mstudy.sinks.parquet import ParquetSink

    schema = pa.schema([("a", pa.int64())])  # a fixed schema: a column it lacks fails the write
    sink = ParquetSink(tmp_path / "o.parquet", row_group_size=1, schema=schema)
    sink.write([{"a": 1}])
    with pytest.raises(SinkError, match="'b'"):
        sink.write([{"a": 2, "b": 1}])
    with pytest.raises(SinkError, match="earlier write failed"):
        sink.write([{"a": 3}])
    with pytest.raises(SinkError, match="earlier write failed"):
        sink.close()
    sink.close()  # idempotent once aborted
    assert leftovers(tmp_path) == []


_line_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.lists(st.dictionaries(st.text(), _line_values, max_size=4), max_size=6))
def test_rows_encoded_together_are_the_rows_encoded_one_by_one(
    rows: list[dict[str, Any]],
) -> None:
    """Lone surrogates, NaN and odd text included: a chunk's bytes are each row's bytes."""
    from mstudy.sinks.jsonl import dumps_rows

    assert dumps_rows(rows) == b"".join(map(dumps_row, rows))
