"""Loop overhead: rows/s of the Study loop with the scripted teacher, and of a cached re-run.

Four strategies, exact dedup, a JSONL sink. The baseline (1.00x) is a plain Python loop that
renders one f-string per output row and writes it as JSON, measured in the same run.

    python benchmarks/bench_loop.py --records 20000
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mstudy import ChainOfThought, Explain, Paraphrase, Reverse, ScriptedTeacher, Study

REPLIES = {
    "reverse": "{{ object }} is where {{ subject }} belongs.",
    "paraphrase": "Put another way: {{ text }}",
    "explain": "This says that {{ text }} It is worth remembering.",
    "cot": "1. Recall the fact.\nFinal answer: {{ answer }}",
}


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


def study(out: Path, cache: Path) -> Study:
    strategies = [Explain(), Reverse(), Paraphrase(), ChainOfThought()]
    return Study(ScriptedTeacher(REPLIES), strategies, ["dedup"], sinks=[out], cache=cache)


def baseline(n: int, out: Path) -> float:
    start = time.perf_counter()
    with open(out, "w") as handle:
        for row in rows(n):
            for kind in REPLIES:
                handle.write(json.dumps({"id": row["id"], "kind": kind, "text": row["text"]}))
                handle.write("\n")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    n = args.records
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = baseline(n, folder / "base.jsonl")
        cache = folder / "calls.sqlite"
        timings = []
        for label in ("study, scripted teacher", "study, cached re-run (0 calls)"):
            start = time.perf_counter()
            report = study(folder / "out.jsonl", cache).run(rows(n))
            timings.append((label, time.perf_counter() - start, report.accepted))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} records x 4 strategies; peak RSS {rss:.0f} MB")
    print("| run | seconds | output rows/s | vs baseline |")
    print("|---|---:|---:|---:|")
    base_rate = 4 * n / base
    print(f"| plain loop (baseline) | {base:.2f} | {base_rate:,.0f} | 1.00x |")
    for label, seconds, accepted in timings:
        rate = accepted / seconds
        print(f"| {label} | {seconds:.2f} | {rate:,.0f} | {rate / base_rate:.2f}x |")


if __name__ == "__main__":
    main()
