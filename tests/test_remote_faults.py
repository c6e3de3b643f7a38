"""A real Study with the remote teacher against a server that misbehaves in every way at once.

The server is ours (tests/openai_stub.py) on 127.0.0.1, with a seeded :class:`FaultMix`: 429
with Retry-After, 500/502/503, connection resets, answers slower than the client's timeout,
bodies that are not JSON, empty ``choices`` and replies cut short (``finish_reason="length"``).
Every record must end accepted or rejected with a reason, exactly once; retries stay bounded;
a server that goes down for good stops the run with a clear error and the journal resumes it;
the API key never reaches anything written or logged.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import read_jsonl
from openai_stub import FAULTS, FaultMix, RecordedRequest, StubServer

from mstudy import Study
from mstudy._journal import Journal
from mstudy.errors import TeacherError
from mstudy.records import Completion, Message, Request
from mstudy.report import Report
from mstudy.strategies.base import TemplateStrategy
from mstudy.teachers.remote import RemoteTeacher

CANARY = "sk-canary-4d1f0b9e27a8c35e"
MAX_RETRIES = 4
RETRY_AFTER = 0.05
T = TypeVar("T")
FINAL_REASON = {
    "429": "HTTP 429",
    "500": "HTTP 500",
    "502": "HTTP 502",
    "503": "HTTP 503",
    "reset": "connection error",
    "timeout": "timed out after 0.75 s",
    "malformed": "not JSON",
    "empty": "no choices",
}
"""What a request's error says when its last attempt met each fault."""


class Echo(TemplateStrategy):
    """The record's text as the prompt; any non-empty reply is accepted (the stub reverses it)."""

    name = "echo"
    version = "1"
    template = "{{ text }}"


pytestmark = pytest.mark.usefixtures("no_ambient_keys")


def make_records(n: int, marker: Callable[[int], str] = lambda i: "") -> list[dict[str, str]]:
    return [{"id": f"r{i}", "text": f"item {i} greets the world{marker(i)}"} for i in range(n)]


