"""The batch teacher against a loopback server with the files and batches endpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_stub import BatchStub
from conftest import read_jsonl

import mstudy
from mstudy.budget import Budget
from mstudy.errors import TeacherError
from mstudy.records import GenerationParams, Message, Request
from mstudy.teachers.batch import BatchTeacher
from mstudy.teachers.batch_files import read_results, write_input

pytest.importorskip("openai")

TESTS = Path(__file__).parent


@pytest.fixture
def server() -> Iterator[BatchStub]:
    with BatchStub() as stub:
        stub.state.delay = 0.1
        yield stub


def teacher(server: BatchStub, tmp_path: Path, **kwargs: object) -> BatchTeacher:
    options: dict[str, object] = {"poll_interval": 0.02, "api_key": "sk-test-secret-123"}
    options.update(kwargs)
    return BatchTeacher(
        "stub-model", base_url=server.url, ledger=tmp_path / "ledger.jsonl", **options
    )  # type: ignore[arg-type]


def requests(count: int, prefix: str = "fact") -> list[Request]:
    params = GenerationParams(max_new_tokens=8, temperature=0.0)
    return [
        Request((Message("user", f"{prefix} number {i} is here"),), params) for i in range(count)
    ]


def test_every_request_is_answered_once_and_maps_back_by_key(
    server: BatchStub, tmp_path: Path
) -> None:
    asked = requests(7)
    done = {c.key: c for c in teacher(server, tmp_path).generate(asked)}
    assert set(done) == {r.key for r in asked}
    for request in asked:
        words = request.messages[-1].content.split()[::-1]
        assert done[request.key].text == " ".join(words)
        assert done[request.key].finish_reason == "stop"
        assert done[request.key].completion_tokens == len(words)
    assert set(server.state.submissions.values()) == {1}


def test_rounds_over_the_limits_are_split_into_several_batches(
    server: BatchStub, tmp_path: Path
) -> None:
    asked = requests(10)
    one = len(json.dumps({"x": 1}))  # any line is longer than this
    by_count = teacher(server, tmp_path, max_batch_requests=3)
    assert len(list(by_count.generate(asked))) == 10
    assert by_count.stats["batches_created"] == 4
    by_size = teacher(server, tmp_path / "b", max_batch_bytes=one)
    assert len(list(by_size.generate(requests(3, "other")))) == 3
    assert by_size.stats["batches_created"] == 3
    assert set(server.state.submissions.values()) == {1}


def test_failed_items_are_submitted_again_alone_and_lasting_ones_end_as_errors(
    server: BatchStub, tmp_path: Path
) -> None:
    asked = requests(6)
    flaky, broken, lost = asked[0].key, asked[1].key, asked[2].key

    def fault(custom_id: str, submission: int) -> str | None:
        if custom_id == flaky and submission == 1:
            return "500"
        if custom_id == lost and submission == 1:
            return "missing"
        return "400" if custom_id == broken else None

    server.state.item_fault = fault
    batch = teacher(server, tmp_path)
    done = {c.key: c for c in batch.generate(asked)}
    assert done[flaky].ok and done[lost].ok
    assert done[broken].finish_reason == "error"
    assert "HTTP 400" in (done[broken].error or "")
    assert server.state.submissions[flaky] == 2 and server.state.submissions[lost] == 2
    assert server.state.submissions[broken] == 1
    assert all(server.state.submissions[r.key] == 1 for r in asked[3:])
    assert batch.stats["resubmitted"] == 2


def test_an_expired_batch_keeps_its_answers_and_submits_only_the_rest(
    server: BatchStub, tmp_path: Path
) -> None:
    server.state.expire_next, server.state.expire_keep = 1, 2
    asked = requests(5)
    done = {c.key: c for c in teacher(server, tmp_path).generate(asked)}
    assert all(c.ok for c in done.values()) and len(done) == 5
    counts = [server.state.submissions[r.key] for r in asked]
    assert counts == [1, 1, 2, 2, 2]


def test_a_refused_batch_ends_its_requests_with_the_providers_reason(
    server: BatchStub, tmp_path: Path
) -> None:
    server.state.fail_next = 1
    done = list(teacher(server, tmp_path).generate(requests(3)))
    assert [c.finish_reason for c in done] == ["error"] * 3
    assert all("stub: batch refused" in (c.error or "") for c in done)
    assert not server.state.submissions  # nothing ran, nothing submitted again


def test_submissions_are_bounded(server: BatchStub, tmp_path: Path) -> None:
    server.state.item_fault = lambda custom_id, n: "500"
    (done,) = teacher(server, tmp_path, max_submissions=2).generate(requests(1))
    assert done.finish_reason == "error" and "submitted 2 times" in (done.error or "")
    assert list(server.state.submissions.values()) == [2]


def test_results_already_back_are_read_again_not_bought_again(
    server: BatchStub, tmp_path: Path
) -> None:
    asked = requests(4)
    first = sorted((c.key, c.text) for c in teacher(server, tmp_path).generate(asked))
    # the run died before storing them: the same requests again, through the same ledger
    again = sorted((c.key, c.text) for c in teacher(server, tmp_path).generate(asked))
    assert again == first
    assert set(server.state.submissions.values()) == {1}
    # ... unless the provider no longer has the results file: then they are asked again
    server.state.lost_files |= server.state.output_files
    third = sorted((c.key, c.text) for c in teacher(server, tmp_path).generate(asked))
    assert third == first
    assert set(server.state.submissions.values()) == {2}


def test_a_batch_created_just_before_a_kill_is_found_by_its_metadata(
    server: BatchStub, tmp_path: Path
) -> None:
    from mstudy.teachers.batch_files import input_line
    from mstudy.teachers.batch_ledger import Ledger

    asked = requests(3)
    batch = teacher(server, tmp_path)
    client = batch._openai()
    payload = b"".join(input_line(r, "stub-model") for r in asked)
    file = client.files.create(file=("in.jsonl", payload), purpose="batch")
    with Ledger(batch.ledger_path) as ledger:  # the intent was written ...
        ledger.intend("s1", file.id, [r.key for r in asked], 1)
    client.batches.create(  # ... and the batch created, but the run died before noting it
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"mstudy_submission": "s1"},
    )
    done = list(batch.generate(asked))
    assert len(done) == 3 and all(c.ok for c in done)
    assert batch.stats == {**batch.stats, "batches_created": 0, "batches_adopted": 1}
    assert set(server.state.submissions.values()) == {1}


KILLED_RUN = """
import sys
import mstudy
from mstudy.teachers.batch import BatchTeacher

