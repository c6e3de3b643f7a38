"""Fingerprints come from declared settings: the same settings give the same fingerprint in
any process, a changed setting changes it, and no fingerprint is guessed from ``repr()``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mstudy import FingerprintError, plugins
from mstudy.fingerprints import fingerprint

# (kind, name) -> settings a user may give, and what each may be
SETTINGS: dict[tuple[str, str], dict[str, st.SearchStrategy[Any]]] = {
    ("filters", "dedup"): {
        "field": st.sampled_from(["text", "input", "answer"]),
        "scope": st.sampled_from(["strategy", "global"]),
    },
    ("filters", "near_dedup"): {
        "threshold": st.floats(0.3, 1.0),
        "num_perm": st.sampled_from([64, 128]),
        "ngram": st.integers(1, 5),
        "unit": st.sampled_from(["word", "char"]),
        "scope": st.sampled_from(["strategy", "global"]),
        "max_docs": st.none() | st.integers(1, 10**6),
        "seed": st.integers(0, 2**31),
    },
    ("filters", "length"): {
        "min_chars": st.integers(1, 50),
        "max_chars": st.none() | st.integers(51, 5000),
        "min_words": st.integers(0, 5),
        "field": st.sampled_from(["text", "input"]),
    },
    ("filters", "refusal"): {},
    ("strategies", "reverse"): {
        "n": st.integers(1, 4),
        "prefill": st.sampled_from(["", "{{ object }}"]),
        "accept_truncated": st.booleans(),
    },
    ("strategies", "paraphrase"): {
        "n": st.integers(1, 4),
        "template": st.text(st.characters(codec="utf-8"), min_size=1, max_size=30).map(
            lambda t: t.replace("{", "(").replace("}", ")") + " {{ text }}"
        ),
    },
    ("strategies", "explain"): {"n": st.integers(1, 4), "max_input_chars": st.integers(10, 10**5)},
    ("strategies", "cot"): {"n": st.integers(1, 3)},
}
COMPONENTS = sorted(SETTINGS)


@st.composite
def component_settings(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    kind, name = draw(st.sampled_from(COMPONENTS))
    chosen = draw(st.sets(st.sampled_from(sorted(SETTINGS[kind, name]) or [""])))
    values = {key: draw(SETTINGS[kind, name][key]) for key in sorted(chosen) if key}
    return kind, name, values


def build(kind: str, name: str, values: dict[str, Any]) -> Any:
    return plugins.create(kind, name, **values)


FINGERPRINTS_IN_A_CHILD = """
import json, sys
from mstudy import plugins
from mstudy.fingerprints import fingerprint
cases = json.load(sys.stdin)
print(json.dumps([fingerprint(plugins.create(k, n, **v)) for k, n, v in cases]))
"""


@settings(max_examples=3, deadline=None)
@given(st.lists(component_settings(), min_size=25, max_size=25))
def test_same_settings_give_the_same_fingerprint_in_another_process(
    cases: list[tuple[str, str, dict[str, Any]]],
) -> None:
    here = [fingerprint(build(*case)) for case in cases]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # other str hashes, other addresses
    child = subprocess.run(
        [sys.executable, "-c", FINGERPRINTS_IN_A_CHILD],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(child.stdout) == here


@settings(deadline=None)  # building near_dedup draws its hash functions: slow on a busy machine
@given(component_settings(), st.data())
def test_a_changed_setting_changes_the_fingerprint(
    case: tuple[str, str, dict[str, Any]], data: st.DataObject
) -> None:
    kind, name, values = case
    assert fingerprint(build(kind, name, values)) == fingerprint(build(kind, name, dict(values)))
    if not SETTINGS[kind, name]:
        return
    key = data.draw(st.sampled_from(sorted(SETTINGS[kind, name])))
    first = data.draw(SETTINGS[kind, name][key])
    second = data.draw(SETTINGS[kind, name][key].filter(lambda v: v != first))
    try:  # the setting given explicitly on both sides, with two different values
        one = build(kind, name, {**values, key: first})
        two = build(kind, name, {**values, key: second})
    except Exception:  # a combination the component refuses (e.g. bands that do not fit)
        return
    assert fingerprint(one) != fingerprint(two)


def test_settings_that_do_not_change_outputs_stay_out() -> None:
    """dedup's memory limit and spill folder change how, not what: same fingerprint."""
    assert fingerprint(build("filters", "dedup", {"max_memory_mb": 1})) == fingerprint(
        build("filters", "dedup", {"max_memory_mb": 64, "temp_dir": "/tmp"})
    )


def test_a_component_whose_settings_cannot_be_compared_is_refused_by_name() -> None:
    class Holder:
        name = "holder"

        def __init__(self) -> None:
            self.lookup = object()  # its repr carries a memory address

        def check(self, example: Any) -> Any:
            return example

    with pytest.raises(FingerprintError) as caught:
        fingerprint(Holder())
    assert caught.value.component == "'holder' (Holder)"
    assert caught.value.attribute == "lookup"


def test_a_component_fingerprint_does_not_depend_on_its_run() -> None:
    """Counters a filter keeps while it runs are not settings."""
    from mstudy.filters.decontaminate import Decontaminate
    from mstudy.records import Example, Provenance

    eval_text = "the quick brown fox jumps over the lazy dog again and again today"
    fresh = Decontaminate(eval_sets={"e": [eval_text]}, n=5)
    used = Decontaminate(eval_sets={"e": [eval_text]}, n=5)
    used.check(Example("x", {"text": eval_text}, Provenance("s", "p", "1", "h", "t", {}, 0)))
    assert fingerprint(fresh) == fingerprint(used)
