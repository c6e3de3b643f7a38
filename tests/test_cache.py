"""The call cache: shared across runs and processes, keyed by teacher and request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mstudy import Completion, GenerationParams, Message, Request
from mstudy.cache import CallCache

WRITER = """
import sys
from mstudy.cache import CallCache
from mstudy.records import Completion
cache = CallCache(sys.argv[1], commit_every=7)
for i in range(400):
    cache.put("t", Completion(f"{sys.argv[2]}-{i}", "x" * 50, completion_tokens=1))
    cache.get("t", f"{sys.argv[2]}-{i // 2}")
cache.close()
"""


def test_two_processes_write_one_cache(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name]) for name in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with CallCache(path) as cache:
        stats = cache.stats()
        assert stats.entries == 800 and stats.teachers == {"t": 800}
        assert stats.completion_tokens == 800
        hit = cache.get("t", "a-5")
        assert hit is not None and hit.cached and hit.text == "x" * 50


def test_keys_are_per_teacher_and_errors_are_not_stored(tmp_path: Path) -> None:
    with CallCache(tmp_path / "c.sqlite") as cache:
        cache.put("t1", Completion("k", "reply"))
        cache.put("t1", Completion("e", "", "error", error="boom"))
        assert cache.get("t2", "k") is None
        assert cache.get("t1", "e") is None
        assert cache.get("t1", "k") is not None


def test_get_many_sees_committed_and_buffered_calls_of_its_teacher(tmp_path: Path) -> None:
    with CallCache(tmp_path / "c.sqlite", commit_every=10_000) as cache:
        for i in range(1200):
            cache.put("t1", Completion(f"k{i}", f"reply {i}", prompt_tokens=i))
        cache.commit()
        cache.put("t1", Completion("fresh", "not committed yet"))
        cache.put("t2", Completion("k1", "other teacher"))
        keys = [f"k{i}" for i in range(0, 1300, 2)] + ["fresh", "k2", "missing"]
        found = cache.get_many("t1", keys)
        assert set(found) == {f"k{i}" for i in range(0, 1200, 2)} | {"fresh"}
        assert found["k600"].text == "reply 600" and found["k600"].prompt_tokens == 600
        assert found["k600"].cached and found["k600"].teacher == "t1"
        assert found["fresh"].text == "not committed yet"
        assert cache.get_many("t2", ["k1", "k2"]).keys() == {"k1"}
        assert cache.get_many("t1", []) == {}


def test_prune(tmp_path: Path) -> None:
    with CallCache(tmp_path / "c.sqlite") as cache:
        cache.put("old", Completion("k1", "a"))
        cache.put("new", Completion("k2", "b"))
        assert cache.prune(teacher="old") == 1
        assert cache.prune(older_than_s=3600) == 0
        assert cache.stats().teachers == {"new": 1}


def test_puts_survive_a_crash_once_committed(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from mstudy.cache import CallCache\n"
        "from mstudy.records import Completion\n"
        "c = CallCache(sys.argv[1])\n"
        "c.put('t', Completion('kept', 'a'))\n"
        "c.commit()\n"
        "c.put('t', Completion('lost', 'b'))\n"
        "os._exit(9)\n"
    )
    path = tmp_path / "c.sqlite"
    subprocess.run([sys.executable, "-c", code, str(path)], check=False)
    with CallCache(path) as cache:
        assert cache.get("t", "kept") is not None
        assert cache.get("t", "lost") is None


@given(
    st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text()), max_size=4),
    st.integers(0, 5),
    st.one_of(st.none(), st.text(max_size=10)),
)
def test_request_keys_distinguish_message_boundaries(
    turns: list[tuple[str, str]], sample: int, prefill: str | None
) -> None:
    messages = tuple(Message(role, text) for role, text in turns)  # type: ignore[arg-type]
    key = Request(messages, GenerationParams(), sample, prefill).key
    assert key == Request(messages, GenerationParams(), sample, prefill).key
    if messages:
        last = messages[-1]
        moved = (*messages[:-1], Message(last.role, last.content + "x"))
        assert Request(moved, GenerationParams(), sample, prefill).key != key
    assert Request(messages, GenerationParams(), sample + 1, prefill).key != key
