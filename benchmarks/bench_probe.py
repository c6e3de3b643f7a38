"""Wall time of ``mstudy probe reversal`` at its default size, stage by stage.

The README promises that the probe runs on the embedded SmolLM2 teacher in under 5 minutes on
2 CPU cores. This script runs exactly what the command runs (same defaults, unless overridden)
and prints the time of each stage, wall and CPU, plus the machine's load average before and
after: on a shared machine other processes slow every stage, and the CPU column shows how
much of the wall time was this process's own work.

    python benchmarks/bench_probe.py [--teacher default] [--facts N] [--seeds N]
        [--epochs N] [--samples N] [--world-dir DIR] [--world-seed N] [--out DIR]
        [--budget 300]

``--world-dir`` measures a world of your own (``benchmarks/make_probe_worlds.py`` writes
several unlike the built-in one); given a relation spec instead of a folder
(``--world-dir benchmarks/probe_worlds/guild.toml``), the script first makes a world from it
as ``make_probe_worlds.py`` does (``--facts`` facts, seed ``--world-seed``) under
``--out``/world. ``report.json`` and the other outputs go to ``--out``.

Exit status 0 when the total wall time is within ``--budget`` seconds, 1 otherwise. This is a
measurement, not a test: CI does not time it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from mstudy.probes.outputs import write_outputs
from mstudy.probes.reversal import DEFAULTS, run_probe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=DEFAULTS["teacher"])
    parser.add_argument("--facts", type=int, default=DEFAULTS["facts"])
    parser.add_argument("--relations", type=int, default=DEFAULTS["relations"])
    parser.add_argument("--seeds", type=int, default=DEFAULTS["seeds"])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--samples", type=int, default=DEFAULTS["samples"])
    parser.add_argument("--world-dir", type=Path, default=None)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="teacher call cache")
    parser.add_argument("--out", type=Path, default=Path("out/bench-probe"))
    parser.add_argument("--budget", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()

    world_dir = args.world_dir
    if world_dir is not None and world_dir.is_file():  # a relation spec: make its world first
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from make_probe_worlds import make_world

        world_dir = make_world(
            world_dir, args.out / "world", facts=args.facts, seed=args.world_seed
        )
        print(f"world: {world_dir}")

    load_before = os.getloadavg()
    start, cpu = time.perf_counter(), time.process_time()
    result = run_probe(
        teacher=args.teacher,
        facts=args.facts,
        relations=args.relations,
        seeds=args.seeds,
        epochs=args.epochs,
        samples=args.samples,
        world_dir=world_dir,
        world_seed=args.world_seed,
        cache=args.cache,
        progress=not args.quiet,
    )
    total, total_cpu = time.perf_counter() - start, time.process_time() - cpu
    load_after = os.getloadavg()
    write_outputs(result, args.out)

    print(result.table())
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"{'stage':<22}{'wall s':>9}{'cpu s':>9}")
    for stage, t in result.times.items():
        print(f"{stage:<22}{t['wall']:>9.1f}{t['cpu']:>9.1f}")
    print(f"{'total (this process)':<22}{total:>9.1f}{total_cpu:>9.1f}")
    verdict = "within" if total <= args.budget else "OVER"
    print(f"{verdict} the {args.budget:.0f} s budget")
    (args.out / "bench.json").write_text(
        json.dumps(
            {
                "total_wall_s": round(total, 1),
                "total_cpu_s": round(total_cpu, 1),
                "load_before": load_before,
                "load_after": load_after,
                "budget_s": args.budget,
                "stages": result.times,
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if total <= args.budget else 1


if __name__ == "__main__":
    raise SystemExit(main())
