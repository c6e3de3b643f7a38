"""RemoteTeacher over several servers (real HTTP stubs on 127.0.0.1): spreading, failover,
servers down for the whole run, flapping or all at once, per-server stats in the report."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from openai_stub import StubServer

from mstudy import Study
from mstudy.config import parse_config
from mstudy.errors import ConfigError, TeacherError
from mstudy.interfaces import ReportsEndpoints
from mstudy.records import Completion, Message, Request
from mstudy.report import EndpointStats, Report
from mstudy.strategies.base import TemplateStrategy
from mstudy.teachers.remote import RemoteTeacher

T = TypeVar("T")
CANARY = "sk-canary-5d1e0b7a"
pytestmark = pytest.mark.usefixtures("no_ambient_keys")


class Echo(TemplateStrategy):
    name = "echo"
    version = "1"
    template = "{{ text }}"


@pytest.fixture
def stubs() -> Iterator[tuple[StubServer, StubServer]]:
    with StubServer() as a, StubServer() as b:
        yield a, b


def closed_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return f"http://127.0.0.1:{port}/v1"


def make(urls: list[str], **kwargs: object) -> RemoteTeacher:
    options: dict[str, object] = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 10.0}
    options.update(kwargs)
    return RemoteTeacher("stub-model", base_url=urls, **options)  # type: ignore[arg-type]


def req(text: str) -> Request:
    return Request(messages=(Message("user", text),))


def bounded(fn: Callable[[], T], seconds: float) -> T:
    """``fn()`` in a worker thread; fail the test (not hang it) when it runs over ``seconds``."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn).result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"did not finish within {seconds} s: hung?")
    finally:
        pool.shutdown(wait=False)


def run_all(teacher: RemoteTeacher, requests: list[Request]) -> dict[str, Completion]:
    with teacher:
        completions = bounded(lambda: list(teacher.generate(requests)), 60)
    assert sorted(c.key for c in completions) == sorted(r.key for r in requests)
    return {c.key: c for c in completions}


def stats_by_url(teacher: RemoteTeacher) -> dict[str, EndpointStats]:
    return {s.url: s for s in teacher.endpoint_stats()}


# -- spreading --------------------------------------------------------------------------


def test_requests_spread_over_servers_each_within_its_window(
    stubs: tuple[StubServer, StubServer],
) -> None:
    a, b = stubs
    requests = [req(f"item {i} @delay=0.05") for i in range(60)]
    teacher = make([a.url, b.url], concurrency=4)
    by_key = run_all(teacher, requests)
    assert all(c.ok for c in by_key.values())
    assert a.max_in_flight == b.max_in_flight == 4  # a window per server, both full
    assert len(a.requests) + len(b.requests) == 60
    assert abs(len(a.requests) - len(b.requests)) <= 12  # fewest outstanding: about even
    stats = stats_by_url(teacher)
    assert {u: s.answered for u, s in stats.items()} == {
        a.url: len(a.requests),
        b.url: len(b.requests),
    }
    assert all(s.state == "up" and s.errors == 0 for s in stats.values())
    assert all(
        s.latency_mean_s >= 0.05 and s.latency_p95_s >= s.latency_mean_s * 0.9
        for s in stats.values()
    )
    assert sum(s.completion_tokens for s in stats.values()) == sum(
        c.completion_tokens for c in by_key.values()
    )


def test_fewest_outstanding_sends_more_to_the_faster_server(
    stubs: tuple[StubServer, StubServer],
) -> None:
    a, b = stubs
    a.default_directives = "@delay=0.2"
    b.default_directives = "@delay=0.02"
    run_all(make([a.url, b.url], concurrency=4), [req(f"n {i}") for i in range(80)])
    assert len(b.requests) > 2 * len(a.requests)


# -- one server down, failing or flapping -------------------------------------------------


def test_a_server_down_for_the_whole_run_the_run_completes_on_the_other(
    stub: StubServer, tmp_path: Path
) -> None:
    dead = closed_url()
    teacher = make([dead, stub.url], concurrency=4, max_retries=2)
    records = [{"id": f"r{i}", "text": f"record {i} here"} for i in range(40)]
    out = tmp_path / "out.jsonl"
    with teacher:
        report = bounded(lambda: Study(teacher, [Echo()], sinks=[out]).run(records), 60)
    assert report.status == "done" and report.accepted == 40 and report.rejected == 0
    by_url = {e.url: e for e in report.endpoints}
    assert by_url[dead].state == "down" and by_url[dead].answered == 0
    assert by_url[dead].errors >= 1 and by_url[dead].trips == 1
    assert "connection error" in by_url[dead].last_error
    assert by_url[stub.url].state == "up" and by_url[stub.url].answered == 40
    text = str(report)
    assert f"{dead}  down" in text and "last error: connection error" in text
    # the dead server is tried again now and then (one probe at a time), not hammered
    assert by_url[dead].requests < 20


