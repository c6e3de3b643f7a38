"""Write worlds unlike the built-in one, for measuring the reversal probe (``--world-dir``).

    python benchmarks/make_probe_worlds.py OUT_DIR [--facts 100] [--seed 0]

For each relation spec in ``benchmarks/probe_worlds/*.toml`` (two-word names, a
person-to-person relation, articles in inverse templates, relation types the built-in world
does not use) it writes ``OUT_DIR/<name>/relations.toml`` and ``facts.jsonl``: ``--facts``
facts spread evenly over the relations, every entity a fresh two-word invented name. These
worlds are for measurement only: no test expects anything of them.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from mstudy.probes.common import invented_name
from mstudy.probes.templates import words
from mstudy.probes.world_files import load_relations, load_world

SPECS = Path(__file__).parent / "probe_worlds"


def make_world(spec: Path, out: Path, *, facts: int, seed: int) -> Path:
    relations, _ = load_relations(spec)
    reserved: set[str] = set()
    for r in relations.values():
        for t in (r.forward, r.inverse, r.forward_question, r.reverse_question,
                  *r.inverse_forms, *r.paraphrases):  # fmt: skip
            reserved |= words(t)
    rng = random.Random(seed)
    used: set[str] = set()

    def part() -> str:
        while True:
            name = invented_name(rng)
            folded = name.casefold()
            if any(folded in r for r in reserved) or any(folded in u or u in folded for u in used):
                continue
            used.add(folded)
            return name

    names = list(relations)
    folder = out / spec.stem
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(spec, folder / "relations.toml")
    with (folder / "facts.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(facts):
            row = {
                "id": f"{spec.stem}{i:04d}",
                "subject": f"{part()} {part()}",
                "relation": names[i % len(names)],
                "object": f"{part()} {part()}",
            }
            fh.write(json.dumps(row) + "\n")
    load_world(folder, seed=seed)  # every check a user's world gets
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--facts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for spec in sorted(SPECS.glob("*.toml")):
        print(make_world(spec, args.out, facts=args.facts, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
