"""Hugging Face ``datasets`` in and out, and a Hub-ready folder with a dataset card.

A ``datasets.Dataset`` is the source (here loaded from JSON Lines with ``load_dataset``; any
Hub dataset works the same), ``Study.to_dataset`` returns the accepted rows as a Dataset,
``save_to_disk`` keeps it, and :func:`mstudy.hub.save_for_hub` writes exactly what a push
uploads: Parquet data files, ``mstudy.json`` and a ``README.md`` card recording the teacher,
strategies, filters, provenance and the report. Run::

    python examples/hf_datasets.py --limit 4 --out /tmp/hf
    python examples/hf_datasets.py --push me/facts-studied   # needs `hf auth login` or HF_TOKEN
"""

from __future__ import annotations

import argparse
from pathlib import Path

import datasets

import mstudy
from mstudy import hub

FACTS = Path(__file__).parent / "data" / "facts.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description="Study a datasets.Dataset; save it for the Hub.")
    parser.add_argument("--limit", type=int, help="study only the first N records")
    parser.add_argument("--out", type=Path, default=Path("out/hf-datasets"))
    parser.add_argument("--push", metavar="REPO_ID", help="also push to this Hub dataset repo")
    parser.add_argument("--public", action="store_true", help="make a new Hub repo public")
    args = parser.parse_args()

    source = datasets.load_dataset(
        "json", data_files=str(FACTS), split="train", cache_dir=str(args.out / "cache")
    )
    if args.limit is not None:
        source = source.select(range(min(args.limit, len(source))))
    study = mstudy.Study(
        "default",
        [mstudy.Reverse(n=2, params={"max_new_tokens": 48, "seed": 0}), mstudy.Paraphrase()],
        filters=["length", "reverse_check", "dedup"],
    )
    studied = study.to_dataset(source)  # a datasets.Dataset of the accepted rows
    report = study.last_report
    print(report, studied, sep="\n")

    studied.save_to_disk(str(args.out / "dataset"))
    assert datasets.load_from_disk(str(args.out / "dataset")).to_list() == studied.to_list()

    folder = hub.save_for_hub(
        studied, study, report, args.out / "hub", license="apache-2.0", source=FACTS.name
    )
    print(f"\n{folder}/README.md:\n" + (folder / "README.md").read_text(encoding="utf-8")[:800])
    files = sorted(str(p) for p in folder.glob("data/*.parquet"))
    from_hub_folder = datasets.load_dataset(
        "parquet", data_files=files, split="train", cache_dir=str(args.out / "cache")
    )
    assert report is not None and len(studied) == report.accepted > 0
    assert from_hub_folder.to_list() == studied.to_list()

    if args.push:
        url = hub.push_to_hub(
            studied, study, report, args.push, private=not args.public, license="apache-2.0"
        )
        print(f"pushed: {url}")


if __name__ == "__main__":
    main()
