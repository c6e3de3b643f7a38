"""Real documents in, training data out: a folder of HTML pages (by default the Python
tutorial that Debian's ``python3.11-doc`` installs) is chunked by the teacher's tokenizer,
the embedded SmolLM2 teacher paraphrases and explains each chunk, and the accepted rows are
written as the full rows and as TRL ``messages`` JSON Lines, which ``datasets`` loads for
``SFTTrainer``. Run::

    python examples/documents_to_sft.py --limit 2 --out out/docs

``--docs FOLDER`` takes any folder of .txt, .md, .html and .pdf files; ``--teacher scripted``
runs without a model (to see the data path in a second). ``mstudy export`` writes the same
rows in other formats afterwards.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mstudy
from mstudy.interfaces import TokenCounter
from mstudy.sinks import MessagesSink

PYTHON_TUTORIAL = Path("/usr/share/doc/python3.11/html/tutorial")


def main() -> None:
    parser = argparse.ArgumentParser(description="Documents -> chunks -> studied -> SFT data.")
    parser.add_argument("--docs", type=Path, default=PYTHON_TUTORIAL, help="a file or folder")
    parser.add_argument("--limit", type=int, default=2, help="study the first N chunks")
    parser.add_argument("--max-tokens", type=int, default=160, help="tokens per chunk")
    parser.add_argument("--teacher", choices=["default", "scripted"], default="default")
    parser.add_argument("--out", type=Path, default=Path("out/docs"))
    args = parser.parse_args()

    if args.teacher == "scripted":
        teacher: mstudy.Teacher = mstudy.ScriptedTeacher(
            "Put simply, the passage on {{ text.split()[0] }} shows how this part of Python works."
        )
    else:
        teacher = mstudy.default_teacher()
    # The teacher counts tokens with its own tokenizer when it has one (the default does).
    tokenizer = teacher if isinstance(teacher, TokenCounter) else None
    source = mstudy.Documents(
        args.docs, max_tokens=args.max_tokens, overlap=20, tokenizer=tokenizer
    )
    print(f"{len(source.files())} documents in {args.docs}; tokens: {source.tokens_counted_by}")

    params = {"max_new_tokens": 64, "seed": 0}
    train = MessagesSink(args.out / "train-messages.jsonl", keep=["id"])
    study = mstudy.Study(
        teacher,
        [mstudy.Explain(params=params), mstudy.Paraphrase(params=params)],
        sinks=[args.out / "rows.jsonl", train],
        rejects=args.out / "rejects.jsonl",
    )
    report = study.run(source, limit=args.limit)
    print(report)

    rows = [json.loads(line) for line in (args.out / "rows.jsonl").read_text().splitlines()]
    messages = [json.loads(line) for line in train.path.read_text().splitlines()]
    print(f"{len(rows)} rows, {len(messages)} training conversations in {train.path}")
    assert report.records > 0 and len(messages) == len(rows) == report.accepted
    assert all(m["messages"][-1]["role"] == "assistant" for m in messages)
    assert {m["id"] for m in messages} == {r["id"] for r in rows}
    if messages:
        print(json.dumps(messages[0], ensure_ascii=False, indent=1)[:600])


if __name__ == "__main__":
    main()
