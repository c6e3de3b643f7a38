"""Output tokens/s: one prompt at a time (as distilabel's TransformersLLM) vs TransformersTeacher.

Runs on the embedded SmolLM2-135M-Instruct (converted once into mstudy's cache) or on
``--model PATH``. Both modes share one loaded model, decode greedily with the same
``max_new_tokens`` and stop at end-of-sequence (``--stop`` adds stop strings to the teacher's
requests, not the baseline's); the table gives ratios against the baseline measured in the same
run. ``--repeat N`` times each batched mode N times and keeps the fastest (on a GPU the first
pass over new shapes pays for kernel selection).

    python benchmarks/bench_transformers_teacher.py [--model PATH] [--prompts 64]
        [--max-new-tokens 64] [--batch-sizes 8,32] [--dtype auto] [--device auto]
        [--baseline-prompts N] [--threads N] [--stop TEXT] [--repeat N]
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any

from mstudy.records import GenerationParams, Message, Request
from mstudy.teachers.transformers import TransformersTeacher

TOPICS = [
    "photosynthesis", "the water cycle", "gravity", "volcanoes", "the moon's phases",
    "rainbows", "magnets", "tides", "seasons", "earthquakes", "clouds", "lightning",
    "the heart", "vaccines", "DNA", "bees", "the printing press", "the internet",
]  # fmt: skip
FORMS = [
    "Explain {t} to a ten-year-old.",
    "Give two facts about {t}.",
    "Why is {t} important? Answer briefly.",
    "Write one sentence about {t}.",
]
PAIR_FORMS = ["Compare {t} and {u} in two sentences.", "How are {t} and {u} related?"]


def prompt_texts() -> list[str]:
    """684 distinct prompts: 72 about one topic, then 612 about a pair of topics."""
    single = [form.format(t=topic) for form in FORMS for topic in TOPICS]
    pairs = [form.format(t=t, u=u) for form in PAIR_FORMS for t in TOPICS for u in TOPICS if t != u]
    return single + pairs


def make_requests(count: int, max_new_tokens: int, stop: tuple[str, ...] = ()) -> list[Request]:
    texts = prompt_texts()
    if count > len(texts):
        raise SystemExit(f"--prompts can be at most {len(texts)}")
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=stop)
    return [Request((Message("user", text),), params) for text in texts[:count]]


def baseline(model: Any, tokenizer: Any, requests: list[Request], max_new: int) -> int:
    """One prompt at a time through ``model.generate``; returns output tokens."""
    import torch

    eos = tokenizer.eos_token_id
    total = 0
    for request in requests:
        text = tokenizer.apply_chat_template(
            request.chat(), add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = ids.to(model.device)
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new,
                do_sample=False,
                pad_token_id=eos,
            )
        generated = out[0, ids.shape[1] :].tolist()
        total += generated.index(eos) + 1 if eos in generated else len(generated)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model folder or hub id (default: embedded SmolLM2)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--repeat", type=int, default=1, help="best of N for batched modes")
    parser.add_argument(
        "--stop", action="append", default=[], help="a stop string for every request (repeatable)"
    )
    parser.add_argument(
        "--baseline-prompts", type=int, default=None, help="run the slow baseline on fewer"
    )
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        teacher = TransformersTeacher(args.model, dtype=args.dtype, device=args.device)
        label = args.model
    else:
        from mstudy.teachers.default import default_teacher

        teacher = default_teacher(dtype=args.dtype, device=args.device)
        label = teacher.model_id or "SmolLM2"
    teacher.load()
    model, tokenizer = teacher._model, teacher._tokenizer
    stop = tuple(text.encode().decode("unicode_escape") for text in args.stop)  # "\\n" -> newline
    requests = make_requests(args.prompts, args.max_new_tokens, stop)
    sizes = [int(s) for s in args.batch_sizes.split(",") if s]

    print(f"model: {label}  device: {teacher.device}  dtype: {teacher.dtype}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}; "
        f"{len(requests)} prompts, max_new_tokens={args.max_new_tokens}, greedy"
        + (f", stop={stop!r}" if stop else "")
    )
    # warm-up (first-call allocations), not timed
    list(TransformersTeacher(model, tokenizer=tokenizer, batch_size=2).generate(requests[:2]))

    cuda = teacher.device.startswith("cuda")
    rows: list[tuple[str, int, int, int, float, float]] = []

    def peak_mib() -> float:
        """Peak GPU memory since the last call (0 off CUDA), in MiB."""
        if not cuda:
            return 0.0
        peak = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        return peak

    peak_mib()
    base_requests = requests[: args.baseline_prompts or len(requests)]
    started = time.perf_counter()
    tokens = baseline(model, tokenizer, base_requests, args.max_new_tokens)
    elapsed = time.perf_counter() - started
    rows.append(("one at a time (baseline)", 1, len(base_requests), tokens, elapsed, peak_mib()))
    for size in sizes:
        batched = TransformersTeacher(model, tokenizer=tokenizer, batch_size=size)
        elapsed = float("inf")
        for _ in range(max(1, args.repeat)):
            started = time.perf_counter()
            done = list(batched.generate(requests))
            elapsed = min(elapsed, time.perf_counter() - started)
            assert len(done) == len(requests) and all(c.ok for c in done)
        rows.append(
            (
                "TransformersTeacher",
                size,
                len(done),
                sum(c.completion_tokens for c in done),
                elapsed,
                peak_mib(),
            )
        )

    # the box may be shared: measure the baseline again last and compare with the faster one
    started = time.perf_counter()
    tokens = baseline(model, tokenizer, base_requests, args.max_new_tokens)
    rows.append(
        (
            "one at a time (again, last)",
            1,
            len(base_requests),
            tokens,
            time.perf_counter() - started,
            peak_mib(),
        )
    )
    base_rate = max(rows[0][3] / rows[0][4], rows[-1][3] / rows[-1][4])
    print()
    memory = " peak GPU MiB |" if cuda else ""
    print(
        f"| {'mode':<27} | batch | prompts | out tokens | seconds |   tok/s | vs baseline |{memory}"
    )
    print(
        f"|{'-' * 29}|------:|--------:|-----------:|--------:|--------:|------------:|"
        + ("-------------:|" if cuda else "")
    )
    for mode, batch, prompts, out_tokens, seconds, peak in rows:
        rate = out_tokens / seconds
        print(
            f"| {mode:<27} | {batch:>5} | {prompts:>7} | {out_tokens:>10} | {seconds:>7.2f} "
            f"| {rate:>7.1f} | {rate / base_rate:>10.2f}x |"
            + (f" {peak:>12,.0f} |" if cuda else "")
        )
    print("(ratios are against the faster of the two baseline runs)")


if __name__ == "__main__":
    main()
