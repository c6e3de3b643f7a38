"""RemoteTeacher's adaptive window and several servers against real vLLM servers (CPU build).

Slow tier, as tests/test_teacher_vllm.py (whose server helpers it uses): skipped without the
vLLM environment unless ``MSTUDY_REQUIRE_VLLM=1``. Two servers at once need about 9 GB.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_teacher_vllm import SERVED_NAME, vllm_missing, vllm_server

from mstudy.records import GenerationParams, Message, Request
from mstudy.teachers.remote import Concurrency, RemoteTeacher

pytestmark = pytest.mark.slow

PROMPTS = (
    "Answer with one word: what colour is the sky on a clear day?",
    "Write a short story about a lighthouse keeper.",
    "Is 17 a prime number? Answer yes or no.",
    "Explain step by step how photosynthesis works.",
    "Describe the history of the bicycle.",
    "Write a poem about autumn leaves.",
)


def requests(count: int, offset: int = 0, tokens: int = 32) -> list[Request]:
    params = GenerationParams(max_new_tokens=tokens, temperature=0.7, seed=1)
    return [
        Request(messages=(Message("user", PROMPTS[i % len(PROMPTS)]),), params=params, sample=i)
        for i in range(offset, offset + count)
    ]


def throughput(teacher: RemoteTeacher, batch: list[Request]) -> float:
    """Output tokens a second over ``batch``; the teacher's counts start afresh."""
    teacher.endpoint_stats(reset=True)
    started = time.monotonic()
    completions = list(teacher.generate(batch))
    elapsed = time.monotonic() - started
    assert all(c.ok for c in completions), [c.error for c in completions if not c.ok][:3]
    return sum(c.completion_tokens for c in completions) / elapsed


def fixed(url: list[str] | str, window: Concurrency, batch: list[Request]) -> float:
    with RemoteTeacher(SERVED_NAME, base_url=url, concurrency=window, timeout=600) as teacher:
        return throughput(teacher, batch)


@pytest.fixture(scope="module")
def vllm_url() -> Iterator[str]:
    reason = vllm_missing()
    if reason is not None:
        if os.environ.get("MSTUDY_REQUIRE_VLLM") == "1":
            pytest.fail(f"MSTUDY_REQUIRE_VLLM=1 but {reason}")
        pytest.skip(reason)
    with vllm_server(dtype="bfloat16") as url:  # the curve DESIGN.md measured
        fixed(url, 4, requests(4))  # warm-up
        yield url


def test_adaptive_settles_near_the_best_fixed_window_and_backs_off_under_load(
    vllm_url: str,
) -> None:
    curve = {n: fixed(vllm_url, n, requests(48)) for n in (8, 32, 64)}
    best = max(curve.values())
    # Bounded at the largest fixed window compared (a user's bounds): the loaded pass below
    # must last a few round trips of the calm window, and at a window of 128 (where the law
    # went in one CI run) a round trip of 64-token replies takes about 35 s here, longer than
    # the whole pass: the window was cut once, at its end.
    with RemoteTeacher(SERVED_NAME, base_url=vllm_url, concurrency=(1, 64), timeout=600) as t:
        # learns the server: slow start from 4 to a knee at 64 takes about 100 answers
        # (epochs of half a window, and the answers of the previous window dropped)
        throughput(t, requests(128, offset=100))
        settled = throughput(t, requests(48, offset=200))
        calm = t.endpoint_stats()[0].window
        sys.stderr.write(f"\nfixed {curve}, adaptive settled {settled:.0f} tok/s, {calm}\n")
        assert settled >= 0.8 * best

        stop = threading.Event()

        def other_client() -> None:  # a second client keeps 48 long requests in flight
            with RemoteTeacher(SERVED_NAME, base_url=vllm_url, concurrency=48) as other:

                def endless() -> Iterator[Request]:
                    i = 0
                    while not stop.is_set():
                        i += 1
                        yield requests(1, offset=1000 + i, tokens=128)[0]

                for _ in other.generate(endless()):
                    if stop.is_set():
                        break

        loader = threading.Thread(target=other_client, daemon=True)
        loader.start()
        try:
            time.sleep(5)
            # several epochs: an epoch is half a window's answers, and under this load a
            # round trip at 64 takes about 12 s here, so a few cuts take most of a minute
            throughput(t, requests(384, offset=300))
            loaded = t.endpoint_stats()[0].window
        finally:
            stop.set()
            loader.join(timeout=120)
    sys.stderr.write(f"under load: {loaded}\n")
    assert loaded["mean"] < 0.8 * calm["mean"]
    assert loaded["final"] < calm["final"]


def test_two_servers_spread_the_requests_and_lose_nothing(vllm_url: str) -> None:
    batch = requests(64, offset=500)
    one = fixed(vllm_url, 32, batch)
    with vllm_server(dtype="bfloat16") as second:
        fixed(second, 4, requests(4))  # warm-up
        with RemoteTeacher(
            SERVED_NAME, base_url=[vllm_url, second], concurrency=16, timeout=600
        ) as teacher:
            two = throughput(teacher, batch)
            stats = teacher.endpoint_stats()
    sys.stderr.write(f"\none server {one:.0f} tok/s, two servers {two:.0f} tok/s\n")
    assert all(s.state == "up" and s.errors == 0 for s in stats)
    assert min(s.answered for s in stats) >= 0.25 * len(batch)
    assert sum(s.answered for s in stats) == len(batch)
    # Two engines on the same 2 cores compete for them (0.73x measured here): the floor
    # only catches a dispatcher that serialises the servers.
    assert two >= 0.5 * one
