"""Loop overhead: output rows/s of the Study loop with the scripted teacher, and of re-runs.

Four strategies, exact dedup, a JSONL sink, on one core. The baseline (1.00x) is a plain
Python loop that renders one f-string per output row and writes it as JSON, measured in the
same run. Rows:

* no cache: the loop alone (render, call the scripted teacher, parse, filter, write);
* first run, writing a cache: the same plus storing every call and every record's outcome;
* cached re-run: the same study again on that cache (0 teacher calls, outcomes read back);
* cached re-run, changed filter: a length filter added, so outcomes are read back and only
  the filtering is redone.

An untimed warm-up run of 500 records (with a cache of its own) comes first, so that one-time
costs such as imports are not charged to the first timed run. Each run is timed ``--repeat``
times (default 3, each round with a new cache) and the best time is kept, as ``timeit`` does:
on a shared machine the slower rounds measure the neighbours.

``--rss`` instead runs the no-cache study in fresh processes at each ``--sizes`` and prints
their peak RSS (memory must stay flat as the input grows). ``--parts`` splits a cached re-run's
time per row: the same re-run without ``dedup``, without the JSONL sink, and without both.

    python benchmarks/bench_loop.py --records 20000 [--repeat 3]
    python benchmarks/bench_loop.py --rss --sizes 100000 1000000
    python benchmarks/bench_loop.py --parts [--records 20000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mstudy import (
    ChainOfThought,
    Explain,
    LengthFilter,
    Paraphrase,
    Reverse,
    ScriptedTeacher,
    Study,
)

REPLIES = {
    "reverse": "{{ object }} is where {{ subject }} belongs.",
    "paraphrase": "Put another way: {{ text }}",
    "explain": "This says that {{ text }} It is worth remembering.",
    "cot": "1. Recall the fact.\nFinal answer: {{ answer }}",
}


WARM_UP = 500


def rows(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {
            "id": str(i),
            "text": f"Item {i} is kept in Room {i}.",
            "subject": f"Item {i}",
            "object": f"Room {i}",
            "question": f"Where is item {i} kept?",
            "answer": f"Room {i}",
        }


def study(out: Path | None, cache: Path | None, filters: list[Any] | None = None) -> Study:
    strategies = [Explain(), Reverse(), Paraphrase(), ChainOfThought()]
    teacher = ScriptedTeacher(REPLIES)
    filters = ["dedup"] if filters is None else filters
    return Study(teacher, strategies, filters, sinks=[out] if out else [], cache=cache)


def baseline(n: int, out: Path) -> float:
    start = time.perf_counter()
    with open(out, "w") as handle:
        for row in rows(n):
            for kind in REPLIES:
                handle.write(json.dumps({"id": row["id"], "kind": kind, "text": row["text"]}))
                handle.write("\n")
    return time.perf_counter() - start


def throughput(n: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = min(baseline(n, folder / "base.jsonl") for _ in range(repeat))
        # one-time costs (imports such as numpy for dedup, first-use set-up) are paid by an
        # untimed warm-up run, so each timed run measures the loop itself
        study(folder / "warm.jsonl", folder / "warm.sqlite").run(rows(WARM_UP))
        timings: dict[str, tuple[float, int, int]] = {}
        for attempt in range(repeat):
            cache = folder / f"calls-{attempt}.sqlite"  # each first run writes a new cache
            runs: list[tuple[str, Path | None, list[Any] | None]] = [
                ("study, no cache", None, None),
                ("study, first run writing a cache", cache, None),
                ("study, cached re-run (0 calls)", cache, None),
                ("study, cached re-run, length filter added", cache, ["dedup", LengthFilter()]),
            ]
            for label, cache_path, filters in runs:
                start = time.perf_counter()
                report = study(folder / "out.jsonl", cache_path, filters).run(rows(n))
                seconds = time.perf_counter() - start
                calls = sum(s.completions - s.cached for s in report.strategies.values())
                if label not in timings or seconds < timings[label][0]:
                    timings[label] = (seconds, report.accepted, calls)
    print(f"{n} records x 4 strategies, one process, best of {repeat}")
    print("| run | seconds | output rows/s | teacher calls | vs baseline |")
    print("|---|---:|---:|---:|---:|")
    base_rate = 4 * n / base
    print(f"| plain loop (baseline) | {base:.2f} | {base_rate:,.0f} | - | 1.00x |")
    for label, (seconds, accepted, calls) in timings.items():
        rate = accepted / seconds
        print(f"| {label} | {seconds:.2f} | {rate:,.0f} | {calls:,} | {rate / base_rate:.2f}x |")


def parts(n: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        study(folder / "warm.jsonl", folder / "warm.sqlite").run(rows(WARM_UP))
        cache = folder / "calls.sqlite"
        study(folder / "out.jsonl", cache).run(rows(n))  # fills the cache
        runs: list[tuple[str, Path | None, list[Any]]] = [
            ("cached re-run (dedup, JSONL sink)", folder / "out.jsonl", ["dedup"]),
            ("without dedup", folder / "out.jsonl", []),
            ("without the sink", None, ["dedup"]),
            ("without both", None, []),
        ]
        best: dict[str, float] = {}
        for _ in range(repeat):
            for label, out, filters in runs:
                start = time.perf_counter()
                study(out, cache, filters).run(rows(n))
                best[label] = min(best.get(label, float("inf")), time.perf_counter() - start)
    full = best[runs[0][0]] / (4 * n) * 1e6
    print(f"{n} records x 4 strategies, cached re-runs, one process, best of {repeat}")
    print("| run | µs per output row | output rows/s | vs full |")
    print("|---|---:|---:|---:|")
    for label, seconds in best.items():
        per_row = seconds / (4 * n) * 1e6
        print(f"| {label} | {per_row:.1f} | {4 * n / seconds:,.0f} | {per_row / full:.2f}x |")


def peak_rss(sizes: list[int]) -> None:
    print("| records | output rows | seconds | peak RSS (MB) | vs smallest |")
    print("|---:|---:|---:|---:|---:|")
    first = None
    for n in sizes:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(n)],
            check=True,
            capture_output=True,
            text=True,
        )
        accepted, seconds, rss = done.stdout.split()
        first = first or float(rss)
        print(
            f"| {n:,} | {int(accepted):,} | {float(seconds):.1f} | {float(rss):.0f} "
            f"| {float(rss) / first:.2f}x |"
        )


def child(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = study(Path(tmp) / "out.jsonl", None).run(rows(n))
        seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(report.accepted, seconds, rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="time each run N times, keep the best"
    )
    parser.add_argument("--rss", action="store_true", help="peak RSS at each of --sizes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--parts", action="store_true", help="split a cached re-run's time")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
    elif args.rss:
        peak_rss(args.sizes)
    elif args.parts:
        parts(args.records, max(1, args.repeat))
    else:
        throughput(args.records, max(1, args.repeat))


if __name__ == "__main__":
    main()
