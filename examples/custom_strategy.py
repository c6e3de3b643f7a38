"""A strategy of your own in a few lines: the teacher writes a quiz question for each fact.

``TemplateStrategy`` renders a (sandboxed jinja2) template into a chat request and hands each
reply to ``check``, which returns the row's fields or a ``Reject`` with a reason that the
report counts. Run::

    python examples/custom_strategy.py --limit 6
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mstudy
from mstudy.text import first_line

FACTS = Path(__file__).parent / "data" / "facts.jsonl"


class Quiz(mstudy.TemplateStrategy):
    name = "quiz"
    version = "1"
    roles = ("text", "object")  # record fields the template uses
    system = "You write one short quiz question. Reply with the question only."
    template = "Fact: {{ text }}\nWrite a question whose answer is: {{ object }}"
    examples = (  # few-shot: (variables, ideal reply)
        ({"text": "Ada Byron wrote Orbit.", "object": "Orbit"}, "What did Ada Byron write?"),
    )

    def check(self, variables: Mapping[str, Any], text: str) -> dict[str, Any] | mstudy.Reject:
        question = first_line(text)
        if not question.endswith("?"):
            return mstudy.Reject("not a question", question[:80])
        if variables["object"].lower() in question.lower():
            return mstudy.Reject("gives the answer away", question[:80])
        return {"input": variables["text"], "text": question, "answer": variables["object"]}


def main() -> None:
    parser = argparse.ArgumentParser(description="Quiz questions with a custom strategy.")
    parser.add_argument("--limit", type=int, help="study only the first N facts")
    args = parser.parse_args()

    study = mstudy.Study("default", [Quiz(n=2, params={"max_new_tokens": 32, "seed": 0})])
    rows = list(study.iter(FACTS, limit=args.limit))
    print(study.last_report)
    for row in rows:
        print(f"{row.fields['text']}  ({row.fields['answer']})")
    assert rows and all(row.fields["text"].endswith("?") for row in rows)


if __name__ == "__main__":
    main()
