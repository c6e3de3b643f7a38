"""A local transformers model as the teacher: a Hugging Face Hub id or a folder on disk.

Any causal LM with a chat template works; ``--dtype``, ``--device`` and ``--batch-size`` are the
knobs that matter for speed (bf16 and large batches on a GPU; fp32 and batch 16-32 on a CPU).
Run::

    python examples/local_model.py       # HuggingFaceTB/SmolLM2-135M-Instruct from the Hub
    python examples/local_model.py --model ./my-model --dtype bfloat16 --device cuda \\
        --batch-size 64 --limit 100

Accepted rows go to Parquet, with the teacher's fingerprint in every row's provenance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mstudy

FACTS = Path(__file__).parent / "data" / "facts.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description="Study facts with a local transformers model.")
    parser.add_argument(
        "--model",
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        help="a Hub model id or a local folder (default: %(default)s)",
    )
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps, ...")
    parser.add_argument("--batch-size", type=int, default=16, help="requests per forward batch")
    parser.add_argument("--limit", type=int, help="study only the first N facts")
    parser.add_argument("--out", type=Path, default=Path("out/local-model"))
    args = parser.parse_args()

    teacher = mstudy.TransformersTeacher(
        args.model, dtype=args.dtype, device=args.device, batch_size=args.batch_size
    )
    study = mstudy.Study(
        teacher,
        [mstudy.Reverse(n=2, params={"max_new_tokens": 48, "seed": 0}), "paraphrase"],
        filters=["length", "reverse_check", "dedup"],
        sinks=[args.out / "enriched.parquet"],
    )
    report = study.run(FACTS, limit=args.limit)
    print(report)
    print(teacher)  # device and dtype as resolved from "auto"

    import pyarrow.parquet as pq

    table = pq.read_table(args.out / "enriched.parquet")
    for row in table.slice(0, 4).to_pylist():
        print(f"{row['strategy']:>10}  {row['text']}")
    assert report.status == "done" and table.num_rows == report.accepted > 0
    teachers = {p["teacher"] for p in table.column("provenance").to_pylist()}
    assert teachers == {teacher.fingerprint}, teachers


if __name__ == "__main__":
    main()
