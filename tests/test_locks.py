"""One run at a time per output and journal: a second is refused at once, naming the path and
the process holding it; the lock of a killed run is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mstudy import Reverse, ScriptedTeacher, Study
from mstudy._journal import Journal
from mstudy._locks import PathLock, lock_path
from mstudy.errors import LockedError, SinkError
from mstudy.sinks.base import partial_path
from mstudy.sinks.jsonl import JSONLSink

HARNESS = Path(__file__).parent / "harness" / "crash_study.py"
REPLIES = {"reverse": "{{ object }} holds {{ subject }}."}
RECORDS = [
    {"id": f"r{i}", "text": f"A{i} is in B{i}.", "subject": f"A{i}", "object": f"B{i}"}
    for i in range(20)
]


def hold(target: Path) -> subprocess.Popen[str]:
    """Another process holding the lock on ``target`` until it is killed."""
    code = textwrap.dedent(
        f"""
        import time
        from mstudy._locks import PathLock
        lock = PathLock({str(target)!r}).acquire()
        print("held", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_env()
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_held_lock_is_refused_with_the_path_and_the_holders_pid(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    holder = hold(target)
    try:
        with pytest.raises(LockedError) as info:
            PathLock(target).acquire()
        assert info.value.path == str(target) and info.value.pid == holder.pid
        assert str(target) in str(info.value) and str(holder.pid) in str(info.value)
        assert isinstance(info.value, SinkError)
        with pytest.raises(LockedError):  # a sink into it is refused too, and writes nothing
            JSONLSink(target)
        assert not target.exists() and not partial_path(target).exists()
    finally:
        kill(holder)


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    out, journal = tmp_path / "out.jsonl", tmp_path / "journal"
    holders = [hold(out), hold(journal)]
    for holder in holders:
        kill(holder)
    assert lock_path(out).read_text() == f"{holders[0].pid}\n"  # left behind by the dead
    study = Study(ScriptedTeacher(REPLIES), [Reverse()], sinks=[out], journal=journal)
    report = study.run(RECORDS)
    assert report.status == "done" and len(out.read_text().splitlines()) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # lock files gone


def test_a_released_lock_can_be_taken_again_and_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "data"
    with PathLock(target) as lock:
        assert lock.held and lock_path(target).read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockedError) as info:  # within one process too
            PathLock(target).acquire()
        assert info.value.pid == os.getpid()
    assert not lock.held and not lock_path(target).exists()
    with PathLock(target):
        pass
    assert list(tmp_path.iterdir()) == []


def test_an_open_journal_refuses_a_second_and_is_free_once_closed(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    first = Journal(directory, {"study": 1})
    with pytest.raises(LockedError) as info:
        Journal(directory, {"study": 1})
    assert info.value.path == str(directory) and info.value.pid == os.getpid()
    first.close()
    with Journal(directory, {"study": 1}) as again:
        assert not again.resumed
    Journal(directory, {"study": 1}).remove()
    assert list(tmp_path.iterdir()) == []


def write_records(path: Path, n: int) -> None:
    with open(path, "w") as handle:
        for i in range(n):
            subject, place = f"Thing {i}", f"Place {i % 50}"
            row = {"id": f"r{i}", "text": f"{subject} rests in {place}.", "subject": subject}
            handle.write(json.dumps({**row, "object": place}) + "\n")


def harness(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(HARNESS), str(data), str(out), *extra]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    tmp = tmp_path_factory.mktemp("clean")
    data = tmp / "data.jsonl"
    write_records(data, 150)
    subprocess.run(harness(data, tmp / "out"), check=True, timeout=300, env=_env())
    files = {
        name: (tmp / "out" / name).read_bytes() for name in ("enriched.jsonl", "rejects.jsonl")
    }
    return data, files


@pytest.mark.parametrize("journaled", [True, False], ids=["journal", "no-journal"])
def test_a_second_run_into_the_same_output_is_refused_and_the_first_completes(
    tmp_path: Path, clean: tuple[Path, dict[str, bytes]], journaled: bool
) -> None:
    data, expected = clean
    out, journal = tmp_path / "out", tmp_path / "journal"
    args = harness(
        data, out, *(["--journal", str(journal)] if journaled else []), "--delay", "0.01"
    )
    first = subprocess.Popen(args, env=_env())
    held = lock_path(journal if journaled else out / "enriched.jsonl")
    deadline = time.monotonic() + 60
    while not held.exists():  # the first run is under way
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    second = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first run ended before the second tried"
    assert second.returncode == 3, second.stderr
    refused = json.loads(second.stdout)
    assert refused["pid"] == first.pid
    assert refused["locked"] == str(journal if journaled else out / "enriched.jsonl")
    assert str(first.pid) in refused["message"] and refused["locked"] in refused["message"]
    assert first.wait(timeout=300) == 0
    for name, content in expected.items():
        assert (out / name).read_bytes() == content
    assert sorted(p.name for p in out.iterdir()) == [
        "enriched.jsonl",
        "enriched.parquet",
        "rejects.jsonl",
    ]


def test_a_new_run_clears_the_partial_file_of_a_killed_one(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    code = textwrap.dedent(
        f"""
        import os, signal
        from mstudy.sinks.jsonl import JSONLSink
        sink = JSONLSink({str(target)!r})
        sink.write([{{"text": "row %d of the dead run" % i}} for i in range(50)])
        sink._file.handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert partial_path(target).stat().st_size > 0
    report = Study(ScriptedTeacher(REPLIES), [Reverse()], sinks=[target]).run(RECORDS[:3])
    assert report.accepted == 3 and "dead run" not in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_stale_partial_is_replaced_not_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not ours to overwrite")
    target = tmp_path / "out.jsonl"
    partial_path(target).symlink_to(elsewhere)
    with JSONLSink(target) as sink:
        sink.write([{"n": 1}])
    assert elsewhere.read_text() == "not ours to overwrite"
    assert not target.is_symlink() and target.read_text() == '{"n": 1}\n'


def test_two_paths_to_one_folder_share_the_lock(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    with PathLock(real / "out.jsonl"), pytest.raises(LockedError):
        PathLock(tmp_path / "link" / "out.jsonl").acquire()
