"""The ``vllm`` teacher against vLLM's own ``LLM.chat`` on the same engine, prompts and params.

Both sides run on one engine (the teacher's), one after the other, so the figure is the
teacher's own overhead: rendering and tokenising each request, the step loop that streams
completions back, the bounded window. Target: >= 0.9x the raw output tokens per second.
Runs in vLLM's environment with this checkout on the path:

    PYTHONPATH=. .venv-vllm/bin/python benchmarks/bench_vllm_teacher.py
    PYTHONPATH=. .venv-vllm/bin/python benchmarks/bench_vllm_teacher.py --model DIR --prompts 256

Each request has its own seed (as mstudy's samples do); ``ignore_eos`` is off on both sides,
so both produce the same replies and the same number of tokens (checked).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from mstudy.records import GenerationParams, Message, Request
from mstudy.teachers.vllm import VLLMTeacher

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


def raw_chat(teacher: VLLMTeacher, requests: list[Request]) -> tuple[float, int, list[str]]:
    """vLLM's own ``LLM.chat`` with the same per-request params."""
    llm = teacher.llm
    conversations = [r.chat() for r in requests]
    params = [teacher.sampling_params(r) for r in requests]
    started = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return elapsed, tokens, [o.outputs[0].text for o in outputs]


def through_teacher(teacher: VLLMTeacher, requests: list[Request]) -> tuple[float, int, list[str]]:
    started = time.perf_counter()
    done = {c.key: c for c in teacher.generate(requests)}
    elapsed = time.perf_counter() - started
    assert all(c.ok for c in done.values()), [c.error for c in done.values() if not c.ok][:3]
    tokens = sum(c.completion_tokens for c in done.values())
    return elapsed, tokens, [done[r.key].text for r in requests]


def main() -> None:
    default_model = Path(os.environ.get("MSTUDY_VLLM_VENV", ".venv-vllm")) / "models" / "smollm2"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model))
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of each")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--max-model-len", type=int, default=1024)
    args = parser.parse_args()

    requests = make_requests(args.prompts, args.max_tokens)
    teacher = VLLMTeacher(
        args.model, dtype=args.dtype, max_model_len=args.max_model_len, enforce_eager=True
    )
    with teacher:
        started = time.perf_counter()
        teacher.load()
        print(f"engine started in {time.perf_counter() - started:.0f} s")
        through_teacher(teacher, make_requests(8, 8))  # warm-up
        rows: dict[str, list[tuple[float, int]]] = {"LLM.chat (raw)": [], "vllm teacher": []}
        texts: dict[str, list[str]] = {}
        for _ in range(args.rounds):
            for name, run in (("LLM.chat (raw)", raw_chat), ("vllm teacher", through_teacher)):
                elapsed, tokens, replies = run(teacher, requests)
                rows[name].append((elapsed, tokens))
                texts[name] = replies
    same = sum(a == b for a, b in zip(texts["LLM.chat (raw)"], texts["vllm teacher"], strict=True))
    rates: dict[str, float] = {}
    print(f"\n{args.prompts} prompts, max_new_tokens={args.max_tokens}, {args.rounds} round(s)")
    print(f"{'runner':<16} {'seconds':>8} {'out tokens':>10} {'out tok/s':>10}")
    for name, measured in rows.items():
        seconds = sum(e for e, _ in measured)
        tokens = sum(t for _, t in measured)
        rates[name] = tokens / seconds
        print(f"{name:<16} {seconds:>8.1f} {tokens:>10} {rates[name]:>10.1f}")
    ratio = rates["vllm teacher"] / rates["LLM.chat (raw)"]
    print(f"ratio teacher/raw: {ratio:.2f}x (target >= 0.9x)")
    print(f"identical replies: {same}/{args.prompts}")
    summary: dict[str, Any] = {"ratio": round(ratio, 3), "identical": same}
    print(summary)


if __name__ == "__main__":  # vLLM spawns its engine processes: a main guard is needed
    main()
