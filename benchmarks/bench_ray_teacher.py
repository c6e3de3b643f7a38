"""Throughput of a study whose teacher is a Ray actor pool, against one process.

A latency-bound teacher (the scripted teacher sleeping ``--delay`` seconds a request, as a
remote call waits) studies ``--records`` records with one strategy: once in one process, then
on a local Ray instance with 1, 2 and 4 actors. The table gives records/s and the ratio
against one actor, and the Ray mode's overhead per row against one process (1 actor).

    python benchmarks/bench_ray_teacher.py [--records 2000] [--delay 0.05] [--actors 1,2,4]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from harness.ray_teachers import sleepy  # noqa: E402

import mstudy  # noqa: E402
from mstudy.teachers.ray_pool import RayTeacher  # noqa: E402


def run(teacher: object, records: list[dict[str, str]], out: Path) -> float:
    study = mstudy.Study(
        teacher=teacher,
        strategies=[mstudy.Paraphrase()],
        sinks=[out / "rows.jsonl"],
        progress=False,
    )
    started = time.perf_counter()
    report = study.run(records)
    elapsed = time.perf_counter() - started
    assert report.records == len(records)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--actors", default="1,2,4")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    import ray

    records = [{"id": f"r{i}", "text": f"Entity {i} was founded in {1800 + i % 200}."}
               for i in range(args.records)]  # fmt: skip
    tests = str(HERE.parent / "tests")
    ray.init(
        num_cpus=8,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([tests, str(HERE.parent)])}},
    )
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        single = run(sleepy(args.delay), records, Path(tmp) / "single")
        rows.append(("one process", single))
        for count in [int(a) for a in args.actors.split(",")]:
            pool = RayTeacher(
                functools.partial(sleepy, args.delay),
                replicas=count,
                batch_size=args.batch_size,
                num_cpus=1,
            )
            _ = pool.fingerprint  # the actors start before the clock does
            rows.append((f"ray, {count} actor(s)", run(pool, records, Path(tmp) / f"r{count}")))
            pool.close()
    ray.shutdown()

    one_actor = next(t for name, t in rows if name == "ray, 1 actor(s)")
    print(
        f"{args.records} records, one strategy, teacher sleeping {args.delay * 1000:.0f} ms a "
        f"request, batch_size {args.batch_size}, {os.cpu_count()} CPUs"
    )
    print()
    print("| mode | seconds | records/s | vs 1 actor |")
    print("|---|---:|---:|---:|")
    for name, seconds in rows:
        rate = args.records / seconds
        print(f"| {name} | {seconds:.1f} | {rate:.1f} | {one_actor / seconds:.2f}x |")
    overhead = (one_actor - single) / args.records * 1000
    print()
    print(f"Ray mode overhead against one process (1 actor): {overhead:+.2f} ms a record")


if __name__ == "__main__":
    main()
