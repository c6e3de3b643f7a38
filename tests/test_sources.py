"""Sources: iterables, datasets objects, JSON Lines (plain, gzip, arrays) and Parquet files."""

from __future__ import annotations

import gzip
import json
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mstudy.errors import ConfigError, RecordError
from mstudy.records import Record, Rejection
from mstudy.sinks.jsonl import JSONLSink
from mstudy.sources import iter_source, source_length


def records(items: Iterator[Record | Rejection]) -> list[Record]:
    out = list(items)
    assert all(isinstance(i, Record) for i in out), out
    return out  # type: ignore[return-value]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


# -- in-memory sources --------------------------------------------------------------------------


def test_list_of_dicts_with_and_without_ids() -> None:
    out = records(iter_source([{"id": "a", "text": "x"}, {"text": "y"}, {"id": 7}]))
    assert [r.id for r in out[::2]] == ["a", "7"]
    assert len(out[1].id) == 16 and out[1].fields == {"text": "y"}
    assert [r.index for r in out] == [0, 1, 2]
    again = records(iter_source([{"text": "y"}]))
    assert again[0].id == out[1].id  # content hash: stable


def test_records_pass_through() -> None:
    rec = Record.from_mapping({"text": "x"}, 5)
    assert list(iter_source([rec])) == [rec]


def test_custom_id_field() -> None:
    (rec,) = records(iter_source([{"key": "k1", "text": "x"}], id_field="key"))
    assert rec.id == "k1"


def test_non_mapping_items_and_bad_ids_are_rejections() -> None:
    items = list(iter_source(({"text": "ok"}, "not a row", {"id": 1.5}, None)))
    assert isinstance(items[0], Record)
    bad = items[1]
    assert isinstance(bad, Rejection) and bad.stage == "input"
    assert bad.reason == "not_a_mapping" and bad.source_id == "#1" and "#1" in bad.detail
    assert "str" in bad.detail
    bad_id = items[2]
    assert isinstance(bad_id, Rejection) and bad_id.reason == "invalid_record"
    assert bad_id.field == "id" and "#2" in bad_id.detail
    assert isinstance(items[3], Rejection) and items[3].source_id == "#3"


def test_generators_stream() -> None:
    seen: list[int] = []

    def rows() -> Iterator[dict[str, Any]]:
        for i in range(1_000_000):
            seen.append(i)
            yield {"n": i}

    it = iter_source(rows())
    assert next(it).fields == {"n": 0}  # type: ignore[union-attr]
    assert seen == [0]
    assert source_length(rows()) is None


def test_unsupported_sources() -> None:
    with pytest.raises(ConfigError, match="single mapping"):
        iter_source({"text": "x"})
    with pytest.raises(ConfigError, match="bytes"):
        iter_source(b'{"a": 1}')
    with pytest.raises(ConfigError, match="int"):
        iter_source(42)


def test_source_length_of_sized_sources() -> None:
    assert source_length([{"a": 1}, {"a": 2}]) == 2
    assert source_length(iter([{"a": 1}])) is None
    assert source_length({"a": 1}) is None


# -- datasets -------------------------------------------------------------------------------------


def test_datasets_objects() -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}])
    assert [r.id for r in records(iter_source(ds))] == ["a", "b"]
    assert source_length(ds) == 2
    streaming = ds.to_iterable_dataset().with_format("numpy")
    texts = [r.fields["text"] for r in records(iter_source(streaming))]
    assert texts == ["x", "y"] and {type(t) for t in texts} == {str}
    assert source_length(streaming) is None
    numpy_format = ds.with_format("numpy", columns=["text"])
    (first, _) = records(iter_source(numpy_format))
    assert first.fields == {"text": "x"} and type(first.fields["text"]) is str
    with pytest.raises(ConfigError, match=r"pick a split.*'train'"):
        iter_source(datasets.DatasetDict({"train": ds}))


def test_saved_dataset_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"text": "x"}, {"text": "y"}]).save_to_disk(str(tmp_path / "ds"))
    assert [r.fields["text"] for r in records(iter_source(tmp_path / "ds"))] == ["x", "y"]
    assert source_length(tmp_path / "ds") == 2
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match="plain"):
        iter_source(tmp_path / "plain")


# -- JSON Lines -----------------------------------------------------------------------------------


def test_jsonl_file(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "data.jsonl", [b'{"id": "a", "text": "x"}', b"", b'{"text": "y"}']
    )
    out = records(iter_source(str(path)))
    assert [r.fields["text"] for r in out] == ["x", "y"]
    assert source_length(path) is None


def test_bad_lines_become_rejections_and_reading_goes_on(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "mixed.jsonl",
        [
            b'{"text": "first"}',
            b'{"text": "caf\xe9"}',  # latin-1, not UTF-8
            b"   ",
            b'{"text": "unterminated',
            b"[1, 2]",
            b'{"text": "last \xc3\xa9"}',
            b'{"id": [], "text": "bad id"}',
        ],
    )
    items = list(iter_source(path))
    good = [i for i in items if isinstance(i, Record)]
    bad = {i.source_id: i for i in items if isinstance(i, Rejection)}
    assert [r.fields["text"] for r in good] == ["first", "last é"]
    assert set(bad) == {"mixed.jsonl:2", "mixed.jsonl:4", "mixed.jsonl:5", "mixed.jsonl:7"}
    assert bad["mixed.jsonl:2"].reason == "invalid_utf8" and "line 2" in bad["mixed.jsonl:2"].detail
    assert bad["mixed.jsonl:4"].reason == "invalid_json" and "line 4" in bad["mixed.jsonl:4"].detail
    assert bad["mixed.jsonl:5"].reason == "not_an_object" and "array" in bad["mixed.jsonl:5"].detail
    assert (
        bad["mixed.jsonl:7"].reason == "invalid_record"
        and "mixed.jsonl:7" in bad["mixed.jsonl:7"].detail
    )
    assert all(b.stage == "input" for b in bad.values())