def test_a_failing_server_has_its_requests_moved_to_the_others(
    stubs: tuple[StubServer, StubServer],
) -> None:
    a, b = stubs
    a.default_directives = "@status=500"
    teacher = make([a.url, b.url], concurrency=4, max_retries=3)
    by_key = run_all(teacher, [req(f"x {i}") for i in range(30)])
    assert all(c.ok for c in by_key.values())
    stats = stats_by_url(teacher)
    assert stats[a.url].answered == 0 and stats[a.url].state == "down"
    assert stats[b.url].answered == 30
    assert "HTTP 500" in stats[a.url].last_error
    assert len(a.requests) < 30  # taken out of the rotation after a few failures


def test_a_flapping_server_loses_nothing(stubs: tuple[StubServer, StubServer]) -> None:
    a, b = stubs
    a.default_directives = b.default_directives = "@delay=0.02"
    stop = threading.Event()

    def flap() -> None:
        while not stop.is_set():
            time.sleep(0.15)
            b.go_down()
            time.sleep(0.15)
            b.restart()

    flapper = threading.Thread(target=flap, daemon=True)
    flapper.start()
    try:
        teacher = make([a.url, b.url], concurrency=4, max_retries=6)
        by_key = run_all(teacher, [req(f"flap {i}") for i in range(150)])
    finally:
        stop.set()
        flapper.join(timeout=5)
    assert all(c.ok for c in by_key.values()), [c.error for c in by_key.values() if not c.ok]
    stats = stats_by_url(teacher)
    assert stats[b.url].answered > 0 and stats[a.url].answered > 0
    assert stats[b.url].errors > 0 and stats[b.url].trips >= 1
    assert stats[a.url].answered + stats[b.url].answered == 150


def test_all_servers_down_from_the_start_raises_at_once() -> None:
    first, second = closed_url(), closed_url()
    teacher = make([first, second], concurrency=4, max_retries=3)
    started = time.monotonic()
    with teacher, pytest.raises(TeacherError) as info:
        bounded(lambda: list(teacher.generate([req(f"n {i}") for i in range(10)])), 30)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "could not reach" in message and first in message and second in message
    assert all(s.state == "down" for s in teacher.endpoint_stats())


def test_all_servers_going_down_mid_run_stops_it_and_keeps_the_answers(
    stubs: tuple[StubServer, StubServer],
) -> None:
    a, b = stubs
    a.down_after(5)
    b.down_after(5)
    teacher = make([a.url, b.url], concurrency=2, max_retries=2)
    got: list[Completion] = []

    def consume() -> None:
        for completion in teacher.generate([req(f"m {i} @delay=0.01") for i in range(100)]):
            got.append(completion)

    with teacher, pytest.raises(TeacherError, match="in a row"):
        bounded(consume, 60)
    assert all(c.ok for c in got)  # answers, never error rows
    assert len(got) == a.state.answered + b.state.answered >= 10  # every answer kept


# -- secrets, settings, config ------------------------------------------------------------


def test_credentials_in_any_url_stay_out_of_stats_reports_reprs_and_logs(
    stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    dead = closed_url().replace("http://", f"http://user:{CANARY}@") + f"?api_key={CANARY}"
    good = stub.url.replace("http://", f"http://bob:{CANARY}@")
    teacher = RemoteTeacher("stub-model", base_url=[dead, good], backoff_base=0.01, max_retries=1)
    caplog.set_level(logging.DEBUG)
    with teacher:
        assert all(c.ok for c in teacher.generate([req(f"s {i}") for i in range(6)]))
        stats = teacher.endpoint_stats()
    assert stub.requests[0].headers["authorization"].startswith("Basic ")
    report = Report()
    report.set_endpoints(stats)
    visible = [
        repr(teacher),
        str(teacher.base_urls),
        str(report),
        json.dumps(report.to_state()),
        json.dumps(report.to_dict()),
        caplog.text,
        teacher.fingerprint,
    ]
    for text in visible:
        assert CANARY not in text
    assert {s.url for s in stats} == {
        dead.replace(f"user:{CANARY}@", "***@").replace(f"api_key={CANARY}", "api_key=***"),
        good.replace(f"bob:{CANARY}@", "***@"),
    }


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="same server") as info:
        RemoteTeacher("m", base_url=["http://h:1/v1", "http://H:1/v1/"])
    assert info.value.parameter == "base_url"
    with pytest.raises(ConfigError, match=r"base_url\[1\]"):
        RemoteTeacher("m", base_url=["http://h:1/v1", "h:2"])
    with pytest.raises(ConfigError, match="empty"):
        RemoteTeacher("m", base_url=[])
    for bad in (0, "fast", (0, 4), (8, 4), (1, 2, 3), 2.5, True):
        with pytest.raises(ConfigError) as info:
            RemoteTeacher("m", base_url="http://h:1/v1", concurrency=bad)  # type: ignore[arg-type]
        assert info.value.parameter == "concurrency"


