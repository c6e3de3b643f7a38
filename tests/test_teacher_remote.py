"""RemoteTeacher against a real HTTP server of our own (tests/openai_stub.py) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from openai_stub import StubServer

from mstudy.errors import ConfigError, TeacherError
from mstudy.interfaces import Teacher
from mstudy.records import Completion, GenerationParams, Message, Request
from mstudy.teachers.ratelimit import TokenBucket
from mstudy.teachers.remote import RemoteTeacher, _parse_retry_after

CANARY = "sk-canary-7f3a9c1e5b"


pytestmark = pytest.mark.usefixtures("no_ambient_keys")


def make(stub: StubServer, **kwargs: object) -> RemoteTeacher:
    options: dict[str, object] = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 10.0}
    options.update(kwargs)
    return RemoteTeacher("stub-model", base_url=stub.url, **options)  # type: ignore[arg-type]


def req(text: str, **kwargs: object) -> Request:
    return Request(messages=(Message("user", text),), **kwargs)  # type: ignore[arg-type]


def run(teacher: RemoteTeacher, requests: list[Request]) -> dict[str, Completion]:
    with teacher:
        completions = list(teacher.generate(requests))
    keys = [c.key for c in completions]
    assert sorted(keys) == sorted(r.key for r in requests), "one completion per request"
    return {c.key: c for c in completions}


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


# -- the continuous window ---------------------------------------------------------------


def test_window_reaches_concurrency_and_never_exceeds_it(stub: StubServer) -> None:
    rng = random.Random(0)
    requests = [req(f"item {i} @delay={rng.uniform(0.02, 0.2):.3f}") for i in range(40)]
    by_key = run(make(stub, concurrency=8), requests)
    assert all(c.ok for c in by_key.values())
    assert len(stub.requests) == 40
    assert stub.max_in_flight == 8
    assert max(level for _, level in stub.state.trace) == 8


def test_slow_request_does_not_hold_back_the_window(stub: StubServer) -> None:
    slow = req("slow one @delay=1.5")
    fast = [req(f"fast {i} @delay=0.03") for i in range(30)]
    order: list[str] = []
    with make(stub, concurrency=4) as teacher:
        order = [c.key for c in teacher.generate([slow, *fast])]
    recorded = {r.body["messages"][-1]["content"]: r for r in stub.requests}  # type: ignore[index]
    slow_rec = recorded["slow one @delay=1.5"]
    started_meanwhile = [
        r
        for r in stub.requests
        if r is not slow_rec and slow_rec.started < r.started < slow_rec.finished
    ]
    # Batch-and-wait would start only the 3 others of the slow one's batch meanwhile.
    assert len(started_meanwhile) >= 25
    assert order[-1] == slow.key  # completions come back as they finish
    assert stub.max_in_flight == 4


def test_generate_is_lazy_over_an_infinite_stream(stub: StubServer) -> None:
    pulled = 0

    def endless() -> Iterator[Request]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield req(f"n {i}")

    with make(stub, concurrency=4) as teacher:
        got = list(itertools.islice(teacher.generate(endless()), 20))
        assert len(got) == 20 and all(c.ok for c in got)
        assert pulled <= 20 + 2 * 4
        # the teacher is still usable after an abandoned generator
        assert next(iter(teacher.generate([req("again")]))).text == "again"


def test_closing_the_generator_early_stops_what_is_left(stub: StubServer) -> None:
    """The Study closes the generator when its budget is spent: nothing more goes out, and
    what was in flight is dropped, not left running against the server."""
    requests = [req(f"item {i} @delay=0.3") for i in range(60)]
    with make(stub, concurrency=4) as teacher:
        stream = teacher.generate(requests)
        first = [next(stream) for _ in range(5)]
        stream.close()
        time.sleep(0.1)  # what was on the wire at the close arrives
        sent_at_close = len(stub.requests)
        time.sleep(0.8)  # long enough for two more rounds, were any going out
        assert len(stub.requests) == sent_at_close <= 8 + 4  # two rounds answered, one out
        assert all(c.ok for c in first)
        assert [c.text for c in teacher.generate([req("after")])] == ["after"]


def test_works_inside_a_running_event_loop(stub: StubServer) -> None:
    requests = [req(f"loop {i}") for i in range(6)]

    async def main() -> list[str]:
        asyncio.get_running_loop()  # a loop is running here, as in a notebook
        with make(stub, concurrency=3) as teacher:
            return [c.text for c in teacher.generate(requests)]

    texts = asyncio.run(main())
    assert sorted(texts) == sorted(f"{i} loop" for i in range(6))


def test_satisfies_the_teacher_protocol(stub: StubServer) -> None:
    teacher = make(stub)
    assert isinstance(teacher, Teacher)
    assert teacher.name == "remote"


# -- mapping of requests and answers -----------------------------------------------------


def test_request_parameters_reach_the_server(stub: StubServer) -> None:
    params = GenerationParams(max_new_tokens=7, temperature=0.3, top_p=0.9, seed=11, stop=("zz",))
    request = Request(
        messages=(Message("system", "be brief"), Message("user", "one two three")), params=params
    )
    by_key = run(make(stub, extra_body={"top_k": 5}), [request])
    body = stub.requests[0].body
    assert body is not None
    assert body["model"] == "stub-model"
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one two three"},
    ]
    assert body["max_tokens"] == 7 and body["temperature"] == 0.3 and body["top_p"] == 0.9
    assert body["seed"] == request.seed and request.seed is not None
    assert body["stop"] == ["zz"] and body["top_k"] == 5
    assert "continue_final_message" not in body
    completion = by_key[request.key]
    assert completion.text == "three two one"
    assert completion.prompt_tokens == 5 and completion.completion_tokens == 3
    assert completion.teacher == make(stub, extra_body={"top_k": 5}).fingerprint


def test_prefill_is_sent_as_a_final_assistant_message_and_kept_in_the_text(
    stub: StubServer,
) -> None:
    request = req("alpha beta", prefill="Answer:")
    by_key = run(make(stub), [request])
    body = stub.requests[0].body
    assert body is not None
    assert body["messages"][-1] == {"role": "assistant", "content": "Answer:"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert by_key[request.key].text == "Answer:beta alpha"

    stub.reset()
    run(make(stub, prefill_mode="assistant"), [request])
    body = stub.requests[0].body
    assert body is not None and body["messages"][-1]["role"] == "assistant"
    assert "continue_final_message" not in body


def test_length_finish_and_missing_usage(stub: StubServer) -> None:
    cut = req("a b c d e f", params=GenerationParams(max_new_tokens=2))
    no_usage = req("@nousage some words here")
    by_key = run(make(stub), [cut, no_usage])
    assert by_key[cut.key].finish_reason == "length"
    assert by_key[cut.key].text == "f e"
    estimated = by_key[no_usage.key]
    assert estimated.ok and estimated.prompt_tokens > 0 and estimated.completion_tokens > 0


def test_model_is_discovered_when_not_given(stub: StubServer) -> None:
    teacher = RemoteTeacher(base_url=stub.url)
    assert teacher.fingerprint == make(stub).fingerprint
    with teacher:
        assert next(iter(teacher.generate([req("x y")]))).text == "y x"
    assert stub.requests[-1].body["model"] == "stub-model"  # type: ignore[index]


# -- failures ----------------------------------------------------------------------------


def test_429_honours_retry_after(stub: StubServer) -> None:
    request = req("@status=429x1 @retry_after=1 slow down")
    by_key = run(make(stub), [request])
    assert by_key[request.key].ok
    first, second = stub.requests
    assert first.status == 429 and second.status == 200
    assert second.started - first.finished >= 0.9


def test_retry_after_http_date_is_parsed() -> None:
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = _parse_retry_after(later)
    assert seconds is not None and 28 <= seconds <= 31
    assert _parse_retry_after("2") == 2.0
    assert _parse_retry_after("garbage") is None
    assert _parse_retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_then_succeed(stub: StubServer, status: int) -> None:
    request = req(f"@status={status}x2 recover")
    by_key = run(make(stub), [request])
    assert by_key[request.key].ok and by_key[request.key].text == "recover"
    assert [r.status for r in stub.requests] == [status, status, 200]


def test_retries_run_out_into_an_error_completion(stub: StubServer) -> None:
    request = req("@status=503 never")
    ok = req("fine")
    by_key = run(make(stub, max_retries=2), [request, ok])
    failed = by_key[request.key]
    assert failed.finish_reason == "error" and "HTTP 503" in failed.error
    assert by_key[ok.key].ok
    assert sum(r.status == 503 for r in stub.requests) == 3


def test_400_is_not_retried_and_becomes_an_error_completion(stub: StubServer) -> None:
    bad = req("@status=400 nope")
    good = [req(f"good {i}") for i in range(3)]
    by_key = run(make(stub), [bad, *good])
    failed = by_key[bad.key]
    assert failed.finish_reason == "error"
    assert "HTTP 400" in failed.error and "stub error 400" in failed.error
    assert sum(r.status == 400 for r in stub.requests) == 1
    assert all(by_key[r.key].ok for r in good)


def test_one_404_is_an_error_completion_but_a_wrong_model_stops_the_run(
    stub: StubServer,
) -> None:
    one = req("@status=404x1 gone")
    by_key = run(make(stub), [one, req("fine")])
    assert by_key[one.key].finish_reason == "error"

    teacher = RemoteTeacher("no-such-model", base_url=stub.url, backoff_base=0.01)
    with teacher, pytest.raises(TeacherError, match="404"):
        list(teacher.generate(req(f"q {i}") for i in range(10)))


def test_malformed_json_and_empty_choices_are_retried(stub: StubServer) -> None:
    malformed = req("@malformed=2 mm")
    empty = req("@empty=1 ee")
    by_key = run(make(stub), [malformed, empty])
    assert by_key[malformed.key].text == "mm" and by_key[empty.key].text == "ee"
    assert len(stub.requests) == 5


def test_always_malformed_ends_as_an_error_completion(stub: StubServer) -> None:
    always = req("@malformed always")
    by_key = run(make(stub, max_retries=2), [always])
    assert by_key[always.key].finish_reason == "error"
    assert "not JSON" in by_key[always.key].error
    assert len(stub.requests) == 3


def test_dropped_connection_is_retried(stub: StubServer) -> None:
    dropped = req("@drop=1 back")
    by_key = run(make(stub), [dropped])
    assert by_key[dropped.key].text == "back"


def test_per_request_timeout(stub: StubServer) -> None:
    slow = req("@delay=2 late")
    started = time.monotonic()
    by_key = run(make(stub, timeout=0.3, max_retries=1), [slow, req("quick")])
    assert time.monotonic() - started < 1.8
    assert by_key[slow.key].finish_reason == "error"
    assert "timed out" in by_key[slow.key].error


def test_unreachable_server_raises_teacher_error() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    teacher = RemoteTeacher("m", base_url=url, api_key=CANARY, max_retries=2, backoff_base=0.01)
    started = time.monotonic()
    with teacher, pytest.raises(TeacherError, match="could not reach") as info:
        list(teacher.generate(req(f"r {i}") for i in range(50)))
    assert time.monotonic() - started < 10
    assert url in str(info.value) and CANARY not in str(info.value)


def test_rate_limit_spaces_requests(stub: StubServer) -> None:
    requests = [req(f"rate {i}") for i in range(25)]
    started = time.monotonic()
    run(make(stub, requests_per_minute=600, concurrency=8), requests)  # 10/s, burst 10
    assert time.monotonic() - started >= 1.3


def test_token_bucket_accounting() -> None:
    now = [0.0]
    bucket = TokenBucket(600, clock=lambda: now[0])  # 10 units/s, burst 10
    assert bucket.wait_time(10) == 0
    asyncio.run(bucket.acquire(10))
    assert bucket.wait_time(5) == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.wait_time(5) == 0
    bucket.adjust(20)  # the real count was larger than the estimate
    assert bucket.level == pytest.approx(-15)
    assert bucket.wait_time(100) == pytest.approx(2.5)  # capped at the capacity


# -- secrets and identity ----------------------------------------------------------------


def test_api_key_is_sent_but_never_shown(
    stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    teacher = make(stub, api_key=CANARY, max_retries=1)
    echoed = req("@echo_auth x")
    with teacher:
        completions = list(teacher.generate([req("hello"), echoed, req("@status=500 y")]))
    assert stub.requests[0].headers["authorization"] == f"Bearer {CANARY}"
    visible = [repr(teacher), str(teacher), teacher.fingerprint, caplog.text]
    visible += [repr(c) for c in completions]
    assert not any(CANARY in text for text in visible)
    assert any("***" in (c.error or "") for c in completions if c.key == echoed.key)

    dead = RemoteTeacher(
        "m",
        base_url=f"http://127.0.0.1:{closed_port()}",
        api_key=CANARY,
        backoff_base=0.01,
        max_retries=0,
    )
    with dead, pytest.raises(TeacherError) as info:
        list(dead.generate([req("z")]))
    assert CANARY not in str(info.value) and CANARY not in repr(info.value)
    assert CANARY not in caplog.text


def test_key_from_environment_and_no_implicit_hf_token(
    stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_should_not_leak_to_self_hosted")
    run(make(stub), [req("anon")])
    assert "authorization" not in stub.requests[-1].headers

    monkeypatch.setenv("MSTUDY_API_KEY", CANARY)
    teacher = make(stub)
    assert CANARY not in repr(teacher)
    run(teacher, [req("keyed")])
    assert stub.requests[-1].headers["authorization"] == f"Bearer {CANARY}"

    monkeypatch.setenv("MY_KEY", "sk-other")
    run(make(stub, api_key_env="MY_KEY"), [req("custom env")])
    assert stub.requests[-1].headers["authorization"] == "Bearer sk-other"


def test_hf_offline_mode_does_not_block_a_local_server(
    stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    request = req("offline ok")
    assert run(make(stub), [request])[request.key].ok


def test_fingerprint_is_stable_and_covers_what_changes_outputs(stub: StubServer) -> None:
    base = make(stub).fingerprint
    assert make(stub, api_key="a-key").fingerprint == base
    assert make(stub, concurrency=3, timeout=5.0).fingerprint == base
    assert RemoteTeacher("other", base_url=stub.url).fingerprint != base
    assert make(stub, prefill_mode="assistant").fingerprint != base
    assert make(stub, extra_body={"top_k": 3}).fingerprint != base
    assert RemoteTeacher("stub-model", base_url=stub.url + "/").fingerprint == base


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError):
        RemoteTeacher()
    with pytest.raises(ConfigError):
        RemoteTeacher("m", base_url="http://x", provider="together")
    with pytest.raises(ConfigError):
        RemoteTeacher("m", base_url="localhost:8000")
    with pytest.raises(ConfigError):
        RemoteTeacher("m", base_url="http://x", concurrency=0)


def test_importing_the_module_does_not_import_huggingface_hub() -> None:
    code = (
        "import sys, mstudy; before = 'huggingface_hub' in sys.modules; "
        "import mstudy.teachers.remote; "
        "print(before, 'huggingface_hub' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    if out[0] == "True":
        pytest.skip("mstudy itself imports huggingface_hub")
    assert out[1] == "False"


def test_retry_after_pauses_the_other_requests_too(stub: StubServer) -> None:
    limited = req("@status=429x1 @retry_after=1 first")
    others = [req(f"other {i} @delay=0.1") for i in range(6)]
    run(make(stub, concurrency=2), [limited, *others])
    refusal = next(r for r in stub.requests if r.status == 429)
    quiet = [
        r for r in stub.requests if refusal.finished + 0.05 < r.started < refusal.finished + 0.9
    ]
    assert quiet == []


def test_a_server_that_goes_down_mid_run_stops_it(stub: StubServer) -> None:
    with make(stub, max_retries=1, concurrency=2) as teacher:
        assert all(c.ok for c in teacher.generate([req(f"up {i}") for i in range(4)]))
        stub.default_directives = "@drop"  # every connection now dies without an answer
        with pytest.raises(TeacherError, match="3 requests in a row"):
            list(teacher.generate(req(f"down {i}") for i in range(20)))


# -- credentials inside base_url ------------------------------------------------------------


def test_credentials_in_base_url_are_sent_but_never_shown(
    stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    import base64

    caplog.set_level(logging.DEBUG)
    url = stub.url.replace("http://", f"http://user:{CANARY}@")
    teacher = RemoteTeacher("stub-model", base_url=url, backoff_base=0.01, max_retries=0)
    with teacher:
        completions = list(teacher.generate([req("hello"), req("@echo_auth x")]))
    basic = base64.b64encode(f"user:{CANARY}".encode()).decode()
    assert stub.requests[0].headers["authorization"] == f"Basic {basic}"  # it was sent
    assert teacher.base_url == stub.url.replace("http://", "http://***@")
    visible = [repr(teacher), str(teacher), teacher.fingerprint, caplog.text]
    visible += [repr(c) for c in completions]
    assert not any(CANARY in text or basic in text for text in visible)
    # the same server without credentials: the same outputs, the same fingerprint
    assert teacher.fingerprint == make(stub).fingerprint


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{CANARY}@127.0.0.1:{{port}}/v1",
        f"http://{CANARY}@127.0.0.1:{{port}}/v1",
        f"http://127.0.0.1:{{port}}/v1?api_key={CANARY}",
        f"http://127.0.0.1:{{port}}/v1?x=1&token={CANARY}",
    ],
)
def test_credentials_in_base_url_stay_out_of_errors_and_logs(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dead = RemoteTeacher(
        "m", base_url=url.format(port=closed_port()), backoff_base=0.01, max_retries=0
    )
    with dead, pytest.raises(TeacherError) as info:
        list(dead.generate([req("z")]))
    assert "could not reach" in str(info.value)
    visible = [str(info.value), repr(info.value), repr(dead), str(dead.base_url)]
    visible += [dead.fingerprint, caplog.text, *(r.getMessage() for r in caplog.records)]
    assert all(CANARY not in text for text in visible)
    with pytest.raises(ConfigError) as bad:
        RemoteTeacher("m", base_url=url.replace("http://", "ftp://").format(port=1))
    assert CANARY not in str(bad.value) and bad.value.parameter == "base_url"


def test_no_model_given_and_no_server_error_masks_base_url_credentials() -> None:
    url = f"http://user:{CANARY}@127.0.0.1:{closed_port()}/v1"
    with pytest.raises(TeacherError) as info:
        RemoteTeacher(base_url=url, timeout=2).fingerprint  # noqa: B018 - asks the server
    assert CANARY not in str(info.value) and "***@127.0.0.1" in str(info.value)


# -- foreign exceptions, sorted in one table ------------------------------------------------


def test_foreign_exceptions_are_sorted_by_the_table() -> None:
    import json

    import httpx2
    from huggingface_hub.errors import InferenceTimeoutError

    teacher = RemoteTeacher("m", base_url="http://127.0.0.1:1/v1")
    request = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")

    def wrapped(cause: BaseException) -> BaseException:
        try:
            raise InferenceTimeoutError("Inference call timed out") from cause
        except InferenceTimeoutError as exc:
            return exc

    cases: list[tuple[BaseException, str, bool]] = [
        (httpx2.ConnectError("refused", request=request), "unreachable", True),
        (httpx2.ReadTimeout("slow", request=request), "timeout", True),
        (wrapped(httpx2.ConnectTimeout("no", request=request)), "unreachable", True),
        (wrapped(httpx2.ReadTimeout("slow", request=request)), "timeout", True),
        (asyncio.TimeoutError(), "timeout", True),
        (json.JSONDecodeError("x", "doc", 0), "response", True),
        (httpx2.UnsupportedProtocol("ftp", request=request), "other", False),
        (ValueError("Invalid input data"), "other", False),  # no message is read
        (RuntimeError("a bug"), "other", False),
    ]
    for exc, kind, retryable in cases:
        failure = teacher._classify(exc)
        assert (failure.kind, failure.retryable) == (kind, retryable), exc
    response = httpx2.Response(429, headers={"retry-after": "3"}, request=request, text="busy")
    status = httpx2.HTTPStatusError("429", request=request, response=response)
    failure = teacher._classify(status)
    assert (failure.kind, failure.status, failure.retry_after) == ("http", 429, 3.0)
    assert failure.retryable and "busy" in failure.reason


def test_a_self_hosted_server_gets_a_pool_the_teacher_owns(stub: StubServer) -> None:
    teacher = make(stub, concurrency=3)
    with teacher:
        assert [c.text for c in teacher.generate([req("a b")])] == ["b a"]
        assert teacher._client is None  # huggingface_hub's client is not used, nor patched
        assert teacher._http is not None and not teacher._http.is_closed
        pool = teacher._http
    assert pool.is_closed
