"""Training and scoring the students: one per condition and seed, in worker processes.

Every student is single-threaded and seeded, so its answers do not depend on how many train
at once or on how their processes started (:func:`start_method`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mstudy.probes.progress import Times, progress_bar, timer
from mstudy.probes.result import CONDITIONS, ConditionResult
from mstudy.probes.student import StudentConfig, WordTokenizer, answer_questions, train_student
from mstudy.probes.student_data import StudentData
from mstudy.text import normalize

__all__ = ["default_workers", "start_method", "train_conditions", "train_students"]


@dataclass(frozen=True)
class _Job:
    """One student to train and score (picklable, for worker processes)."""

    name: str
    seed: int
    texts: list[str]
    vocab_texts: list[str]
    prompts: list[str]
    config: StudentConfig
    max_len: int
    max_new_tokens: int = 8


def _run_job(job: _Job, queue: Any = None) -> tuple[list[str], float, float]:
    """Train and score one student; returns (answers, training seconds, CPU seconds).

    Epoch progress goes to ``queue`` (a multiprocessing queue) when given.
    """
    start, cpu = time.perf_counter(), time.process_time()
    tokenizer = WordTokenizer(job.vocab_texts)

    def on_epoch(epoch: int, loss: float) -> None:
        if queue is not None:
            queue.put((job.name, job.seed, loss))

    model = train_student(
        job.texts, tokenizer, job.config, seed=job.seed, max_len=job.max_len, on_epoch=on_epoch
    )
    trained = time.perf_counter() - start
    answers = answer_questions(
        model, tokenizer, job.prompts, max_new_tokens=job.max_new_tokens, threads=job.config.threads
    )
    return answers, trained, time.process_time() - cpu


def default_workers() -> int:
    """Students trained at once: one per core (up to 4) where ``fork`` exists, else 1.

    Each student uses one thread, which on a small CPU is 5-10x faster than two; two students
    side by side use both cores of a 2-core machine.
    """
    import multiprocessing
    import os

    if "fork" not in multiprocessing.get_all_start_methods() or sys.platform != "linux":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def train_students(
    texts: Mapping[str, Sequence[str]],
    prompts: Mapping[str, Sequence[str]],
    config: StudentConfig,
    *,
    seeds: int,
    workers: int | None = None,
    progress: bool = False,
    times: Times | None = None,
    max_new_tokens: int = 8,
) -> dict[tuple[str, int], tuple[list[str], float, float]]:
    """Train ``seeds`` fresh students per condition on ``texts[condition]`` and return each
    one's greedy answers to ``prompts[condition]``: ``(condition, seed) -> (answers, training
    seconds, CPU seconds)``.

    One word vocabulary covers every condition's texts and prompts. ``workers`` students train
    at once in worker processes (default :func:`default_workers`; forked, or spawned after
    this process used CUDA, see :func:`start_method`); every student is single-threaded and
    seeded, so its result does not depend on that.
    """
    times = times if times is not None else {}
    workers = default_workers() if workers is None else max(1, workers)
    vocab_texts = [t for group in texts.values() for t in group]
    vocab_texts += [p for group in prompts.values() for p in group]
    tokenizer = WordTokenizer(vocab_texts)
    longest = max(len(tokenizer.encode(t)) for t in vocab_texts)
    max_len = longest + 2 + max_new_tokens
    jobs = [
        _Job(
            name,
            seed,
            list(texts[name]),
            vocab_texts,
            list(prompts[name]),
            config,
            max_len,
            max_new_tokens,
        )
        for name in texts
        for seed in range(seeds)
    ]
    bar = progress_bar(progress, len(jobs) * config.epochs)
    outputs: dict[tuple[str, int], tuple[list[str], float, float]] = {}
    try:
        with timer(times, "students (train + score)") as clock:
            if workers == 1 or len(jobs) == 1:
                for job in jobs:
                    if bar is not None:
                        bar.set_description(f"student: {job.name}, seed {job.seed}")
                    queue = _BarQueue(bar)
                    outputs[(job.name, job.seed)] = _run_job(job, queue if bar else None)
            else:
                outputs = _run_parallel(jobs, workers, bar)
            wall = clock()
    finally:
        if bar is not None:
            bar.close()
    if workers > 1 and len(jobs) > 1:  # the children's CPU time, not this process's
        times["students (train + score)"]["cpu"] = sum(o[2] for o in outputs.values())
        times["students (train + score)"]["wall"] = wall
    return outputs


def train_conditions(
    data: StudentData,
    config: StudentConfig,
    *,
    seeds: int,
    workers: int | None = None,
    progress: bool = False,
    times: Times | None = None,
) -> list[ConditionResult]:
    """Train ``seeds`` fresh students per condition and score each on the held-out questions
    (see :func:`train_students`)."""
    prompts = [*data.prompts, *data.seen_prompts]
    outputs = train_students(
        {name: [*data.base, *extra] for name, extra in data.extra.items()},
        {name: prompts for name in data.extra},
        config,
        seeds=seeds,
        workers=workers,
        progress=progress,
        times=times,
    )
    gold = [*data.gold, *data.seen_gold]
    n, m = len(data.prompts) // 2, len(data.seen_prompts) // 2
    results: list[ConditionResult] = []
    for name, extra in data.extra.items():
        result = ConditionResult(name, CONDITIONS[name], len(extra), len(data.base) + len(extra))
        for seed in range(seeds):
            answers, trained, _ = outputs[(name, seed)]
            result.train_seconds.append(round(trained, 2))
            ok = [_correct(a, g) for a, g in zip(answers, gold, strict=True)]
            result.forward.append(sum(ok[:n]) / n)
            result.reverse.append(sum(ok[n : 2 * n]) / n)
            seen = ok[2 * n :]
            result.seen_forward.append(sum(seen[:m]) / max(m, 1))
            result.seen_reverse.append(sum(seen[m:]) / max(m, 1))
        results.append(result)
    return results


class _BarQueue:
    """A stand-in for a queue that advances the progress bar directly (one process)."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def put(self, item: tuple[str, int, float]) -> None:
        self.bar.set_postfix(loss=f"{item[2]:.3f}", refresh=False)
        self.bar.update(1)


def start_method() -> str:
    """How student processes start: ``fork`` (quick), unless this process has used CUDA (a
    teacher on a GPU), which a forked child cannot use or even seed: then ``spawn``."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "spawn"
    return "fork"


def _run_parallel(
    jobs: list[_Job], workers: int, bar: Any
) -> dict[tuple[str, int], tuple[list[str], float, float]]:
    """Run the jobs in ``workers`` processes, relaying epoch progress to ``bar``."""
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import ProcessPoolExecutor, wait

    context = multiprocessing.get_context(start_method())
    outputs: dict[tuple[str, int], tuple[list[str], float, float]] = {}
    with context.Manager() as manager:
        progress_queue = manager.Queue() if bar is not None else None
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_run_job, job, progress_queue): job for job in jobs}
            pending = set(futures)
            if bar is not None:
                bar.set_description(f"students ({workers} at a time)")
            while pending:
                done, pending = wait(pending, timeout=0.2)
                while progress_queue is not None:
                    try:
                        name, seed, loss = progress_queue.get_nowait()
                    except queue_module.Empty:
                        break
                    bar.set_postfix(last=f"{name}/{seed}", loss=f"{loss:.3f}", refresh=False)
                    bar.update(1)
                for future in done:
                    job = futures[future]
                    outputs[(job.name, job.seed)] = future.result()
    return outputs


def _correct(answer: str, gold: set[str]) -> bool:
    got = normalize(answer)
    return bool(got) and any(got == normalize(g) for g in gold)
