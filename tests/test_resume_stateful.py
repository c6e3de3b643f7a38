"""Exactly-once resume with stateful filters: ``dedup`` and ``near_dedup`` killed with SIGKILL
at several points decide, once resumed, exactly as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mstudy import (
    CapabilityError,
    Paraphrase,
    ScriptedTeacher,
    Study,
)
from mstudy.filters.minhash import NearDedup

HARNESS = Path(__file__).parent / "harness" / "stateful_study.py"
N = 1200


def write_records(path: Path) -> None:
    """Records 600+ repeat records 0-599: every 5th exactly, the others with one word more."""
    with open(path, "w") as handle:
        for i in range(N):
            j = i % 600
            text = f"Tomas Berg {j} keeps the old lantern of harbour {j} near gate {j}."
            if i >= 600 and i % 5:
                text = text.replace(" near ", " close and near ")
            handle.write(json.dumps({"id": f"r{i}", "text": text}) + "\n")


def run(data: Path, out: Path, journal: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HARNESS), str(data), str(out), str(journal), *extra]
    )


def outputs(out: Path) -> tuple[bytes, bytes]:
    return (out / "enriched.jsonl").read_bytes(), (out / "rejects.jsonl").read_bytes()


def lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[bytes, bytes]]:
    tmp = tmp_path_factory.mktemp("clean")
    data = tmp / "data.jsonl"
    write_records(data)
    assert run(data, tmp / "out", tmp / "journal").wait(timeout=300) == 0
    expected = outputs(tmp / "out")
    rejects = [json.loads(line) for line in expected[1].splitlines()]
    reasons = {(r["stage"], r["reason"]) for r in rejects}
    # both filters decide rows from what they saw hundreds of records earlier
    assert reasons == {("filter:dedup", "duplicate"), ("filter:near_dedup", "near duplicate")}
    return data, expected


@pytest.mark.parametrize("kill_at", [[150], [450, 700], [620, 900, 1040]])
def test_killed_runs_with_stateful_filters_resume_byte_identical(
    tmp_path: Path, clean: tuple[Path, tuple[bytes, bytes]], kill_at: list[int]
) -> None:
    data, expected = clean
    out, journal, log = tmp_path / "out", tmp_path / "journal", tmp_path / "calls.log"
    extra = ("--calls-log", str(log), "--delay", "0.001")
    for calls in kill_at:  # kill when the teacher has made this many calls in all (of 1080)
        proc = run(data, out, journal, *extra)
        deadline = time.monotonic() + 120
        while lines(log) < calls and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert (journal / "accepted.jsonl").exists()
    assert run(data, out, journal, *extra).wait(timeout=300) == 0
    assert outputs(out) == expected
    assert not journal.exists()


class Remembering:
    """A third-party filter that keeps state but cannot save it."""

    name = "remembering"

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def reset(self) -> None:
        self._seen.clear()

    def check(self, example: object) -> object:
        return example


def test_a_stateful_filter_without_saved_state_is_refused_in_a_journaled_run(
    tmp_path: Path,
) -> None:
    study = Study(
        ScriptedTeacher("So: {{ text }}"),
        [Paraphrase()],
        [Remembering()],
        journal=tmp_path / "journal",
    )
    with pytest.raises(CapabilityError) as caught:
        study.run([{"text": "Ada keeps a lamp."}])
    assert caught.value.component == "remembering"
    assert caught.value.missing == ["get_state", "set_state"]
    assert "remembering" in str(caught.value) and "get_state" in str(caught.value)
    assert not (tmp_path / "journal").exists()  # refused before anything was made
    # without a journal it runs: nothing has to survive a resume there
    assert (
        Study(ScriptedTeacher("So: {{ text }}"), [Paraphrase()], [Remembering()])
        .run([{"text": "Ada keeps a lamp."}])
        .accepted
        == 1
    )


def test_near_dedup_state_round_trips_with_eviction() -> None:
    """Restored from JSON, near_dedup keeps deciding as the original, max_docs included."""
    from mstudy.records import Example, Provenance

    def example(i: int, text: str) -> Example:
        return Example(f"e{i}", {"text": text}, Provenance("s", "p", "1", "h", "t", {}, 0))

    texts = [f"word{i % 37} alpha beta gamma delta {i % 53} epsilon" for i in range(9000)]
    a = NearDedup(threshold=0.5, max_docs=100, scope="global")
    a.check_many([example(i, t) for i, t in enumerate(texts[:8500])])
    b = NearDedup(threshold=0.5, max_docs=100, scope="global")
    b.set_state(json.loads(json.dumps(a.get_state())))
    rest = [example(i, t) for i, t in enumerate(texts[8500:], 8500)]
    assert [type(v).__name__ for v in a.check_many(rest)] == [
        type(v).__name__ for v in b.check_many(rest)
    ]
    assert a.get_state() == b.get_state()
    with pytest.raises(ValueError, match="num_perm"):
        NearDedup(num_perm=64).set_state(a.get_state())
