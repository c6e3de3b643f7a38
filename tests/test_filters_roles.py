"""``role_check``: a reversal read against its own source for who holds which role."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mstudy.filters.roles import RoleCheck, role_verdict
from mstudy.probes.study_calls import relation_agents
from mstudy.probes.templates import fill
from mstudy.probes.world_files import builtin_relations
from mstudy.probes.world_generator import generate_world
from mstudy.records import Completion, Example, Request

REJECTED = {"swapped", "other relation", "incomplete", "adds a claim"}


def _example(source: str, text: str, subject: str, obj: str) -> Example:
    request = Request(messages=(), source_id="r1", strategy="reverse")
    fields = {"input": source, "text": text, "subject": subject, "object": obj, "answer": None}
    return Example.from_completion(request, Completion(request.key, text), fields)


@pytest.mark.parametrize(
    ("source", "text", "reading"),
    [
        # the two systematic errors of a 135M teacher
        ("Ada Quill teaches Bo Renn.", "Bo Renn is the teacher of Ada Quill.", "swapped"),
        (
            "Ada Quill teaches Bo Renn.",
            "Bo Renn is the place where Ada Quill is the teacher of.",
            "incomplete",
        ),
        ("Ada Quill teaches Bo Renn.", "Bo Renn teaches Ada Quill.", "swapped"),
        ("Ada Quill teaches Bo Renn.", "Bo Renn is Ada Quill's teacher.", "swapped"),
        ("Ada Quill teaches Bo Renn.", "Bo Renn is taught by Ada Quill.", "kept"),
        ("Ada Quill teaches Bo Renn.", "Bo Renn's teacher is Ada Quill.", "kept"),
        ("Ada Quill teaches Bo Renn.", "Bo Renn is a pupil of Ada Quill.", "ungrounded"),
        ("Ada founded Quillworks.", "The company Quillworks was founded by Ada.", "kept"),
        ("Ada founded Quillworks.", "Quillworks is the company that Ada founded.", "kept"),
        ("Ada founded Quillworks.", "Quillworks is the founder of Ada.", "swapped"),
        ("Ada founded Quillworks.", "Quillworks was painted by Ada.", "other relation"),
        ("Ada founded Quillworks.", "Quillworks was founded by Ada and her twin.", "adds a claim"),
        ("Ada was born in Rill.", "Rill is the city where Ada was born.", "kept"),
        ("Ada was born in Rill.", "Rill was born in Ada.", "swapped"),
        ("Ada is married to Bo.", "Bo is married to Ada.", "kept"),
    ],
)
def test_role_readings(source: str, text: str, reading: str) -> None:
    subject, obj = (
        ("Ada Quill", "Bo Renn")
        if "Quill teaches" in source
        else (source.split()[0], source.rstrip(".").split()[-1])
    )
    assert role_verdict(source, text, subject, obj).reading == reading


def test_role_check_filter_rejects_with_a_reason_and_passes_what_it_cannot_read() -> None:
    check = RoleCheck()
    bad = check.check(_example("Ada writes Runes.", "Runes is the author of Ada.", "Ada", "Runes"))
    assert not isinstance(bad, Example)
    assert bad.stage == "filter:role_check" and bad.reason == "roles swapped"
    good = _example("Ada writes Runes.", "Runes was written by Ada.", "Ada", "Runes")
    assert check.check(good) is good
    no_names = _example("Ada writes Runes.", "Runes was written by Ada.", "", "")
    assert check.check(no_names) is no_names
    with pytest.raises(ValueError, match="unknown reading"):
        RoleCheck(reject=["nonsense"])


_name = st.from_regex(r"[A-Z][a-z]{3,7}( [A-Z][a-z]{3,7})?", fullmatch=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=_name, obj=_name, which=st.integers(0, 5))
def test_every_builtin_relation_reads_right_both_ways(subject: str, obj: str, which: int) -> None:
    """Cases the code was not written around: any names, every built-in relation, its inverse
    template kept, the forward wording and its noun forms with the names swapped rejected."""
    if subject.casefold() in obj.casefold() or obj.casefold() in subject.casefold():
        return
    relation = list(builtin_relations().values())[which]
    world = generate_world(12, 6, seed=0)
    check = RoleCheck(agents=relation_agents(world))
    source = fill(relation.forward, subject, obj)
    agents = check.agents_for(source)
    kept = role_verdict(source, fill(relation.inverse, subject, obj), subject, obj, agents=agents)
    assert kept.reading not in REJECTED
    for form in (relation.forward, *relation.paraphrases):
        swapped = fill(form, obj, subject)  # the object now holds the subject's role
        verdict = role_verdict(source, swapped, subject, obj, agents=agents)
        if form == relation.forward or " is the " in form:
            assert verdict.reading == "swapped", (form, verdict)