url, out = sys.argv[1], sys.argv[2]
teacher = BatchTeacher("stub-model", base_url=url, ledger=out + "/ledger.jsonl",
                       poll_interval=0.05, api_key="sk-test-secret-123")
study = mstudy.Study(teacher=teacher, strategies=[mstudy.Paraphrase()],
                     sinks=[out + "/rows.jsonl"], rejects=out + "/rejects.jsonl",
                     cache=out + "/cache.sqlite", progress=False)
records = [{"id": f"r{i}", "text": f"Entity {i} was founded in year {1900 + i}."}
           for i in range(12)]
study.run(records)
"""


def _run(url: str, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    return subprocess.Popen([sys.executable, "-c", KILLED_RUN, url, str(out)], env=env)


def test_kill_9_while_polling_then_the_same_command_pays_nothing_twice(
    tmp_path: Path,
) -> None:
    with BatchStub() as clean:
        clean.state.delay = 0.05
        reference = tmp_path / "reference"
        reference.mkdir()
        assert _run(clean.url, reference).wait(timeout=120) == 0
    with BatchStub() as server:
        server.state.delay = 3.0
        out = tmp_path / "killed"
        out.mkdir()
        process = _run(server.url, out)
        ledger = out / "ledger.jsonl"
        deadline = time.monotonic() + 60
        while b'"submitted"' not in (ledger.read_bytes() if ledger.exists() else b""):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (out / "rows.jsonl").exists()
        assert _run(server.url, out).wait(timeout=120) == 0
        assert set(server.state.submissions.values()) == {1}
        assert len(server.state.order) == 1

    # the same rows as an uninterrupted run (against a server on another port: another
    # teacher fingerprint, which provenance names)
    def rows(path: Path) -> list[dict[str, object]]:
        found = read_jsonl(path)
        for row in found:
            row["provenance"].pop("teacher")
        return found

    assert rows(out / "rows.jsonl") == rows(reference / "rows.jsonl")
    assert b"sk-test-secret" not in ledger.read_bytes()


def test_budgets_and_dry_runs_use_the_batch_price(server: BatchStub, tmp_path: Path) -> None:
    budget = Budget(max_cost=1.0, price_in=2.0, price_out=8.0)
    study = mstudy.Study(
        teacher=teacher(server, tmp_path), strategies=[mstudy.Paraphrase()], budget=budget
    )
    assert study.budget is not None and study.budget.price_factor == 0.5
    estimate = study.estimate([{"text": "Ada Quill founded Quillworks."}])
    listed = mstudy.Study(teacher="scripted", strategies=[mstudy.Paraphrase()], budget=budget)
    full = listed.estimate([{"text": "Ada Quill founded Quillworks."}])
    assert estimate.max_cost is not None and full.max_cost is not None
    assert estimate.max_cost == pytest.approx(full.max_cost / 2)


def test_the_key_stays_out_of_reprs_errors_and_the_ledger(tmp_path: Path) -> None:
    with BatchStub() as server:
        url = server.url
    down = BatchTeacher(
        "stub-model",
        base_url=url,
        api_key="sk-very-secret-key",
        ledger=tmp_path / "ledger.jsonl",
        timeout=2,
    )
    assert "sk-very-secret-key" not in repr(down)
    with pytest.raises(TeacherError) as caught:
        list(down.generate(requests(1)))
    assert "sk-very-secret-key" not in str(caught.value)


def test_without_the_openai_client_the_error_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    batch = BatchTeacher("m", base_url="http://127.0.0.1:9/v1", ledger=tmp_path / "l.jsonl")
    with pytest.raises(TeacherError, match=r"pip install 'mstudy\[batch\]'"):
        list(batch.generate(requests(1)))


def test_the_input_file_holds_one_line_per_request_keyed_by_request(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    asked = [
        Request(
            (Message("user", "q"),),
            GenerationParams(max_new_tokens=5, seed=3, stop=("\n",), response_schema=schema),
            prefill="Answer:",
        )
    ]
    path = tmp_path / "in.jsonl"
    assert write_input(asked, path, "m") == 1
    (line,) = read_jsonl(path)
    assert line["custom_id"] == asked[0].key
    body = line["body"]
    assert body["messages"][-1] == {"role": "assistant", "content": "Answer:"}
    assert body["continue_final_message"] is True and body["stop"] == ["\n"]
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert body["seed"] == asked[0].seed


def test_result_lines_that_cannot_be_mapped_back_are_skipped() -> None:
    lines = [
        b'{"custom_id": "a", "response": {"status_code": 200, "body": {"choices": []}}}',
        b"not json",
        b'{"no_id": 1}',
        b'{"custom_id": "b", "response": {"status_code": 503, "body": {}}, "error": null}',
        b'{"custom_id": "c", "response": null, "error": {"code": "batch_expired", '
        b'"message": "This request could not be executed before the completion window"}}',
    ]
    items = list(read_results(lines))
    assert [item.custom_id for item in items] == ["a", "b", "c"]
    assert items[1].retryable and items[2].retryable  # type: ignore[union-attr]
