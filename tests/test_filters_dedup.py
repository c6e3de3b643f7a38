"""The bounded-memory exact set behind ``dedup``: exactness across spills, state, cleanup."""

from __future__ import annotations

import base64
import gc
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mstudy import ExactDedup, Example, Paraphrase, Reverse, ScriptedTeacher, Study
from mstudy.filters.hashset import HashSet

MAX = 2**64 - 1
keys = st.one_of(
    st.sampled_from([0, 1, MAX, MAX - 1, 2**63]),
    st.integers(0, 40),
    st.integers(0, MAX),
)
ops = st.lists(st.tuples(st.booleans(), keys), max_size=300)


def tiny(**kwargs: object) -> HashSet:
    """A set that spills every 4 keys and merges every few spills."""
    settings_: dict[str, object] = {"table_slots": 8, "bloom_bytes": 16, "block_keys": 3}
    settings_.update(kwargs)
    return HashSet(**settings_)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(ops, st.sampled_from([1, 2, 3]), st.sampled_from([1, 2, 5]))
def test_behaves_exactly_like_a_python_set(
    sequence: list[tuple[bool, int]], max_runs: int, block_keys: int
) -> None:
    s, ref = tiny(max_runs=max_runs, block_keys=block_keys), set()
    for is_add, key in sequence:
        if is_add:
            assert s.add(key) == (key not in ref)
            ref.add(key)
        else:
            assert (key in s) == (key in ref)
        assert len(s) == len(ref)
    assert s.runs <= max_runs
    assert sorted(s) == s.to_array().tolist() == sorted(ref)
    s.clear()


@settings(max_examples=100, deadline=None)
@given(st.lists(keys, max_size=200), st.lists(keys, max_size=50))
def test_update_and_state_round_trip_across_spills(first: list[int], more: list[int]) -> None:
    s = tiny()
    for key in first:
        s.add(key)
    copy = tiny()
    copy.update(pickle.loads(pickle.dumps(s.to_array())))
    assert sorted(copy) == sorted(set(first))
    for key in more:
        assert copy.add(key) == s.add(key)
    assert sorted(copy) == sorted(s)
    s.clear()
    copy.clear()


def test_out_of_range_keys_are_refused() -> None:
    s = HashSet()
    for bad in (-1, 2**64):
        with pytest.raises(ValueError):
            s.add(bad)
        with pytest.raises(ValueError):
            s.update([bad])
        assert bad not in s
    assert "1" not in s and len(s) == 0


def test_memory_budget_sets_table_and_bloom_sizes() -> None:
    s = HashSet(8)
    assert s._array.nbytes == 2 * 2**20 and s._bloom_array.nbytes == 4 * 2**20
    small = HashSet(0.001)
    assert small._array.nbytes <= 2**10 and small._bloom_array.nbytes <= 2**10


def test_spill_files_live_under_temp_dir_and_are_deleted(tmp_path: Path) -> None:
    s = tiny(temp_dir=tmp_path)
    for key in range(1, 100):
        s.add(key)
    assert s.runs and s.directory is not None and s.directory.parent == tmp_path
    assert list(s.directory.iterdir())
    s.clear()
    assert list(tmp_path.iterdir()) == [] and len(s) == 0 and 5 not in s
    for key in range(1, 100):  # usable again after clear
        assert s.add(key)
    assert list(tmp_path.iterdir())
    del s
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def example(text: str, strategy: str = "paraphrase") -> Example:
    from mstudy import Completion, GenerationParams, Message, Request

    request = Request(
        (Message("user", text),), GenerationParams(), source_id="s", strategy=strategy
    )
    return Example.from_completion(request, Completion(request.key, text), {"text": text})


def test_dedup_state_round_trips_through_json(tmp_path: Path) -> None:
    f = ExactDedup(max_memory_mb=0.0005, temp_dir=tmp_path)
    texts = [f"fact number {i % 70}" for i in range(200)]
    verdicts = [f.reason(example(t)) is None for t in texts[:100]]
    assert f._seen().runs  # spilled
    state = json.loads(json.dumps(f.get_state()))  # what a journal's checkpoint gives back
    raw = base64.b64decode(state["hashes"])
    assert len(raw) == 8 * 70 and sorted(np.frombuffer(raw, "<u8")) == list(
        np.frombuffer(raw, "<u8")
    )
    g = ExactDedup(max_memory_mb=0.0005, temp_dir=tmp_path)
    g.set_state(state)
    assert [g.reason(example(t)) is None for t in texts[100:]] == [False] * 100
    g.reset()
    assert verdicts == [True] * 70 + [False] * 30
    f.reset()
    assert list(tmp_path.iterdir()) == []
    empty = ExactDedup().get_state()
    assert base64.b64decode(empty["hashes"]) == b""
    with pytest.raises(ValueError, match="format"):
        ExactDedup().set_state(b"\x00" * 8)  # the pickled form of older versions


def rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class SetDedup(ExactDedup):
    """The former implementation: a Python set of the same hashes."""

    def __init__(self, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.plain: set[int] = set()

    def reset(self) -> None:
        self.plain.clear()

    def reason(self, example: Example) -> tuple[str, str] | None:
        key = self.key(example)
        if key in self.plain:
            return ("duplicate", f"normalised {self.field} seen before: {example.text[:80]!r}")
        self.plain.add(key)
        return None


@pytest.mark.parametrize("scope", ["strategy", "global"])
def test_study_with_spilling_dedup_matches_a_python_set(tmp_path: Path, scope: str) -> None:
    records = [
        {
            "id": f"r{i}",
            "text": f"Item {i % 151} is in Room {i % 97}.",
            "subject": f"Item {i % 151}",
            "object": f"Room {i % 89}",
        }
        for i in range(600)
    ]
    teacher = ScriptedTeacher(
        {
            "reverse": "{{ object }} holds {{ subject }}.",
            "paraphrase": "Item {{ subject[5:] }} is in {{ object }}.",
        }
    )
    spill = tmp_path / "spill"
    spill.mkdir()
    outputs = {}
    for label, filt in [
        ("new", ExactDedup(scope=scope, max_memory_mb=0.0005, temp_dir=spill)),
        ("old", SetDedup(scope=scope)),
    ]:
        out, rejects = tmp_path / f"{label}.jsonl", tmp_path / f"{label}-rejects.jsonl"
        study = Study(teacher, [Reverse(), Paraphrase()], [filt], sinks=[out], rejects=rejects)
        report = study.run(records)
        assert report.filters["dedup"].checked > 500
        outputs[label] = (rows(out), rows(rejects), report.accepted, report.rejected)
        if label == "new":
            seen = filt._seen()
            assert seen.runs >= 1 and len(seen) > 200
            filt.reset()
            assert list(spill.iterdir()) == []
    assert outputs["new"] == outputs["old"]
    assert outputs["new"][3] > 100  # duplicates were found


def test_dedup_pickles_and_copies_with_what_it_saw(tmp_path: Path) -> None:
    import copy

    f = ExactDedup(scope="global", max_memory_mb=0.0005, temp_dir=tmp_path)
    for i in range(50):
        f.check(example(f"fact {i}"))
    for clone in (pickle.loads(pickle.dumps(f)), copy.deepcopy(f)):
        assert clone.get_state() == f.get_state() and clone.scope == "global"
        assert clone.reason(example("fact 7")) is not None
        assert clone.reason(example("fact 70")) is None
        clone.reset()
    assert pickle.loads(pickle.dumps(ExactDedup())).get_state() == ExactDedup().get_state()
    f.reset()
    assert list(tmp_path.iterdir()) == []


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["explain", "reverse"]), st.sampled_from(["A b.", "a B", "c", "C!"])
        ),
        max_size=12,
    ),
    st.sampled_from(["strategy", "global"]),
    st.integers(1, 4),
)
def test_check_many_gives_the_verdicts_check_gives_one_by_one(
    items: list[tuple[str, str]], scope: str, chunk: int
) -> None:
    from mstudy.records import Provenance

    examples = [
        Example(str(i), {"text": text}, Provenance("s", strategy, "1", "t", "tf", {}, 0))
        for i, (strategy, text) in enumerate(items)
    ]
    one, many = ExactDedup(scope=scope), ExactDedup(scope=scope)
    singly = [one.check(e) for e in examples]
    batched = [
        v
        for at in range(0, len(examples), chunk)
        for v in many.check_many(examples[at : at + chunk])
    ]
    assert batched == singly
    assert all(isinstance(v, Example) or v.reason == "duplicate" for v in batched)
