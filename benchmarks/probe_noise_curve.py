"""How the reversal probe's selection behaves for teachers of known error rates.

    python benchmarks/probe_noise_curve.py [--rates 0.1,0.2,0.4,0.6] [--facts 100]
        [--relations 5] [--seeds 2] [--epochs 80] [--world-seeds 0,1] [--out DIR]

A stand-in for teachers of other strengths: the ``rules`` teacher with a share ``rate`` of its
reversals replaced by *systematic* errors (:func:`mstudy.probes.noisy.noisy_rules_teacher`:
roles swapped, hallucinated clauses, rewordings the spec does not list; the same facts and
the same kind per relation in every round). For each rate and world seed it runs the whole
probe and prints, as a curve: precision in three parts (true / false / undecided) of all the
teacher's reversals and of the selected ones, the precision that the previous selection
(agreement across facts, after ``reverse_check`` and the swap filter) would have had on the
same replies, the yield, and the student's reverse accuracy with the selected reversals
against the rule ceiling. Results go to ``DIR/curve.json`` and ``DIR/curve.md``. This is a
measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from mstudy.filters.consistency import ReverseCheck
from mstudy.probes.noisy import noisy_rules_teacher
from mstudy.probes.prompts import probe_reverse
from mstudy.probes.reversal import run_probe
from mstudy.probes.rules import Candidate, SwapFilter, entities_by_id, group_key, select_consistent
from mstudy.probes.study_calls import records, run_study
from mstudy.probes.world import World
from mstudy.probes.world_generator import generate_world


def previous_selection(world: World, teacher: Any, samples: int) -> dict[str, float]:
    """Three-part precision of the previous pipeline on the same teacher's replies."""
    found: list[Candidate] = []
    chosen: dict[str, Candidate] = {}
    for round_ in range(samples):
        todo = [f for f in world.facts if f.id not in chosen]
        filters = [ReverseCheck(), SwapFilter(entities_by_id(world.facts))]
        strategy = probe_reverse(seed=round_, temperature=0.3 + 0.3 * round_, prefill=False)
        accepted, _, _ = run_study(teacher, strategy, filters, records(world, todo), False)
        by_id = {f.id: f for f in world.facts}
        for ex in accepted:
            fact = by_id[ex.source_id]
            found.append(Candidate(fact, ex.text, round_, group_key(world, fact)))
        chosen, _ = select_consistent(found)
    truth = Counter(world.reversal_truth(c.fact, c.text) for c in chosen.values())
    n = max(len(chosen), 1)
    return {
        "yield": len(chosen) / len(world.facts),
        **{f"{k}_rate": truth[k] / n for k in ("true", "false", "undecided")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0.1,0.2,0.4,0.6")
    parser.add_argument("--facts", type=int, default=100)
    parser.add_argument("--relations", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--world-seeds", default="0,1")
    parser.add_argument("--out", type=Path, default=Path("out/probe-noise-curve"))
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    world_seeds = [int(s) for s in args.world_seeds.split(",")]
    rows: list[dict[str, Any]] = []
    for rate in rates:
        for world_seed in world_seeds:
            world = generate_world(args.facts, args.relations, seed=world_seed)
            teacher = noisy_rules_teacher(world, rate, seed=world_seed)
            result = run_probe(
                teacher=teacher,
                world=world,
                world_seed=world_seed,
                seeds=args.seeds,
                epochs=args.epochs,
                samples=args.samples,
            )
            stats = result.teacher_stats
            teacher_acc = statistics.mean(result.condition("teacher_reversals").reverse)
            ceiling = statistics.mean(result.condition("rule_reversals").reverse)
            row = {
                "rate": rate,
                "world_seed": world_seed,
                "all": stats["all_reversals"],
                "selected": stats["selected"],
                "yield": stats["yield"],
                "previous_selection": previous_selection(world, teacher, args.samples),
                "reverse_acc": teacher_acc,
                "ceiling_acc": ceiling,
                "forward_only_acc": statistics.mean(result.condition("forward").reverse),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curve.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "| error rate | all: true / false / undecided | selected: true / false / undecided "
        "| yield | previous selection: true / false | student reverse acc (ceiling) |",
        "|---:|---|---|---:|---|---|",
    ]
    for rate in rates:
        group = [r for r in rows if r["rate"] == rate]

        def mean(get: Any, group: list[dict[str, Any]] = group) -> float:
            return statistics.mean(get(r) for r in group)

        def parts(key: str, group: list[dict[str, Any]] = group) -> str:
            return " / ".join(
                f"{statistics.mean(r[key][f'{k}_rate'] for r in group):.0%}"
                for k in ("true", "false", "undecided")
            )

        prev = " / ".join(
            f"{mean(lambda r, k=k: r['previous_selection'][f'{k}_rate']):.0%}"
            for k in ("true", "false")
        )
        lines.append(
            f"| {rate:.0%} | {parts('all')} | {parts('selected')} | "
            f"{mean(lambda r: r['yield']):.0%} | {prev} | "
            f"{mean(lambda r: r['reverse_acc']):.0%} ({mean(lambda r: r['ceiling_acc']):.0%}) |"
        )
    table = "\n".join(lines)
    (args.out / "curve.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
