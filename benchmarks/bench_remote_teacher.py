"""Continuous window vs batch-and-wait against an OpenAI-compatible server (vLLM by default).

Batch-and-wait (the peers' approach) sends N requests, waits for the slowest, then sends the
next N. mstudy's RemoteTeacher keeps N in flight and refills the window as each returns. Both
use the same client here; only the scheduling differs. Replies vary in length (one-word
answers next to stories), as enrichment replies do.

    python benchmarks/bench_remote_teacher.py                 # starts vLLM from .venv-vllm
    python benchmarks/bench_remote_teacher.py --base-url http://127.0.0.1:8000/v1 --model m
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from mstudy.records import Completion, GenerationParams, Message, Request
from mstudy.teachers.remote import RemoteTeacher

PROMPTS = (
    "Answer with one word: what colour is the sky on a clear day?",
    "Write a short story about a lighthouse keeper.",
    "Is 17 a prime number? Answer yes or no.",
    "Explain step by step how photosynthesis works.",
    "Give the opposite of 'hot' in one word.",
    "Describe the history of the bicycle.",
    "What is 3 + 4? Reply with the number only.",
    "Write a poem about autumn leaves.",
)


def make_requests(count: int, max_tokens: int) -> list[Request]:
    params = GenerationParams(max_new_tokens=max_tokens, temperature=0.7, seed=0)
    return [
        Request(messages=(Message("user", PROMPTS[i % len(PROMPTS)]),), params=params, sample=i)
        for i in range(count)
    ]


def batch_and_wait(teacher: RemoteTeacher, requests: Sequence[Request], n: int) -> list[Completion]:
    out: list[Completion] = []
    for start in range(0, len(requests), n):
        out.extend(teacher.generate(requests[start : start + n]))  # waits for the slowest
    return out


def continuous(teacher: RemoteTeacher, requests: Sequence[Request], n: int) -> list[Completion]:
    return list(teacher.generate(requests))


def measure(
    runner: str, url: str, model: str, requests: Sequence[Request], n: int, repeats: int
) -> tuple[float, int]:
    """Median wall seconds and output tokens of ``repeats`` runs."""
    fn = batch_and_wait if runner == "batch-and-wait" else continuous
    walls: list[float] = []
    tokens = 0
    with RemoteTeacher(model, base_url=url, concurrency=n, timeout=600) as teacher:
        for _ in range(repeats):
            started = time.perf_counter()
            completions = fn(teacher, requests, n)
            walls.append(time.perf_counter() - started)
            bad = [c.error for c in completions if not c.ok]
            if bad:
                raise SystemExit(f"{len(bad)} requests failed, first: {bad[0]}")
            tokens = sum(c.completion_tokens for c in completions)
    return statistics.median(walls), tokens


@contextlib.contextmanager
def server(base_url: str | None) -> Iterator[str]:
    if base_url:
        yield base_url
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_teacher_vllm import vllm_missing, vllm_server

    reason = vllm_missing()
    if reason:
        raise SystemExit(f"{reason} (or pass --base-url)")
    print("starting vLLM ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with vllm_server(startup_timeout=300, dtype="bfloat16") as url:
        print(f"vLLM ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        yield url


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="a running server; default: start vLLM")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated window sizes")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.concurrency.split(",")]
    requests = make_requests(args.requests, args.max_tokens)

    with server(args.base_url) as url:
        measure("continuous", url, args.model, requests[:4], 4, 1)  # warm-up
        rows: list[tuple[str, int, float, int]] = []
        for n in sizes:
            for runner in ("batch-and-wait", "continuous"):
                wall, tokens = measure(runner, url, args.model, requests, n, args.repeats)
                rows.append((runner, n, wall, tokens))
                print(f"  {runner:<15} N={n:<3} {wall:6.2f} s", file=sys.stderr, flush=True)

    base_1 = next((tok / wall for r, n, wall, tok in rows if n == 1 and r == "continuous"), None)
    print(f"\n{args.requests} requests, max {args.max_tokens} new tokens, model {args.model!r}\n")
    header = f"| {'mode':<15} | {'N':>3} | {'wall s':>7} | {'out tok':>7} | {'tok/s':>6} |"
    header += " vs batch@N | vs N=1 |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for runner, n, wall, tokens in rows:
        batch = next(w for r, m, w, _ in rows if r == "batch-and-wait" and m == n)
        rate = tokens / wall
        vs_batch = f"{batch / wall:.2f}x"
        vs_one = f"{rate / base_1:.2f}x" if base_1 else "-"
        print(
            f"| {runner:<15} | {n:>3} | {wall:7.2f} | {tokens:>7} | {rate:6.1f} |"
            f" {vs_batch:>10} | {vs_one:>6} |"
        )
    print("\nvs batch@N: wall-time speed-up over batch-and-wait at the same N (same run).")


if __name__ == "__main__":
    main()