def bounded(fn: Callable[[], T], seconds: float) -> T:
    """``fn()`` in a worker thread; fail the test (not hang it) when it runs over ``seconds``."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn).result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"did not finish within {seconds} s: hung?")
    finally:
        pool.shutdown(wait=False)


def by_prompt(requests: list[RecordedRequest]) -> dict[str, list[RecordedRequest]]:
    grouped: dict[str, list[RecordedRequest]] = {}
    for rec in requests:
        if rec.prompt:
            grouped.setdefault(rec.prompt, []).append(rec)
    for attempts in grouped.values():
        attempts.sort(key=lambda r: r.attempt)
    return grouped


def check_report_matches_files(
    report: Report, accepted: list[dict[str, Any]], rejected: list[dict[str, Any]]
) -> None:
    assert report.status == "done"
    assert report.accepted == len(accepted)
    assert report.rejected == len(rejected)
    counted = report.strategies["echo"].rejected
    assert counted == Counter((r["stage"], r["reason"]) for r in rejected)


# -- 1. every record accounted for under a mix of every fault ------------------------------


def fault_mix_run(stub: StubServer, tmp_path: Path, n: int, seconds: float) -> None:
    mix = FaultMix.uniform(
        0.03, seed=7, dead=0.004, retry_after=f"{RETRY_AFTER}", timeout_delay=1.5
    )
    stub.faults = mix
    records = make_records(n)
    out, rejects = tmp_path / "enriched.jsonl", tmp_path / "rejects.jsonl"
    teacher = RemoteTeacher(
        "stub-model",
        base_url=stub.url,
        concurrency=32,
        max_retries=MAX_RETRIES,
        backoff_base=0.01,
        backoff_max=0.1,
        timeout=0.75,
    )
    study = Study(teacher, [Echo()], sinks=[out], rejects=rejects)
    with teacher:
        report = bounded(lambda: study.run(records), seconds)

    accepted, rejected = read_jsonl(out), read_jsonl(rejects)
    # Every input exactly once, accepted or rejected.
    seen = Counter(row["source_id"] for row in [*accepted, *rejected])
    assert set(seen) == {r["id"] for r in records}
    assert max(seen.values()) == 1
    assert len(accepted) + len(rejected) == n == report.records == report.requests
    assert report.strategies["echo"].completions == n
    check_report_matches_files(report, accepted, rejected)

    # Retries stay bounded; every fault was met; retries did happen.
    attempts = by_prompt(stub.requests)
    assert len(attempts) == n
    assert max(len(a) for a in attempts.values()) <= MAX_RETRIES + 1
    assert max(stub.state.attempts.values()) <= MAX_RETRIES + 1
    assert set(stub.state.faults) == set(FAULTS)
    assert len(stub.requests) > n * 1.1

    text_of = {r["id"]: r["text"] for r in records}
    for row in accepted:  # the stub's answer (the prompt reversed word by word), unharmed
        assert row["text"] == " ".join(reversed(text_of[row["source_id"]].split()))
        assert row["provenance"]["finish_reason"] == "stop"

    reasons = Counter((r["stage"], r["reason"]) for r in rejected)
    assert set(reasons) == {("parse", "truncated"), ("teacher", "teacher error")}
    for row in rejected:
        prompt = text_of[row["source_id"]]
        last = attempts[prompt][-1]
        if row["reason"] == "truncated":  # the answer cut short, recorded as such
            assert last.fault == "length" and row["row"]["finish_reason"] == "length"
            assert "max_new_tokens" in row["detail"]
        else:  # retries ran out on a fault that can be retried; the reason names the last
            assert row["row"]["finish_reason"] == "error"
            assert last.fault in FINAL_REASON, row
            # (a client stalled for longer than its timeout sees a timeout instead)
            assert any(text in row["detail"] for text in (FINAL_REASON[last.fault], "timed out")), (
                row
            )
    truncated = {r["source_id"] for r in rejected if r["reason"] == "truncated"}
    cut = {r["id"] for r in records if attempts[r["text"]][-1].fault == "length"}
    assert truncated == cut and truncated
    # The prompts that fail on every attempt ran out of retries after exactly max_retries + 1.
    dead = {r["id"] for r in records if mix.is_dead(r["text"])}
    assert dead
    exhausted = {r["source_id"] for r in rejected if r["stage"] == "teacher"}
    assert dead <= exhausted
    for source_id in exhausted:
        assert len(attempts[text_of[source_id]]) == MAX_RETRIES + 1

    # Retry-After is honoured: the next attempt of a prompt refused with 429 waits for it.
    for tries in attempts.values():
        for refused, retry in itertools.pairwise(tries):
            if refused.fault == "429":
                assert retry.started - refused.started >= RETRY_AFTER


def test_fault_mix_every_record_accounted_for(stub: StubServer, tmp_path: Path) -> None:
    fault_mix_run(stub, tmp_path, 2_000, seconds=60)


@pytest.mark.slow
def test_fault_mix_10k_records(stub: StubServer, tmp_path: Path) -> None:
    fault_mix_run(stub, tmp_path, 10_000, seconds=240)


# -- 2. the API key never leaks ------------------------------------------------------------


def test_canary_api_key_reaches_the_server_and_nothing_else(
    stub: StubServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    log_file = tmp_path / "debug.log"
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)

    # Every 25th prompt meets a careless server that quotes the Authorization header back.
    records = make_records(400, lambda i: " @echo_auth" if i % 25 == 0 else "")
    stub.faults = FaultMix.uniform(0.02, seed=11, dead=0.01, retry_after="0")
    out = tmp_path / "out"
    journal = tmp_path / "journal"

    def study() -> Study:
        teacher = RemoteTeacher(
            "stub-model",
            base_url=stub.url,
            api_key=CANARY,
            concurrency=16,
            max_retries=2,
            backoff_base=0.01,
            backoff_max=0.05,
            timeout=0.75,
        )
        return Study(
            teacher,
            [Echo()],
            sinks=[out / "enriched.jsonl", out / "enriched.parquet"],
            rejects=out / "rejects.jsonl",
            cache=tmp_path / "cache" / "calls.sqlite",
            journal=journal,
            checkpoint_every=0.1,
        )

    visible: list[str] = []
    try:
        # First an outage mid-run, so that a journal is left on disk to be searched too.
        stub.down_after(150)
        first = study()
        with pytest.raises(TeacherError) as info:
            bounded(lambda: first.run(records), 60)
        visible += [
            str(info.value),
            repr(info.value),
            "".join(traceback.format_exception(info.value)),
        ]
        assert (journal / "checkpoint.json").exists()
        files_mid_run = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

        stub.down_after(None)
        stub.restart()
        second = study()
        report = bounded(lambda: second.run(records), 60)
        for each in (first, second):
            teacher = each.teacher
            assert isinstance(teacher, RemoteTeacher)
            visible += [repr(teacher), str(teacher), teacher.fingerprint, repr(each)]
            visible += [json.dumps(each.fingerprint())]
            teacher.close()
        visible += [repr(report), str(report), json.dumps(report.to_dict()), report._repr_html_()]
    finally:
        root.removeHandler(handler)
        handler.close()

    # The test means something: the server got the key, and quoted it back in error bodies.
    headers = {r.headers.get("authorization") for r in stub.requests}
    assert headers == {f"Bearer {CANARY}"}
    rejected = read_jsonl(out / "rejects.jsonl")
    echoed = [r for r in rejected if "bad key" in r["detail"]]
    assert len(echoed) >= 10 and all("Bearer ***" in r["detail"] for r in echoed)

    captured = capfd.readouterr()
    visible += [caplog.text, captured.out, captured.err]
    visible += [record.getMessage() for record in caplog.records]
    assert "remote teacher" in caplog.text  # retries were logged, masked
    assert "remote teacher" in log_file.read_text(encoding="utf-8")
    for text in visible:
        assert CANARY not in text
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert log_file in files and any(p.suffix == ".sqlite" for p in files)
    assert any(p.name == "checkpoint.json" for p in files_mid_run)
    for path, data in [*files_mid_run.items(), *files.items()]:
        assert CANARY.encode() not in data, path


# -- 3. the server goes down for good mid-run ----------------------------------------------


def test_server_down_for_good_stops_the_run_and_the_journal_resumes_it(
    stub: StubServer, tmp_path: Path
) -> None:
    records = make_records(600)
    out, rejects, journal = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl", tmp_path / "j"

    def study() -> Study:
        teacher = RemoteTeacher(
            "stub-model",
            base_url=stub.url,
            concurrency=8,
            max_retries=2,
            backoff_base=0.01,
            backoff_max=0.05,
            timeout=2.0,
            max_consecutive_failures=3,
        )
        return Study(
            teacher, [Echo()], sinks=[out], rejects=rejects, journal=journal, checkpoint_every=0.1
        )

    stub.down_after(250)
    first = study()
    with pytest.raises(TeacherError, match="in a row") as info:
        bounded(lambda: first.run(records), 30)
    assert stub.url.removesuffix("/v1") in str(info.value)
    assert not out.exists() and not rejects.exists()
    answered = {r.prompt for r in stub.requests if r.status == 200}
    assert 250 <= len(answered) < 600
    # Progress kept: a checkpoint past the start, and every answered call in the cache.
    state = Journal(journal, first.fingerprint(None)).state
    assert state is not None and state.items_done > 0
    cache = first.cache
    assert cache is not None and cache.stats().entries == len(answered)
    cache.close()

    asked_before = len(stub.requests)
    stub.restart()
    second = study()
    report = bounded(lambda: second.run(records), 30)

    accepted, rejected = read_jsonl(out), read_jsonl(rejects)
    seen = Counter(row["source_id"] for row in [*accepted, *rejected])
    assert set(seen) == {r["id"] for r in records} and max(seen.values()) == 1
    check_report_matches_files(report, accepted, rejected)
    # The outage cost nothing: all accepted, and nothing answered before was asked again.
    assert rejected == [] and len(accepted) == 600
    asked_after = {r.prompt for r in stub.requests[asked_before:]}
    assert not asked_after & answered
    assert asked_after | answered == {r["text"] for r in records}
    assert not journal.exists()


def test_requests_caught_in_an_outage_are_not_yielded_as_errors(stub: StubServer) -> None:
    """Failures that may be the outage itself wait for the server to answer again; it never
    does, so the breaker raises and they are not reported as failed requests (a resumed run
    asks them again). Every answer received before is yielded."""
    requests = [Request(messages=(Message("user", f"question {i}"),)) for i in range(60)]
    stub.down_after(20)
    teacher = RemoteTeacher(
        "stub-model",
        base_url=stub.url,
        concurrency=4,
        max_retries=1,
        backoff_base=0.01,
        max_consecutive_failures=3,
    )
    got: list[Completion] = []

    def consume() -> None:
        with teacher:
            got.extend(teacher.generate(requests))

    with pytest.raises(TeacherError, match="3 requests in a row"):
        bounded(consume, 30)
    assert got and all(c.ok for c in got)
    answered = {r.prompt for r in stub.requests if r.status == 200}
    prompt_of = {r.key: r.messages[-1].content for r in requests}
    assert {prompt_of[c.key] for c in got} == answered
