"""Sharded sinks against one file: the same rows to ``JSONLSink``/``ParquetSink`` at one path,
then to a sharded output (``rows_per_shard``) with 1 writer thread, ``--workers`` threads and
``--workers`` processes (``executor="process"``, spawned inside the timed cell).

Rows look like a study's accepted rows (an id, the input, the teacher's text, a provenance
struct). Each cell writes all rows in chunks of 256 (as a run does), closes the sink
(``fsync`` included) and is timed end to end; the best of ``--repeat`` rounds counts
(the cells take turns, so a busy spell on a shared machine slows every cell). Ratios are
against the one-file sink of the same format, in the same process.

    python benchmarks/bench_sharded_sink.py
    python benchmarks/bench_sharded_sink.py --rows 200000 --rows-per-shard 25000 --workers 4
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mstudy.sinks.jsonl import JSONLSink
from mstudy.sinks.parquet import ParquetSink

SINKS: dict[str, Any] = {"jsonl": JSONLSink, "parquet": ParquetSink}


def make_rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{i}-reverse-0",
            "input": f"Thing {i} rests in Place {i % 997}, next to the old mill by the river.",
            "text": f"Place {i % 997} holds Thing {i}; it is the one next to the old mill. " * 2,
            "strategy": "reverse",
            "provenance": {"source_id": f"r{i}", "generation": 1, "teacher": "scripted:abc"},
        }
        for i in range(n)
    ]


def cell(fmt: str, rows: list[dict[str, Any]], path: Path, **options: Any) -> float:
    began = time.perf_counter()
    with SINKS[fmt](path, **options) as sink:
        for start in range(0, len(rows), 256):
            sink.write(rows[start : start + 256])
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rows-per-shard", type=int, default=25_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    shards = -(-args.rows // args.rows_per_shard)
    print(f"{args.rows} rows, {shards} shards of {args.rows_per_shard}, {os.cpu_count()} CPUs")
    print(f"{'format':8} {'output':28} {'seconds':>8} {'rows/s':>10} {'vs one file':>11}")
    cases: list[tuple[str, str, dict[str, Any]]] = []
    sharded = {"rows_per_shard": args.rows_per_shard}
    for fmt in SINKS:
        cases += [
            (fmt, "one file", {}),
            (fmt, f"{shards} shards, 1 thread", {**sharded, "workers": 1}),
            (fmt, f"{shards} shards, {args.workers} threads", {**sharded, "workers": args.workers}),
            (
                fmt,
                f"{shards} shards, {args.workers} processes",
                {**sharded, "workers": args.workers, "executor": "process"},
            ),
        ]
    best = [float("inf")] * len(cases)
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.repeat):  # round robin: a busy spell slows every cell
            for i, (fmt, _, options) in enumerate(cases):
                path = Path(tmp) / f"{fmt}-{n}-{i}" / ("out" if options else f"out.{fmt}")
                best[i] = min(best[i], cell(fmt, rows, path, **options))
                shutil.rmtree(path.parent)
    base: dict[str, float] = {}
    for (fmt, label, _), seconds in zip(cases, best, strict=True):
        base.setdefault(fmt, seconds)
        print(
            f"{fmt:8} {label:28} {seconds:8.2f} {args.rows / seconds:10,.0f} "
            f"{base[fmt] / seconds:10.2f}x"
        )


if __name__ == "__main__":
    main()
