"""Records, requests and provenance: ids and keys users rely on to be stable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mstudy import Completion, Example, GenerationParams, Message, Record, RecordError, Request
from mstudy._hashing import stable_hash

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(min_size=1).filter(lambda k: k != "id"), json_values, max_size=6))
def test_content_id_ignores_key_order(fields: dict[str, object]) -> None:
    forward = Record.from_mapping(fields)
    backward = Record.from_mapping(dict(reversed(list(fields.items()))))
    assert forward.id == backward.id


def test_content_id_is_the_same_in_another_process() -> None:
    code = (
        "from mstudy.records import Record;"
        "print(Record.from_mapping({'text': 'Ada wrote code', 'n': 3.5, 'tags': ['a']}).id)"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout.strip()
    here = Record.from_mapping({"tags": ["a"], "n": 3.5, "text": "Ada wrote code"}).id
    assert other == here


def test_given_id_is_kept_and_bad_ids_name_the_record() -> None:
    assert Record.from_mapping({"id": 7, "text": "x"}).id == "7"
    with pytest.raises(RecordError, match=r"record #4: field 'id' must be a string"):
        Record.from_mapping({"id": [1], "text": "x"}, index=4)
    with pytest.raises(RecordError, match="is empty"):
        Record.from_mapping({"id": "  "}, index=1)


def test_text_field_errors_name_record_and_field() -> None:
    record = Record.from_mapping({"id": "r1", "text": 5, "empty": "  "})
    with pytest.raises(RecordError, match=r"record 'r1': missing field 'fact'") as info:
        record.text("fact")
    assert info.value.field == "fact" and info.value.record_id == "r1"
    with pytest.raises(RecordError, match="'text' must be a string, got int"):
        record.text("text")
    with pytest.raises(RecordError, match="'empty' is empty"):
        record.text("empty")
    with pytest.raises(RecordError, match="more than the limit"):
        Record.from_mapping({"id": "r2", "text": "x" * 11}).text("text", max_chars=10)


def test_request_key_covers_what_shapes_the_reply() -> None:
    msgs = (Message("user", "hi"),)
    base = Request(msgs, GenerationParams(temperature=0.5), sample=0, source_id="a")
    assert base.key == Request(msgs, GenerationParams(temperature=0.5), sample=0, source_id="b").key
    assert base.key != Request(msgs, GenerationParams(temperature=0.6)).key
    assert base.key != Request(msgs, GenerationParams(temperature=0.5), sample=1).key
    assert base.key != Request(msgs, GenerationParams(temperature=0.5), prefill="X").key
    assert base.template_hash == Request(msgs, GenerationParams(temperature=0.9)).template_hash


_turns = st.lists(
    st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text(max_size=8)),
    min_size=1,
    max_size=4,
)


@given(st.lists(_turns, min_size=1, max_size=4), st.sampled_from([0.0, 0.5, 0.7]))
def test_request_keys_depend_on_content_not_on_objects(
    conversations: list[list[tuple[str, str]]], temperature: float
) -> None:
    """Keys are the keys of the content, whether the objects are shared, fresh, or seen for
    the first time (the digest of fixed turns is cached by content)."""
    from mstudy import records

    def fresh(turns: list[tuple[str, str]]) -> tuple[Message, ...]:
        return tuple(Message(role, text) for role, text in turns)  # type: ignore[arg-type]

    params = GenerationParams(temperature=temperature)
    shared = [fresh(turns) for turns in conversations]
    once = [Request(m, params).key for m in shared]
    again = [Request(m, params).key for m in shared]  # found in the cache now
    copied = [
        Request(fresh(t), GenerationParams(temperature=temperature)).key for t in conversations
    ]
    records._head_digest.cache_clear()
    first = [
        Request(fresh(t), GenerationParams(temperature=temperature)).key for t in conversations
    ]
    assert once == again == copied == first


def test_per_sample_seeds_differ_and_repeat() -> None:
    msgs = (Message("user", "hi"),)
    seeds = {Request(msgs, GenerationParams(seed=1), sample=i).seed for i in range(20)}
    assert len(seeds) == 20
    assert (
        Request(msgs, GenerationParams(seed=1), sample=3).seed
        == Request(msgs, GenerationParams(seed=1), sample=3).seed
    )
    assert Request(msgs, GenerationParams()).seed is None


def test_generation_params_validate() -> None:
    with pytest.raises(ValueError, match="unknown generation parameter"):
        GenerationParams.from_mapping({"max_tokens": 3})
    with pytest.raises(ValueError, match="top_p"):
        GenerationParams(top_p=0)
    assert GenerationParams(stop="\n").stop == ("\n",)  # type: ignore[arg-type]


def test_example_row_carries_full_provenance() -> None:
    request = Request(
        (Message("user", "x"),),
        GenerationParams(seed=3),
        sample=2,
        source_id="r9",
        strategy="reverse",
        strategy_version="1",
    )
    completion = Completion(request.key, "y", teacher="fp123")
    row = Example.from_completion(request, completion, {"text": "y"}).to_row()
    assert row["source_id"] == "r9" and row["strategy"] == "reverse" and row["text"] == "y"
    prov = row["provenance"]
    assert prov["teacher"] == "fp123" and prov["sample"] == 2 and prov["strategy_version"] == "1"
    assert prov["template_hash"] == request.template_hash and prov["params"]["seed"] == 3
    with pytest.raises(ValueError, match="may not be named"):
        Example.from_completion(request, completion, {"provenance": 1})


_flat = st.none() | st.booleans() | st.integers() | st.text() | st.floats()


@given(st.dictionaries(st.text(), _flat | json_values, max_size=6))
def test_canonical_json_of_a_flat_record_is_the_general_one(fields: dict[str, object]) -> None:
    """Flat dicts (string keys, plain values) skip the general walk: same text either way."""
    from types import MappingProxyType

    from mstudy._hashing import canonical_json

    assert canonical_json(fields) == canonical_json(MappingProxyType(fields))


_plain_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
).filter(lambda v: "NaN" not in json.dumps(v))


@given(_plain_json)
def test_canonical_json_of_plain_json_is_sorted_compact_json(value: object) -> None:
    """Plain JSON values (the fast paths for flat dicts and lists included) hash as their
    sorted, compact JSON text."""
    from mstudy._hashing import canonical_json

    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected


def test_stable_hash_handles_odd_values() -> None:
    assert stable_hash({"b": float("nan"), "a": b"\x00"}) == stable_hash(
        {"a": b"\x00", "b": float("nan")}
    )


def test_response_schema_keeps_its_order_and_only_keys_requests_that_have_one() -> None:
    from mstudy.records import GenerationParams

    plain = GenerationParams()
    with_schema = GenerationParams(response_schema={"type": "object", "required": ["a"]})
    same = GenerationParams(response_schema='{"type":"object","required":["a"]}')
    reordered = GenerationParams(response_schema={"required": ["a"], "type": "object"})
    assert reordered.response_schema != with_schema.response_schema  # grammars follow order
    assert "response_schema" not in plain.to_dict()
    assert with_schema.response_schema == same.response_schema
    assert with_schema.schema() == {"type": "object", "required": ["a"]}
    assert with_schema._canonical != plain._canonical
    assert GenerationParams.from_mapping(with_schema.to_dict()) == with_schema
