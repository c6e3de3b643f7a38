"""Exact dedup's set: ``HashSet`` (bounded memory) against a Python ``set`` (the baseline).

Each cell runs in a fresh process: add N distinct random 64-bit keys, then look up 200,000
present and 200,000 absent ones. Rates count only the ``add`` / ``in`` loops (keys are made in
numpy chunks outside the timed loops, so the key list itself never sits in memory). Peak RSS
is the child's ``ru_maxrss``; "set memory" subtracts the RSS measured before the first add.

    python benchmarks/bench_dedup.py
    python benchmarks/bench_dedup.py --sizes 400000 4000000 --max-memory-mb 8
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np

from mstudy.filters.hashset import HashSet

CHUNK = 1 << 13
QUERIES = 200_000


def chunks(n: int, seed: int) -> Iterator[list[int]]:
    rng = np.random.default_rng(seed)
    for start in range(0, n, CHUNK):
        yield rng.integers(0, 2**64, min(CHUNK, n - start), dtype=np.uint64).tolist()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, n: int, max_memory_mb: float) -> None:
    stride = max(1, n // QUERIES)
    hits = [k for chunk in chunks(n, 1) for k in chunk[::stride]][:QUERIES]
    misses = [k for chunk in chunks(QUERIES, 2) for k in chunk]
    before = rss_mb()  # the query lists and one chunk of keys already made: not the set's
    s: set[int] | HashSet = set() if kind == "set" else HashSet(max_memory_mb)
    add_s = 0.0
    for keys in chunks(n, 1):
        add = s.add
        start = time.perf_counter()
        for key in keys:
            add(key)
        add_s += time.perf_counter() - start
    start = time.perf_counter()
    found = sum(1 for key in hits if key in s)
    hit_s = time.perf_counter() - start
    start = time.perf_counter()
    found += sum(1 for key in misses if key in s)
    miss_s = time.perf_counter() - start
    assert found == len(hits) and len(s) == n
    print(n / add_s, len(hits) / hit_s, len(misses) / miss_s, rss_mb(), before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[400_000, 4_000_000])
    parser.add_argument("--max-memory-mb", type=float, default=8)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.max_memory_mb)
        return
    print(f"HashSet(max_memory_mb={args.max_memory_mb:g}) vs set; one process per row")
    print(
        "| keys | set | add/s | `in` hit/s | `in` miss/s | peak RSS MB | set memory MB "
        "| bytes/key | add/s vs set | memory vs set |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        results = {}
        budget = str(args.max_memory_mb)
        for kind in ("set", "HashSet"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", kind, str(n), "--max-memory-mb", budget],
                check=True,
                capture_output=True,
                text=True,
            )
            results[kind] = [float(x) for x in done.stdout.split()]
        base = results["set"]
        for kind, (add, hit, miss, peak, before) in results.items():
            net, base_net = peak - before, base[3] - base[4]
            print(
                f"| {n:,} | {kind} | {add:,.0f} | {hit:,.0f} | {miss:,.0f} | {peak:.0f} "
                f"| {net:.1f} | {net * 2**20 / n:.1f} | {add / base[0]:.2f}x "
                f"| {net / base_net:.3f}x |"
            )


if __name__ == "__main__":
    main()
