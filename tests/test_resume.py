"""Exactly-once resume: kill -9 a real run at random instants, rerun, compare with a clean run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mstudy import (
    ConfigError,
    ExactDedup,
    Paraphrase,
    Reverse,
    ScriptedTeacher,
    SinkError,
    Study,
)

HARNESS = Path(__file__).parent / "harness" / "crash_study.py"


def write_records(path: Path, n: int) -> None:
    with open(path, "w") as handle:
        for i in range(n):
            row = {
                "id": f"r{i}",
                "text": f"Thing {i} rests in Place {i % 500}.",
                "subject": f"Thing {i}",
                "object": f"Place {i % 500}",
            }
            handle.write(json.dumps(row) + "\n")
        handle.write("{not json\n")  # an input rejection in the stream


def harness(*args: str) -> list[str]:
    return [sys.executable, str(HARNESS), *args]


def outputs(out: Path) -> dict[str, bytes]:
    files = {name: (out / name).read_bytes() for name in ("enriched.jsonl", "rejects.jsonl")}
    import pyarrow.parquet as pq

    files["parquet"] = json.dumps(pq.read_table(out / "enriched.parquet").to_pylist()).encode()
    return files


def crash_and_resume(
    tmp_path: Path, kills: int, seed: int, delay: float, window: tuple[float, float] = (0.5, 1.5)
) -> int:
    data = tmp_path / "data.jsonl"
    write_records(data, 2000)
    clean = tmp_path / "clean"
    subprocess.run(harness(str(data), str(clean)), check=True)
    expected = outputs(clean)
    rows = expected["enriched.jsonl"].splitlines()
    assert len(rows) == len(set(rows)) > 3000

    out, journal, log = tmp_path / "out", tmp_path / "journal", tmp_path / "calls.log"
    args = harness(
        str(data),
        str(out),
        "--journal",
        str(journal),
        "--calls-log",
        str(log),
        "--delay",
        str(delay),
    )
    rng = random.Random(seed)
    killed = 0
    for _ in range(kills):
        proc = subprocess.Popen(args)
        time.sleep(rng.uniform(*window))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        if proc.returncode == 0:
            break
        if (out / "enriched.jsonl").exists():  # killed after committing, before cleaning up
            assert (out / "enriched.jsonl").read_bytes() == expected["enriched.jsonl"]
    subprocess.run(args, check=True, timeout=300)
    assert outputs(out) == expected
    assert not journal.exists()
    calls = log.read_text().split()
    # Each kill may lose at most the one call in flight before its result was committed.
    assert len(calls) - len(set(calls)) <= killed
    assert len(set(calls)) == 3 * 2000
    return killed


def test_kill_and_resume_gives_the_clean_output(tmp_path: Path) -> None:
    assert crash_and_resume(tmp_path, kills=3, seed=1, delay=0.0005) >= 2


@pytest.mark.slow
def test_kill_and_resume_many_times(tmp_path: Path) -> None:
    # About 36 s of teacher work, killed every 0.4-1.2 s: each run gets a little further.
    killed = crash_and_resume(tmp_path, kills=24, seed=2, delay=0.006, window=(0.4, 1.2))
    assert killed == 24


RECORDS = [
    {"id": f"r{i}", "text": f"A{i} is in B{i}.", "subject": f"A{i}", "object": f"B{i}"}
    for i in range(50)
]
REPLIES = {"reverse": "{{ object }} holds {{ subject }}.", "paraphrase": "So: {{ text }}"}


class Interrupt(Exception):
    pass


def interrupted_run(tmp_path: Path, stop_after: int) -> tuple[Path, Path]:
    out, journal = tmp_path / "out.jsonl", tmp_path / "journal"

    def reply(request: object) -> str:
        raise AssertionError

    calls = 0

    def counting(request: object) -> str:
        nonlocal calls
        calls += 1
        if calls > stop_after:
            raise Interrupt
        from mstudy._templates import render

        v = request.variables  # type: ignore[attr-defined]
        return render(REPLIES[request.strategy], v)  # type: ignore[attr-defined]

    class Stopping(ScriptedTeacher):
        def complete(self, request):  # type: ignore[no-untyped-def]
            counting(request)
            return super().complete(request)

    study = Study(
        Stopping(REPLIES, fingerprint="t"),
        [Reverse()],
        sinks=[out],
        journal=journal,
        checkpoint_every=0,
    )
    with pytest.raises(Interrupt):
        study.run(RECORDS)
    return out, journal


def test_changed_study_refuses_to_resume_unless_restarted(tmp_path: Path) -> None:
    out, journal = interrupted_run(tmp_path, stop_after=20)
    assert journal.exists() and not out.exists()
    changed = Study(
        ScriptedTeacher(REPLIES, fingerprint="t"), [Reverse(n=2)], sinks=[out], journal=journal
    )
    with pytest.raises(ConfigError, match="the study changed since the interrupted run"):
        changed.run(RECORDS)
    report = changed.run(RECORDS, restart=True)
    assert report.accepted == 100 and out.exists()


def test_resume_continues_and_counts_once(tmp_path: Path) -> None:
    out, journal = interrupted_run(tmp_path, stop_after=20)
    teacher = ScriptedTeacher(REPLIES, fingerprint="t")
    report = Study(teacher, [Reverse()], sinks=[out], journal=journal).run(RECORDS)
    assert report.records == 50 and report.accepted == 50 and report.requests == 50
    assert teacher.calls == 30  # the first 20 came from the cache or the checkpoint
    assert len(out.read_text().splitlines()) == 50


def test_changed_source_refuses_to_resume(tmp_path: Path) -> None:
    out, journal = interrupted_run(tmp_path, stop_after=20)
    other = [{**r, "id": "x" + r["id"]} for r in RECORDS]
    study = Study(
        ScriptedTeacher(REPLIES, fingerprint="t"), [Reverse()], sinks=[out], journal=journal
    )
    with pytest.raises(ConfigError, match="the source changed"):
        study.run(other)


def test_unwritable_output_keeps_the_journal_for_a_later_resume(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output folder should be")
    journal = tmp_path / "journal"
    teacher = ScriptedTeacher(REPLIES, fingerprint="t")
    study = Study(
        teacher, [Reverse(), Paraphrase()], sinks=[blocker / "out.jsonl"], journal=journal
    )
    with pytest.raises(SinkError, match="not-a-dir"):
        study.run(RECORDS)
    assert journal.exists() and teacher.calls == 100
    blocker.unlink()
    again = ScriptedTeacher(REPLIES, fingerprint="t")
    report = Study(
        again, [Reverse(), Paraphrase()], sinks=[blocker / "out.jsonl"], journal=journal
    ).run(RECORDS)
    assert again.calls == 0 and report.accepted == 100
    assert len((blocker / "out.jsonl").read_text().splitlines()) == 100


def test_torn_spool_tail_is_cut_back(tmp_path: Path) -> None:
    out, journal = interrupted_run(tmp_path, stop_after=20)
    with open(journal / "accepted.jsonl", "ab") as handle:
        handle.write(b'{"id": "torn", "text": "half a ro')  # a write cut by a crash
    report = Study(
        ScriptedTeacher(REPLIES, fingerprint="t"), [Reverse()], sinks=[out], journal=journal
    ).run(RECORDS)
    lines = out.read_text().splitlines()
    assert report.accepted == 50 and len(lines) == 50 and "torn" not in out.read_text()
    assert os.path.exists(out)


def test_slow_checkpoints_are_spaced_out(tmp_path: Path) -> None:
    class SlowState(ExactDedup):
        """A dedup whose state takes long to save, as a large one does."""

        saves = 0

        def get_state(self) -> bytes:
            SlowState.saves += 1
            time.sleep(0.05)
            return super().get_state()

    rows = [{"id": str(i), "text": f"Thing {i} is in Place {i}."} for i in range(300)]
    study = Study(
        ScriptedTeacher("Thing {{ sample }} said again."),
        [Paraphrase(min_ratio=0.1)],
        [SlowState()],
        sinks=[tmp_path / "out.jsonl"],
        journal=tmp_path / "journal",
        checkpoint_every=0,
    )
    report = study.run(rows)
    assert report.status == "done" and report.records == 300
    # without spacing: a checkpoint after every record; with it, saving stays ~5% of the run
    assert SlowState.saves < 20


class Killed(BaseException):
    """A kill: nothing after it runs (not an Exception, so no handler cleans up)."""


FILE_CHANGES = ("rename", "replace", "unlink", "remove", "rmdir")


def remove_killed_at(monkeypatch: pytest.MonkeyPatch, step: int) -> list[str]:
    """Make ``Journal.remove`` die at its ``step``-th file change (1-based; every change
    after it fails too, as in a dead process). Returns the changes it got to, in order."""
    from mstudy._journal import Journal

    done: list[str] = []
    remove = Journal.remove

    def dying_remove(journal: Journal) -> None:
        originals = {name: getattr(os, name) for name in FILE_CHANGES}

        def wrap(name: str) -> Any:
            def change(*args: Any, **kwargs: Any) -> Any:
                if len(done) + 1 >= step:
                    raise Killed
                done.append(f"{name} {args[0]}")
                return originals[name](*args, **kwargs)

            return change

        for name in FILE_CHANGES:
            monkeypatch.setattr(os, name, wrap(name))
        try:
            remove(journal)
        finally:
            for name, original in originals.items():
                monkeypatch.setattr(os, name, original)

    monkeypatch.setattr(Journal, "remove", dying_remove)
    return done


def journaled_study(tmp_path: Path) -> Study:
    return Study(
        ScriptedTeacher(REPLIES, fingerprint="t"),
        [Reverse(), Paraphrase()],
        [ExactDedup()],
        sinks=[tmp_path / "out.jsonl"],
        rejects=tmp_path / "rejects.jsonl",
        journal=tmp_path / "journal",
    )


def test_a_kill_at_any_step_of_removing_the_journal_leaves_later_runs_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mstudy._journal import Journal

    records = [*RECORDS, RECORDS[0]]  # a duplicate: rejects are written too
    journaled_study(tmp_path / "clean").run(records)
    expected = {n: (tmp_path / "clean" / n).read_bytes() for n in ("out.jsonl", "rejects.jsonl")}
    assert expected["rejects.jsonl"]

    original = Journal.remove
    steps = remove_killed_at(monkeypatch, step=10**9)  # no kill: count the steps
    journaled_study(tmp_path / "count").run(records)
    assert len(steps) >= 4, steps
    for step in range(1, len(steps) + 1):
        where = tmp_path / f"kill-{step}"
        remove_killed_at(monkeypatch, step)
        with pytest.raises(Killed):
            journaled_study(where).run(records)
        monkeypatch.setattr(Journal, "remove", original)
        report = journaled_study(where).run(records)  # the next run, and the one after
        report = journaled_study(where).run(records)
        assert report.status == "done", step
        assert {n: (where / n).read_bytes() for n in expected} == expected, step
        assert sorted(p.name for p in where.iterdir()) == ["out.jsonl", "rejects.jsonl"], step
