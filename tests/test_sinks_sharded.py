"""Sharded output: parts and a manifest, committed as a whole, the same for the same rows."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mstudy import SinkError
from mstudy.sinks.jsonl import JSONLSink
from mstudy.sinks.parquet import ParquetSink
from mstudy.sinks.sharded import MANIFEST, ManifestError, read_manifest, read_sharded

SINKS = {"jsonl": JSONLSink, "parquet": ParquetSink}
HARNESS = Path(__file__).parent / "harness" / "crash_study.py"


def write(path: Path, fmt: str, rows: list[dict[str, Any]], n: int, batch: int = 7) -> None:
    with SINKS[fmt](path, rows_per_shard=n, workers=3) as sink:
        for start in range(0, len(rows), batch):
            sink.write(rows[start : start + batch])


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
row = st.fixed_dictionaries(
    {"id": st.integers(0, 10**9), "text": text},
    optional={"score": st.none() | st.floats(allow_nan=False, allow_infinity=False)},
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fmt=st.sampled_from(["jsonl", "parquet"]),
    rows=st.lists(row, max_size=30),
    n=st.integers(1, 8),
    batches=st.tuples(st.integers(1, 9), st.integers(1, 9)),
)
def test_rows_round_trip_through_the_manifest_whatever_the_batches(
    tmp_path_factory: pytest.TempPathFactory,
    fmt: str,
    rows: list[dict[str, Any]],
    n: int,
    batches: tuple[int, int],
) -> None:
    base = tmp_path_factory.mktemp("sharded")
    write(base / "a", fmt, rows, n, batch=batches[0])
    write(base / "b", fmt, rows, n, batch=batches[1])
    # deterministic: the same rows give the same parts and manifest, whatever the batches
    assert snapshot(base / "a") == snapshot(base / "b")
    parts = read_manifest(base / "a", verify=True)
    assert len(parts) == math.ceil(len(rows) / n)
    assert [p.rows for p in parts] == [min(n, len(rows) - i * n) for i in range(len(parts))]
    manifest = json.loads((base / "a" / MANIFEST).read_text())
    assert manifest["total_rows"] == len(rows) and manifest["file_format"] == fmt
    got = list(read_sharded(base / "a"))
    if fmt == "parquet":  # a column some rows lack reads back as null in the others
        got = [{k: v for k, v in r.items() if k in rows[i]} for i, r in enumerate(got)]
    assert got == rows


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_big_strings_and_full_shards(tmp_path: Path, fmt: str) -> None:
    rows = [{"id": i, "text": chr(0x4E00 + i) * (1 << 20)} for i in range(6)]
    write(tmp_path / "out", fmt, rows, 3)  # exactly two full shards
    assert [p.rows for p in read_manifest(tmp_path / "out", verify=True)] == [3, 3]
    assert list(read_sharded(tmp_path / "out")) == rows


def test_no_rows_is_a_manifest_with_no_parts(tmp_path: Path) -> None:
    write(tmp_path / "out", "parquet", [], 4)
    assert read_manifest(tmp_path / "out") == []
    assert list(read_sharded(tmp_path / "out")) == []
    assert sorted(os.listdir(tmp_path / "out")) == [MANIFEST]


def test_parquet_shards_share_the_schema_of_all_rows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    rows = [{"id": i, "n": None if i < 4 else i, "tags": [] if i < 6 else ["x"]} for i in range(9)]
    write(tmp_path / "out", "parquet", rows, 3)
    schemas = {str(pq.read_schema(p.path)) for p in read_manifest(tmp_path / "out")}
    assert len(schemas) == 1  # the first shard's all-null column is int64 like the others'
    assert list(read_sharded(tmp_path / "out")) == rows


def test_a_part_that_disagrees_with_the_manifest_is_named(tmp_path: Path) -> None:
    write(tmp_path / "out", "jsonl", [{"i": i} for i in range(10)], 4)
    second = read_manifest(tmp_path / "out")[1].path
    second.write_bytes(second.read_bytes().replace(b"5", b"7"))
    with pytest.raises(ManifestError) as info:
        list(read_sharded(tmp_path / "out"))
    assert info.value.reason == "sha256_mismatch" and info.value.file == second
    assert str(second) in str(info.value)
    second.unlink()
    with pytest.raises(ManifestError) as missing:
        read_manifest(tmp_path / "out", verify=True)
    assert missing.value.reason == "missing_part" and missing.value.file == second
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    (tmp_path / "out" / MANIFEST).write_text(json.dumps({**manifest, "total_rows": 11}))
    with pytest.raises(ManifestError) as bad:
        read_manifest(tmp_path / "out")
    assert bad.value.reason == "bad_manifest" and bad.value.file is None
    (tmp_path / "out" / MANIFEST).unlink()
    with pytest.raises(ManifestError) as none:
        read_manifest(tmp_path / "out")
    assert none.value.reason == "missing_manifest" and none.value.file is None


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_failure_before_the_manifest_leaves_the_previous_output(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    old = [{"v": f"old {i}"} for i in range(7)]
    write(out, fmt, old, 3)
    before = snapshot(out)
    write(out, fmt, old, 3)  # the same rows again: the same parts, in place
    assert snapshot(out) == before
    import mstudy.sinks.sharded as sharded

    real = os.replace

    def failing(src: Any, dst: Any) -> None:
        if Path(dst).name == MANIFEST:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(sharded.os, "replace", failing)
    with pytest.raises(SinkError):
        write(out, fmt, [{"v": f"new {i}"} for i in range(8)], 3)
    assert snapshot(out) == before  # new parts removed, no staging left
    assert list(read_sharded(out)) == old
    monkeypatch.undo()
    write(out, fmt, [{"v": "new"}], 3)  # a later run replaces it cleanly
    assert list(read_sharded(out)) == [{"v": "new"}]
    assert len(os.listdir(out)) == 2


KILL_BEFORE_MANIFEST = """
import os, signal, sys
import mstudy.sinks.sharded as sharded
from mstudy.sinks.jsonl import JSONLSink
real = sharded.os.replace
def replace(src, dst):
    if os.path.basename(dst) == "manifest.json":
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
sharded.os.replace = replace
with JSONLSink(sys.argv[1], rows_per_shard=2) as sink:
    sink.write([{"v": "new"}] * 5)
