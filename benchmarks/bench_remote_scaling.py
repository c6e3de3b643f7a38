"""RemoteTeacher's window against a real server: fixed windows, the adaptive one, a plain client,
and two servers against one.

``windows``: at each fixed window, the teacher against a plain asyncio client (httpx2, the
HTTP library the teacher uses, and an ``asyncio.Semaphore`` of the same size) on the same
requests, run A-B-B-A; then the adaptive window (a first pass that learns, and a second,
settled one). Output tokens/s and p95 request latency, one table.

``servers``: the same requests through one server and through two (each server with the
same window, and with half of it: the same requests in flight in all), plus each server's
own curve.

``profile``: where one request's time goes at a small window: the server's own time
(vLLM's ``e2e_request_latency``, from its ``/metrics``) against the latency the teacher
sees, and cProfile of the client side.

    python benchmarks/bench_remote_scaling.py windows             # starts vLLM from .venv-vllm
    python benchmarks/bench_remote_scaling.py servers             # starts two
    python benchmarks/bench_remote_scaling.py windows --base-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mstudy.records import GenerationParams, Message, Request
from mstudy.teachers.remote import Concurrency, RemoteTeacher

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


def make_requests(count: int, max_tokens: int, offset: int = 0) -> list[Request]:
    params = GenerationParams(max_new_tokens=max_tokens, temperature=0.7, seed=0)
    return [
        Request(messages=(Message("user", PROMPTS[i % len(PROMPTS)]),), params=params, sample=i)
        for i in range(offset, offset + count)
    ]


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0


# -- the two clients ------------------------------------------------------------------------


def run_teacher(
    urls: list[str], model: str, requests: Sequence[Request], window: Concurrency
) -> dict[str, Any]:
    """One pass through a fresh RemoteTeacher: wall, output tokens, p95, per-server stats."""
    with RemoteTeacher(model, base_url=urls, concurrency=window, timeout=600) as teacher:
        # Started (its loop thread and connection pool made) before the clock starts, as the
        # plain client's pool is: a run starts a teacher once, not once per request.
        teacher._ensure_started()
        return teacher_pass(teacher, requests)


def teacher_pass(teacher: RemoteTeacher, requests: Sequence[Request]) -> dict[str, Any]:
    teacher.endpoint_stats(reset=True)
    started, cpu = time.perf_counter(), time.process_time()
    completions = list(teacher.generate(requests))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    bad = [c.error for c in completions if not c.ok]
    if bad:
        raise SystemExit(f"{len(bad)} requests failed, first: {bad[0]}")
    stats = teacher.endpoint_stats()
    latencies_p95 = max(s.latency_p95_s for s in stats)
    return {
        "wall": wall,
        "cpu": cpu,
        "tokens": sum(c.completion_tokens for c in completions),
        "p95": latencies_p95,
        "servers": stats,
    }


def run_plain(url: str, model: str, requests: Sequence[Request], window: int) -> dict[str, Any]:
    """The same requests through a plain asyncio client: httpx2 + a semaphore of ``window``."""
    import httpx2

    async def main() -> dict[str, Any]:
        semaphore = asyncio.Semaphore(window)
        latencies: list[float] = []
        tokens = 0
        limits = httpx2.Limits(max_connections=window, max_keepalive_connections=window)
        async with httpx2.AsyncClient(limits=limits, timeout=600) as client:

            async def one(request: Request) -> None:
                nonlocal tokens
                payload = {
                    "model": model,
                    "messages": request.chat(),
                    "max_tokens": request.params.max_new_tokens,
                    "temperature": request.params.temperature,
                    "top_p": request.params.top_p,
                    "seed": request.seed,
                }
                async with semaphore:
                    for attempt in range(3):  # a busy vLLM answers 500 or drops a
                        started = time.monotonic()  # kept-alive connection now and then
                        try:
                            response = await client.post(f"{url}/chat/completions", json=payload)
                        except httpx2.TransportError:
                            if attempt == 2:
                                raise
                            continue
                        if response.status_code < 500 or attempt == 2:
                            break
                    response.raise_for_status()
                    latencies.append(time.monotonic() - started)
                    tokens += int(response.json()["usage"]["completion_tokens"])

            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one(r) for r in requests))
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            return {
                "wall": wall,
                "cpu": cpu,
                "tokens": tokens,
                "p95": p95(latencies),
                "latencies": latencies,
            }

    return asyncio.run(main())


# -- servers ------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(base_urls: Sequence[str], count: int) -> Iterator[list[str]]:
    """The given servers, or ``count`` vLLM servers started from the CI environment."""
    if base_urls:
        yield list(base_urls)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_teacher_vllm import vllm_missing, vllm_server

    reason = vllm_missing()
    if reason:
        raise SystemExit(f"{reason} (or pass --base-url)")
    print(f"starting {count} vLLM server(s) ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        urls = [
            stack.enter_context(vllm_server(startup_timeout=600, dtype="bfloat16"))
            for _ in range(count)
        ]
        print(f"ready in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        yield urls


def rate(row: dict[str, Any]) -> float:
    return float(row["tokens"]) / float(row["wall"])


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the benchmarks -------------------------------------------------------------------------


def bench_windows(args: argparse.Namespace) -> None:
    windows = [int(x) for x in args.windows.split(",")]
    load_at_start = load_average()
    with servers(args.base_url, 1) as (url,):
        run_teacher([url], args.model, make_requests(8, args.max_tokens), 8)  # warm-up
        rows = []
        for window in windows:
            count = max(args.min_requests, min(args.requests, 12 * window))
            requests = make_requests(count, args.max_tokens)
            runs: dict[str, list[dict[str, Any]]] = {"teacher": [], "plain": []}
            for order in (("plain", "teacher"), ("teacher", "plain"))[: args.repeats]:
                for who in order:
                    if who == "plain":
                        row = run_plain(url, args.model, requests, window)
                    else:
                        row = run_teacher([url], args.model, requests, window)
                    runs[who].append(row)
                    say(f"  {who:<8} N={window:<3} {rate(row):6.1f} tok/s  p95 {row['p95']:.2f} s")
            rows.append((window, count, runs))
        count = args.requests
        with RemoteTeacher(args.model, base_url=url, concurrency="adaptive", timeout=600) as t:
            learn = teacher_pass(t, make_requests(count, args.max_tokens))
            say(f"  adaptive learning  {rate(learn):6.1f} tok/s, {learn['servers'][0].window}")
            settled = teacher_pass(t, make_requests(count, args.max_tokens, offset=count))
            say(f"  adaptive settled   {rate(settled):6.1f} tok/s, {settled['servers'][0].window}")

    def total(rs: list[dict[str, Any]]) -> tuple[float, float]:
        tokens = sum(r["tokens"] for r in rs)
        wall = sum(r["wall"] for r in rs)
        return tokens / wall, statistics.median(r["p95"] for r in rs)

    print(f"\nmax {args.max_tokens} new tokens, model {args.model!r}, one server")
    print(f"load average at start {load_at_start}, at the end {load_average()}\n")
    print(
        "| window | requests | teacher tok/s | teacher p95 s | plain tok/s | plain p95 s"
        " | teacher / plain |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for window, count, runs in rows:
        t_rate, t_p95 = total(runs["teacher"])
        p_rate, p_p95 = total(runs["plain"])
        print(
            f"| {window} | {count} | {t_rate:.1f} | {t_p95:.2f} | {p_rate:.1f} | {p_p95:.2f} |"
            f" {t_rate / p_rate:.2f}x |"
        )
    for label, row in (("adaptive, first pass", learn), ("adaptive, settled", settled)):
        w = row["servers"][0].window
        print(
            f"| {label} (min {w['min']}, max {w['max']}, mean {w['mean']:.1f}, final {w['final']})"
            f" | {args.requests} | {rate(row):.1f} | {row['p95']:.2f} | | | |"
        )


def bench_servers(args: argparse.Namespace) -> None:
    window = int(args.windows.split(",")[-1])
    count = args.requests
    requests = make_requests(count, args.max_tokens)
    with servers(args.base_url, 2) as urls:
        run_teacher(urls, args.model, make_requests(8, args.max_tokens), 4)  # warm-up, both
        results = []
        plan: list[tuple[str, list[str], int]] = [
            ("one server", urls[:1], window),
            ("two servers, window/2 each", urls, max(1, window // 2)),
            ("two servers, window each", urls, window),
            ("one server", urls[:1], window),
        ]
        for label, where, each in plan:
            row = run_teacher(where, args.model, requests, each)
            results.append((label, where, each, row))
            say(f"  {label:<28} {rate(row):6.1f} tok/s  p95 {row['p95']:.2f} s")
        curve = []
        for index, url in enumerate(urls):
            for n in sorted({max(1, window // 4), max(1, window // 2), window}):
                row = run_teacher([url], args.model, requests[: max(16, 2 * n)], n)
                curve.append((index, n, row))
                say(f"  server {index} alone N={n:<3} {rate(row):6.1f} tok/s")

    one = [rate(r) for label, _, _, r in results if label == "one server"]
    base = sum(one) / len(one)
    print(f"\n{count} requests, max {args.max_tokens} new tokens, model {args.model!r}\n")
    print("| setup | in flight | tok/s | p95 s | vs one server | answered per server |")
    print("|---|---:|---:|---:|---:|---|")
    for label, where, each, row in results:
        split = " / ".join(str(s.answered) for s in row["servers"])
        print(
            f"| {label} | {each * len(where)} | {rate(row):.1f} | {row['p95']:.2f} |"
            f" {rate(row) / base:.2f}x | {split} |"
        )
    print("\nEach server alone (the other idle):\n")
    print("| server | window | tok/s |")
    print("|---|---:|---:|")
    for index, n, row in curve:
        print(f"| {index} | {n} | {rate(row):.1f} |")


def bench_profile(args: argparse.Namespace) -> None:
    """Where a request's time goes at small windows, for the teacher and the plain client.

    ``server``: vLLM's own end-to-end time per request (its ``/metrics``). ``in client``: the
    latency the client measured around the HTTP call minus that (sending, the answer read
    and parsed, the event loop's turn). ``idle slot``: how long a slot waits between one
    answer and the next request going out (wall time x window / requests - latency): the
    refill cost. Then cProfile of the teacher's event-loop thread, where its work runs."""
    with servers(args.base_url, 1) as (url,):
        metrics = url.removesuffix("/v1") + "/metrics"
        run_teacher([url], args.model, make_requests(4, args.max_tokens), 4)  # warm-up
        print(
            "\n| window | client | requests | latency s | server s | in client ms | idle slot ms |"
        )
        print("|---|---|---:|---:|---:|---:|---:|")
        for window in [int(x) for x in args.windows.split(",")]:
            requests = make_requests(max(8, 3 * window), args.max_tokens)
            for who in ("plain", "teacher", "teacher", "plain"):
                before = server_e2e(metrics)
                started = time.perf_counter()
                latencies = client_latencies(who, url, args.model, requests, window)
                wall = time.perf_counter() - started
                after = server_e2e(metrics)
                served = (after[0] - before[0]) / max(1, after[1] - before[1])
                latency = statistics.mean(latencies)
                idle = wall * window / len(requests) - latency
                print(
                    f"| {window} | {who} | {len(requests)} | {latency:.3f} | {served:.3f} |"
                    f" {1000 * (latency - served):.1f} | {1000 * idle:.1f} |"
                )
        count = 16
        with RemoteTeacher(args.model, base_url=url, concurrency=1, timeout=600) as teacher:
            list(teacher.generate(make_requests(2, args.max_tokens)))  # started, warm
            loop = teacher._loop
            assert loop is not None
            profile = cProfile.Profile()
            asyncio.run_coroutine_threadsafe(_call_on_loop(profile.enable), loop).result()
            started = time.perf_counter()
            list(teacher.generate(make_requests(count, args.max_tokens, offset=50)))
            wall = time.perf_counter() - started
            asyncio.run_coroutine_threadsafe(_call_on_loop(profile.disable), loop).result()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    total = sum(  # Python's own time, not the wait for the network (select/epoll)
        v[2]
        for k, v in stats.stats.items()
        if "poll" not in k[2] and "select" not in k[2]  # type: ignore[attr-defined]
    )
    stats.sort_stats("tottime").print_stats(12)
    print(
        f"\ncProfile of the teacher's loop thread, window 1, {count} requests in {wall:.1f} s:"
        f" {1000 * total / count:.1f} ms of Python per request"
    )
    print(out.getvalue())


async def _call_on_loop(fn: Any) -> None:
    fn()


def client_latencies(
    who: str, url: str, model: str, requests: Sequence[Request], window: int
) -> list[float]:
    """Each request's latency as the client sees it, from send to the answer read."""
    if who == "plain":
        return list(run_plain(url, model, requests, window)["latencies"])
    with RemoteTeacher(model, base_url=url, concurrency=window, timeout=600) as teacher:
        list(teacher.generate(requests))
        (server,) = teacher._servers
        return list(server.latencies)


def bench_overhead(args: argparse.Namespace) -> None:
    """The client's own cost, apart from any model: the teacher and the plain client against
    the test stub (tests/openai_stub.py, in a process of its own so that it does not take the
    clients' interpreter lock) answering every request after a fixed delay, so the ideal is
    ``requests * delay / window`` seconds; the rest is the client's. Each window runs
    plain, teacher, teacher, plain (A-B-B-A); the ratio is of the summed walls."""
    delay = args.delay
    say(f"load average before: {load_average()}")
    print(f"\nstub delay {delay:g} s, load average at start {load_average()}\n")
    print(
        "| window | requests | ideal s | plain s | teacher s | teacher / plain"
        " | plain CPU ms/req | teacher CPU ms/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with stub_process(delay) as url:
        run_plain(url, "smollm2", make_requests(16, 8), 4)  # warm-up
        for window in [int(x) for x in args.windows.split(",")]:
            count = max(40, 20 * window)
            requests = make_requests(count, 8)
            rows: dict[str, list[dict[str, Any]]] = {"plain": [], "teacher": []}
            for who in ("plain", "teacher", "teacher", "plain") * args.rounds:
                if who == "plain":
                    row = run_plain(url, "smollm2", requests, window)
                else:
                    row = run_teacher([url], "smollm2", requests, window)
                rows[who].append(row)
                say(f"  {who:<8} N={window:<3} {row['wall']:.2f} s, CPU {row['cpu']:.2f} s")
            wall = {who: sum(r["wall"] for r in rs) / len(rs) for who, rs in rows.items()}
            cpu = {
                who: 1000 * sum(r["cpu"] for r in rs) / len(rs) / count for who, rs in rows.items()
            }
            print(
                f"| {window} | {count} | {count * delay / window:.2f} | {wall['plain']:.2f} |"
                f" {wall['teacher']:.2f} | {wall['plain'] / wall['teacher']:.2f}x |"
                f" {cpu['plain']:.2f} | {cpu['teacher']:.2f} |"
            )
    print(f"\nload average at the end {load_average()}")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


_STUB_MAIN = """
import sys, time
sys.path.insert(0, sys.argv[1])
from openai_stub import StubServer
with StubServer(("smollm2",)) as stub:
    stub.default_directives = "@delay=" + sys.argv[2]
    print(stub.url, flush=True)
    sys.stdin.read()  # until the parent closes it
"""


@contextlib.contextmanager
def stub_process(delay: float) -> Iterator[str]:
    """The test stub in a child process, answering after ``delay`` seconds; its URL."""
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    child = subprocess.Popen(
        [sys.executable, "-c", _STUB_MAIN, tests, repr(delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        yield child.stdout.readline().strip()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def server_e2e(metrics_url: str) -> tuple[float, float]:
    """vLLM's ``vllm:e2e_request_latency_seconds`` sum and count so far."""
    total = count = 0.0
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("vllm:e2e_request_latency_seconds_sum"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("vllm:e2e_request_latency_seconds_count"):
                count += float(line.rsplit(" ", 1)[1])
    return total, count


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("what", choices=("windows", "servers", "profile", "overhead"))
    parser.add_argument("--base-url", action="append", default=[], help="running server(s)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--min-requests", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--windows", default="1,8,32,64")
    parser.add_argument("--repeats", type=int, default=2, choices=(1, 2))
    parser.add_argument("--rounds", type=int, default=1, help="overhead: A-B-B-A rounds")
    parser.add_argument("--delay", type=float, default=0.05, help="overhead: the stub's delay")
    args = parser.parse_args(argv)
    benches = {
        "windows": bench_windows,
        "servers": bench_servers,
        "profile": bench_profile,
        "overhead": bench_overhead,
    }
    benches[args.what](args)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