def test_fingerprint_covers_every_server_and_one_server_keeps_its_old_one(
    stubs: tuple[StubServer, StubServer],
) -> None:
    a, b = stubs
    one = RemoteTeacher("stub-model", base_url=a.url)
    assert RemoteTeacher("stub-model", base_url=[a.url]).fingerprint == one.fingerprint
    both = RemoteTeacher("stub-model", base_url=[a.url, b.url]).fingerprint
    assert both == RemoteTeacher("stub-model", base_url=[b.url, a.url]).fingerprint
    assert both != one.fingerprint


def test_several_servers_and_adaptive_window_from_toml(
    stubs: tuple[StubServer, StubServer],
) -> None:
    a, b = stubs
    text = f"""
[source]
path = "data.jsonl"

[teacher]
name = "remote"
model = "stub-model"
base_url = ["{a.url}", "{b.url}"]
concurrency = [2, 16]

[[strategies]]
name = "paraphrase"
"""
    config = parse_config(text)
    study, _ = config.build()
    teacher = study.teacher
    assert isinstance(teacher, RemoteTeacher) and isinstance(teacher, ReportsEndpoints)
    assert teacher.base_urls == (a.url, b.url) and teacher.concurrency == (2, 16)
    windows = [s.window for s in teacher.endpoint_stats()]
    assert [w["mode"] for w in windows] == ["adaptive", "adaptive"]
    assert all(2 <= w["final"] <= 16 for w in windows)
    adaptive = parse_config(text.replace("[2, 16]", '"adaptive"')).build()[0].teacher
    assert isinstance(adaptive, RemoteTeacher) and adaptive.concurrency == "adaptive"


# -- the report ----------------------------------------------------------------------------


def test_a_run_reports_its_own_counts_and_a_resumed_report_adds_up(
    stubs: tuple[StubServer, StubServer],
) -> None:
    a, b = stubs
    teacher = make([a.url, b.url], concurrency=2)
    records = [{"id": f"r{i}", "text": f"t {i}"} for i in range(10)]
    with teacher:
        Study(teacher, [Echo()]).run(records)
        report = Study(teacher, [Echo()]).run(records[:4])
    assert sum(e.answered for e in report.endpoints) == 4  # this run's, not the teacher's all
    state = json.loads(json.dumps(report.to_state()))
    again = Report.from_state(state)
    assert again.endpoints == report.endpoints and str(again) == str(report)
    again.resume()
    later = [
        EndpointStats(e.url, answered=3, requests=3, latency_mean_s=1.0) for e in report.endpoints
    ]
    again.set_endpoints(later)
    for before, after in zip(report.endpoints, again.endpoints, strict=True):
        assert after.answered == before.answered + 3 and after.requests == before.requests + 3
        assert before.latency_mean_s <= after.latency_mean_s <= 1.0


def test_report_window_summaries_join_over_a_resumed_run() -> None:
    first = EndpointStats(
        "u", window={"mode": "adaptive", "min": 4, "max": 16, "final": 16, "mean": 10.0,
                     "seconds": 10.0, "series": [[0.0, 4], [5.0, 16]]}
    )  # fmt: skip
    later = EndpointStats(
        "u", window={"mode": "adaptive", "min": 8, "max": 32, "final": 8, "mean": 20.0,
                     "seconds": 30.0, "series": [[0.0, 16], [1.0, 32], [20.0, 8]]}
    )  # fmt: skip
    joined = first.then(later).window
    assert (joined["min"], joined["max"], joined["final"]) == (4, 32, 8)
    assert joined["mean"] == pytest.approx(17.5) and joined["seconds"] == 40.0
    assert joined["series"][-1] == [30.0, 8]