"""


def test_a_run_killed_before_the_manifest_leaves_the_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out, "jsonl", [{"v": "old"}], 2)
    before = snapshot(out)
    proc = subprocess.run([sys.executable, "-c", KILL_BEFORE_MANIFEST, str(out)], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert len(os.listdir(out)) > len(before)  # the dead run's parts (and staging) are there
    assert list(read_sharded(out)) == [{"v": "old"}]  # ...but the manifest names the old ones
    write(out, "jsonl", [{"v": "next"}] * 3, 2)
    assert list(read_sharded(out)) == [{"v": "next"}] * 3
    assert sorted(os.listdir(out)) == sorted([MANIFEST, *(p.path.name for p in read_manifest(out))])


def test_options_that_need_a_sharded_output_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rows_per_shard"):
        JSONLSink(tmp_path / "a.jsonl", workers=2)
    with pytest.raises(ValueError, match="rows_per_shard"):
        ParquetSink(tmp_path / "a.parquet", executor="process")
    with pytest.raises(ValueError, match="executor must be"):
        JSONLSink(tmp_path / "d", rows_per_shard=2, executor="ray")
    with pytest.raises(ValueError, match="append"):
        JSONLSink(tmp_path / "b", rows_per_shard=2, append=True)
    with pytest.raises(ValueError, match="rows_per_shard must be"):
        ParquetSink(tmp_path / "c", rows_per_shard=0)


def test_the_parts_load_with_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [{"id": f"r{i}", "text": f"row {i} é"} for i in range(11)]
    for fmt, builder in (("jsonl", "json"), ("parquet", "parquet")):
        write(tmp_path / fmt, fmt, rows, 4)
        files = [str(p.path) for p in read_manifest(tmp_path / fmt, verify=True)]
        dataset = datasets.load_dataset(
            builder, data_files=files, split="train", cache_dir=str(tmp_path / "cache")
        )
        assert dataset.to_list() == rows


def test_a_toml_sink_table_writes_sharded_output(tmp_path: Path) -> None:
    from mstudy.config import load_config

    (tmp_path / "data.jsonl").write_text(
        "".join(
            json.dumps({"id": f"r{i}", "text": f"Fact number {i} is here."}) + "\n"
            for i in range(5)
        )
    )
    config = tmp_path / "study.toml"
    config.write_text(
        textwrap.dedent(
            """\
            [source]
            path = "data.jsonl"

            [teacher]
            name = "scripted"
            reply = "Said again: {{ text }}"

            [[strategies]]
            name = "paraphrase"

            [[sinks]]
            name = "parquet"
            path = "out/rows"
            rows_per_shard = 2
            workers = 2

            [run]
            progress = false
            """
        )
    )
    study, source = load_config(config).build()
    study.run(source)
    parts = read_manifest(tmp_path / "out" / "rows", verify=True)
    assert [p.rows for p in parts] == [2, 2, 1]
    manifest = json.loads((tmp_path / "out" / "rows" / MANIFEST).read_text())
    assert isinstance(manifest["study"], str) and len(manifest["study"]) == 64  # journaled
    rows = list(read_sharded(tmp_path / "out" / "rows"))
    assert [r["text"] for r in rows] == [f"Said again: Fact number {i} is here." for i in range(5)]


def test_a_killed_journaled_run_resumes_to_identical_shards(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    with open(data, "w") as handle:
        for i in range(600):
            row = {"id": f"r{i}", "text": f"Thing {i} rests in Place {i % 50}."}
            handle.write(json.dumps({**row, "subject": f"Thing {i}", "object": f"Place {i}"}))
            handle.write("\n")

    def args(out: Path, journal: Path, delay: str) -> list[str]:
        extra = ["--journal", str(journal), "--rows-per-shard", "97", "--delay", delay]
        return [sys.executable, str(HARNESS), str(data), str(out), *extra]

    clean = tmp_path / "clean"
    subprocess.run(args(clean, tmp_path / "j1", "0"), check=True, timeout=300)
    out = tmp_path / "out"
    kills = 0
    for wait in (0.8, 1.2, 1.6):
        proc = subprocess.Popen(args(out, tmp_path / "j2", "0.002"))
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    subprocess.run(args(out, tmp_path / "j2", "0"), check=True, timeout=300)
    assert kills >= 1
    for name in ("sharded-jsonl", "sharded-parquet"):
        assert snapshot(out / name) == snapshot(clean / name), name
        assert len(read_manifest(out / name, verify=True)) > 5


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_worker_processes_write_the_same_output_as_threads(tmp_path: Path, fmt: str) -> None:
    rows = [{"id": i, "n": None if i < 5 else i, "text": f"ü {i}" * (i % 7)} for i in range(23)]
    write(tmp_path / "threads", fmt, rows, 5)
    with SINKS[fmt](tmp_path / "procs", rows_per_shard=5, workers=2, executor="process") as sink:
        sink.write(rows)
    assert snapshot(tmp_path / "procs") == snapshot(tmp_path / "threads")


def test_rows_a_worker_process_cannot_receive_are_refused_by_shard(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path / "out", rows_per_shard=1, workers=2, executor="process")
    with pytest.raises(SinkError, match="shard 1 cannot be sent") as info:
        sink.write([{"ok": 1}, {"f": lambda: 0}])
    assert isinstance(info.value.__cause__, Exception)
    sink.abort()
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_the_manifest_names_the_study_with_or_without_a_journal(tmp_path: Path) -> None:
    import mstudy

    rows = [{"id": f"r{i}", "text": f"Fact number {i} is here."} for i in range(5)]
    labels = []
    for journal in (None, tmp_path / "journal"):
        out = tmp_path / ("journaled" if journal else "plain")
        study = mstudy.Study(
            mstudy.ScriptedTeacher(reply="Said again: {{ text }}"),
            ["paraphrase"],
            sinks=[mstudy.sinks.JSONLSink(out, rows_per_shard=2)],
            journal=journal,
            progress=False,
        )
        study.run(rows)
        labels.append(json.loads((out / MANIFEST).read_text())["study"])
    assert isinstance(labels[0], str) and len(labels[0]) == 64
    assert labels[0] == labels[1]
