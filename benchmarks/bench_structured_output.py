"""Structured output on the embedded SmolLM2: how many replies parse and validate, with and
without the constraint, and what the constraint costs in throughput.

A JSON-schema strategy (a person, a city and a year out of one sentence) runs over N records
on each teacher twice: constrained (``structured_output=True``: xgrammar for ``transformers``,
``response_format`` for the vLLM server) and free (the same prompts and schema, decoding left
alone). Each reply is checked as the parse step checks it (strict JSON, then the schema).

    python benchmarks/bench_structured_output.py                  # 200 records, both teachers
    python benchmarks/bench_structured_output.py --records 60 --no-vllm
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from mstudy._schema import check_reply
from mstudy.interfaces import Teacher
from mstudy.records import Record, Request
from mstudy.strategies.base import FewShot, TemplateStrategy

FIRST = ("Olaf", "Lena", "Ines", "Marta", "Tomas", "Aiko", "Ravi", "Noor", "Pavel", "Sofia")
LAST = ("Brandt", "Moreau", "Okafor", "Lindqvist", "Tanaka", "Haddad", "Novak", "Ferreira")
CITIES = ("Meridia", "Lyon", "Osaka", "Porto", "Graz", "Tampere", "Cusco", "Tartu", "Leeds")
VERBS = (
    "moved to {city} in {year}",
    "was born in {city} in {year}",
    "opened a shop in {city} in {year}",
)


class Move(TemplateStrategy):
    """Who, where and when, as JSON."""

    name = "move"
    system = 'Answer with JSON only: {"person": ..., "city": ..., "year": ...}.'
    template = "Sentence: {{ text }}"
    examples: ClassVar[Sequence[FewShot]] = (
        (
            {"text": "Marie Curie moved to Paris in 1891."},
            '{"person": "Marie Curie", "city": "Paris", "year": 1891}',
        ),
    )
    response_schema: ClassVar[Any] = {
        "type": "object",
        "properties": {
            "person": {"type": "string", "minLength": 1, "maxLength": 60},
            "city": {"type": "string", "minLength": 1, "maxLength": 40},
            "year": {"type": "integer"},
        },
        "required": ["person", "city", "year"],
        "additionalProperties": False,
    }


def records(count: int) -> list[Record]:
    out = []
    for i in range(count):
        person = f"{FIRST[i % len(FIRST)]} {LAST[(i // len(FIRST)) % len(LAST)]}"
        verb = VERBS[i % len(VERBS)].format(city=CITIES[i % len(CITIES)], year=1900 + (i * 7) % 120)
        out.append(Record.from_mapping({"id": str(i), "text": f"{person} {verb}."}))
    return out


def measure(teacher: Teacher, requests: list[Request]) -> dict[str, Any]:
    """Shares of valid replies and throughput, after one untimed warm-up request (which
    loads the model and, constrained, compiles the schema's grammar once)."""
    warm = Request(requests[0].messages, requests[0].params, sample=len(requests) + 1)
    list(teacher.generate([warm]))
    start = time.perf_counter()
    completions = list(teacher.generate(requests))
    elapsed = time.perf_counter() - start
    schema = requests[0].params.response_schema or ""
    parsed = valid = tokens = 0
    problems: Counter[str] = Counter()
    for completion in completions:
        tokens += completion.completion_tokens
        verdict = check_reply(schema, completion.text)
        valid += verdict.ok
        parsed += verdict.ok or not (verdict.problem or "").startswith("not JSON")
        if verdict.problem:
            # the kind of problem, without the reply's own values
            problems[re.sub(r"'[^']*'|\d+", "_", verdict.problem)[:60]] += 1
    n = len(requests)
    return {
        "top_problem": problems.most_common(1)[0][0] if problems else "",
        "parse": parsed / n,
        "valid": valid / n,
        "tok_s": tokens / elapsed,
        "replies_s": n / elapsed,
        "seconds": elapsed,
    }


@contextlib.contextmanager
def vllm_url() -> Iterator[str | None]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_teacher_vllm import vllm_missing, vllm_server

    reason = vllm_missing()
    if reason is not None:
        print(f"vLLM server skipped: {reason}")
        yield None
        return
    with vllm_server(startup_timeout=400, dtype="bfloat16") as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--no-vllm", action="store_true")
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    strategy = Move(params={"max_new_tokens": 48, "temperature": 0.7, "seed": 0})
    requests = [r for record in records(args.records) for r in strategy.requests(record)]
    rows: list[tuple[str, str, dict[str, Any]]] = []

    if not args.no_transformers:
        from mstudy.teachers.default import default_teacher

        for constrained in (True, False):
            teacher = default_teacher(batch_size=args.batch_size, structured_output=constrained)
            with teacher:
                teacher.load()
                rows.append(
                    (
                        "transformers",
                        "xgrammar" if constrained else "free",
                        measure(teacher, requests),
                    )
                )
            print(rows[-1], flush=True)
    if not args.no_vllm:
        from mstudy.teachers.remote import RemoteTeacher

        with vllm_url() as url:
            if url is not None:
                for constrained in (True, False):
                    teacher = RemoteTeacher(
                        "smollm2",
                        base_url=url,
                        concurrency=args.concurrency,
                        structured_output=constrained,
                    )
                    with teacher:
                        rows.append(
                            (
                                "vLLM server",
                                "response_format" if constrained else "free",
                                measure(teacher, requests),
                            )
                        )
                    print(rows[-1], flush=True)

    print(f"\n{args.records} records, max_new_tokens=48, temperature=0.7\n")
    print(
        "| teacher | decoding | parse as JSON | valid for the schema | output tok/s "
        "| replies/s | replies/s vs free | most common problem |"
    )
    print("|---|---|---|---|---|---|---|---|")
    free = {teacher: m for teacher, mode, m in rows if mode == "free"}
    for teacher, mode, m in rows:
        ratio = free[teacher]["seconds"] / m["seconds"] if teacher in free else float("nan")
        print(
            f"| {teacher} | {mode} | {m['parse']:.0%} | {m['valid']:.0%} | {m['tok_s']:.0f} | "
            f"{m['replies_s']:.2f} | {ratio:.2f}x | {m['top_problem'] or '-'} |"
        )


if __name__ == "__main__":
    main()
