"""The reusable JSON encoder gives exactly what ``json.JSONEncoder.encode`` gives."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mstudy.jsoncodec import reusable

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
SETTINGS = [
    {"ensure_ascii": False, "allow_nan": False},
    {"ensure_ascii": True},
    {"sort_keys": True, "ensure_ascii": False, "separators": (",", ":"), "allow_nan": False},
]


def outcome(encode: Any, value: Any) -> tuple[str, str]:
    try:
        return ("ok", encode(value))
    except (TypeError, ValueError) as exc:
        return ("error", type(exc).__name__)


@pytest.mark.parametrize("settings", SETTINGS)
@given(value=values)
def test_same_text_or_same_error_as_the_standard_encoder(
    settings: dict[str, Any], value: Any
) -> None:
    encoder = json.JSONEncoder(**settings)
    assert outcome(reusable(encoder), value) == outcome(encoder.encode, value)


def test_default_hook_and_nan_policy_are_kept() -> None:
    encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=sorted)
    encode = reusable(encoder)
    assert encode({"s": {3, 1}, "t": "é"}) == '{"s": [1, 3], "t": "é"}'
    with pytest.raises(ValueError):
        encode({"x": math.nan})


def test_a_cycle_is_an_error_not_a_hang() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises((RecursionError, ValueError)):
        reusable(json.JSONEncoder())(loop)


def test_indenting_encoders_keep_their_own_encode() -> None:
    encoder = json.JSONEncoder(indent=2)
    assert reusable(encoder)({"a": [1]}) == encoder.encode({"a": [1]})