def test_gzip_bom_crlf_and_json_lines_extension(tmp_path: Path) -> None:
    gz = tmp_path / "data.jsonl.gz"
    with gzip.open(gz, "wb") as f:
        f.write('\ufeff{"text": "ä"}\r\n{"text": "b"}\r\n'.encode())
    assert [r.fields["text"] for r in records(iter_source(gz))] == ["ä", "b"]
    lines = write_lines(tmp_path / "data.json", [b'{"text": "a"}', b'{"text": "b"}'])
    assert len(records(iter_source(lines))) == 2


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_text('\n  [{"text": "a"},\n {"text": "b"}, 3]', encoding="utf-8")
    items = list(iter_source(path))
    assert [i.fields["text"] for i in items[:2]] == ["a", "b"]  # type: ignore[union-attr]
    assert isinstance(items[2], Rejection) and items[2].source_id == "array.json[2]"
    broken = tmp_path / "broken.json"
    broken.write_text('[{"text": "a"', encoding="utf-8")
    with pytest.raises(RecordError, match=r"broken\.json"):
        list(iter_source(broken))


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found: .*nope\.jsonl"):
        iter_source(tmp_path / "nope.jsonl")
    (tmp_path / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"data\.csv.*unknown file type"):
        iter_source(str(tmp_path / "data.csv"))
    assert source_length(tmp_path / "nope.parquet") is None


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    data = gzip.compress(b"".join(b'{"n": %d}\n' % i for i in range(2000)))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordError, match=r"cut\.jsonl\.gz"):
        list(iter_source(path))


_texts = st.text(max_size=30) | st.sampled_from(["{{ user }}", "a\nb", "Ελληνικά 中文", "\u2028"])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"text": _texts, "meta": st.dictionaries(_texts, _texts, max_size=2)}
        ),
        max_size=5,
    )
)
def test_sink_to_source_round_trip(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    path = tmp_path / "rt.jsonl"
    with JSONLSink(path) as sink:
        sink.write(rows)
    assert [r.fields for r in records(iter_source(path))] == rows


def test_jsonl_is_read_lazily_from_a_pipe(tmp_path: Path) -> None:
    """The first record arrives while the writer has not written the rest: nothing is slurped."""
    fifo = tmp_path / "stream.jsonl"
    os.mkfifo(fifo)
    rest_written = threading.Event()
    go_on = threading.Event()

    def writer() -> None:
        with open(fifo, "wb") as pipe:
            pipe.write(b'{"n": 0}\n')
            pipe.flush()
            go_on.wait(timeout=10)
            pipe.writelines(b'{"n": %d}\n' % i for i in range(1, 5000))
            rest_written.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    it = iter_source(fifo)
    first = next(it)
    assert isinstance(first, Record) and first.fields == {"n": 0}
    assert not rest_written.is_set()
    go_on.set()
    assert sum(1 for _ in it) == 4999
    thread.join(timeout=10)


def test_large_jsonl_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with open(path, "wb") as f:
        for i in range(30_000):
            f.write(b'{"id": "r%d", "text": "%s"}\n' % (i, b"x" * 200))
    assert path.stat().st_size > 6_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_source(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30_000
    assert peak < 1_000_000, peak


# -- Parquet --------------------------------------------------------------------------------------


def test_parquet_file_streams_batches(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "data.parquet"
    table = pa.table(
        {"id": [f"r{i}" for i in range(3000)], "meta": [{"k": i} for i in range(3000)]}
    )
    pq.write_table(table, path, row_group_size=500)
    assert source_length(path) == 3000
    it = iter_source(path)
    first = next(it)
    assert isinstance(first, Record) and first.id == "r0" and first.fields["meta"] == {"k": 0}
    rest = records(it)
    assert len(rest) == 2999 and rest[-1].index == 2999


def test_parquet_written_by_the_sink_reads_back(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from mstudy.sinks.parquet import ParquetSink

    path = tmp_path / "out.parquet"
    rows = [{"id": f"r{i}", "text": f"t{i}", "extra": None} for i in range(5)]
    with ParquetSink(path, row_group_size=2) as sink:
        sink.write(rows)
    assert [r.fields for r in records(iter_source(path))] == rows


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "junk.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match=r"junk\.parquet"):
        list(iter_source(path))
    assert source_length(path) is None


def test_parquet_without_pyarrow_gives_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"x")
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r'pip install "mstudy\[parquet\]"'):
        iter_source(path)


def test_json_rows_match_the_file(tmp_path: Path) -> None:
    rows = [{"text": "x", "n": 1.5, "tags": ["a"], "nested": {"k": None}}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert [r.fields for r in records(iter_source(path))] == rows
