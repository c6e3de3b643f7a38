"""The reversal probe's world: generation, validation, loading, and the truth check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mstudy.probes.errors import WorldError
from mstudy.probes.world import Fact, Relation, World
from mstudy.probes.world_checks import FUNCTION_WORDS
from mstudy.probes.world_files import builtin_relations, load_relations, load_world
from mstudy.probes.world_generator import generate_world
from mstudy.text import normalize

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RELATIONS_TOML = """
[relations.founded]
subject_type = "person"
object_type = "company"
forward = "{subject} founded {object}."
inverse = "{object} was founded by {subject}."
forward_question = "Which company did {subject} set up?"
reverse_question = "Who set up {object}?"
inverse_forms = ["{object}'s founder is {subject}."]

[relations.wrote]
subject_type = "person"
object_type = "book"
forward = "{subject} wrote {object}."
inverse = "{object} was written by {subject}."
forward_question = "Which book did {subject} pen?"
reverse_question = "Who penned {object}?"

[relations.mentor]
subject_type = "person"
object_type = "person"
forward = "{subject} is the mentor of {object}."
inverse = "{object} is the apprentice of {subject}."
forward_question = "Who did {subject} coach?"
reverse_question = "Who coached {object}?"

[anchors]
person = "{entity} is a person."
"""

FACTS = [
    {"subject": "Ada Quill", "relation": "founded", "object": "Quillworks"},
    {"subject": "Bo Renn", "relation": "wrote", "object": "Grey Harbour"},
    {"subject": "Cal Imm", "relation": "founded", "object": "Immtech"},
    {"subject": "Dee Orr", "relation": "wrote", "object": "Salt Roads"},
    {"subject": "Ada Quill", "relation": "mentor", "object": "Bo Renn"},
]


def _write_world(folder: Path, facts: list[dict[str, object]] | None = None) -> Path:
    (folder / "relations.toml").write_text(RELATIONS_TOML, encoding="utf-8")
    rows = FACTS if facts is None else facts
    (folder / "facts.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    return folder


def _words(text: str) -> set[str]:
    return set(normalize(text).split())


# -- generation ------------------------------------------------------------------------------


def test_generated_world_shape() -> None:
    world = generate_world(60, 5, seed=3)
    assert len(world.facts) == 60
    assert len(world.relations) == 5
    assert len(world.scored_facts) == 30
    per_relation = {r: [f for f in world.facts if f.relation == r] for r in world.relations}
    for facts in per_relation.values():
        assert len(facts) == 12
        assert sum(f.scored for f in facts) == 6
    assert len(world.entity_types) == 120  # two fresh names per fact


def test_generation_is_deterministic_per_seed() -> None:
    a, b, c = (
        generate_world(40, 4, seed=1),
        generate_world(40, 4, seed=1),
        generate_world(40, 4, seed=2),
    )
    assert a.to_dict() == b.to_dict()
    assert a.to_dict() != c.to_dict()


def test_every_entity_is_a_sentence_subject() -> None:
    world = generate_world(30, 5, seed=0)
    anchors = world.anchor_sentences()
    for entity in world.entity_types:
        assert any(a.startswith(entity + " ") for a in anchors)


def test_builtin_relations_are_valid_and_cover_four_to_six() -> None:
    relations = builtin_relations()
    assert len(relations) == 6
    for n in (4, 5, 6):
        assert len(generate_world(24, n, seed=0).relations) == n
    with pytest.raises(WorldError, match="n_relations"):
        generate_world(40, 7)
    with pytest.raises(WorldError, match="at least 2 per relation"):
        generate_world(5, 5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_facts=st.integers(min_value=12, max_value=80),
    n_relations=st.integers(min_value=4, max_value=6),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_generated_worlds_are_clean(n_facts: int, n_relations: int, seed: int) -> None:
    world = generate_world(n_facts, n_relations, seed=seed)
    # no A -> B together with B -> A, whatever the relations
    pairs = {(f.subject, f.object) for f in world.facts}
    assert not any((o, s) in pairs for s, o in pairs)
    statements = [world.statement(f) for f in world.facts]
    statements += [world.inverse_statement(f) for f in world.facts]
    statements += world.anchor_sentences()
    for fact in world.facts:
        relation = world.relation(fact)
        # templates render completely
        for text in (world.statement(fact), world.inverse_statement(fact)):
            assert "{" not in text and "}" not in text
            assert fact.subject in text and fact.object in text
        fq, rq = world.forward_question(fact), world.reverse_question(fact)
        assert fact.subject in fq and fact.object not in fq
        assert fact.object in rq and fact.subject not in rq
        # no entity's name sits inside another's (a question would name both)
        assert fact.object.casefold() not in fq.casefold()
        assert fact.subject.casefold() not in rq.casefold()
        # the questions share no relation word with the statements
        relation_words = set()
        for template in (relation.forward, relation.inverse):
            relation_words |= _words(template.replace("{subject}", "").replace("{object}", ""))
        relation_words -= FUNCTION_WORDS
        assert not (_words(fq) | _words(rq)) & relation_words
        # the rule reversal is true, the forward statement is not a reversal
        assert world.is_true_reversal(fact, world.inverse_statement(fact))
        assert not world.is_true_reversal(fact, world.statement(fact))
        # the answers are unique and of the right kind
        assert world.answers(fact, "forward") == {fact.object}
        assert world.answers(fact, "reverse") == {fact.subject}
    # no scored question occurs verbatim in any statement
    padded = [f" {normalize(s)} " for s in statements]
    for fact in world.scored_facts:
        for q in (world.forward_question(fact), world.reverse_question(fact)):
            assert not any(f" {normalize(q)} " in s for s in padded)


def test_chance_level() -> None:
    world = generate_world(50, 5, seed=0)
    # reverse answers are persons: 50 subjects + 0 person objects (mentor is the 6th relation)
    assert world.chance("reverse") == pytest.approx(1 / 50)
    # forward answers: 10 entities per object type
    assert world.chance("forward") == pytest.approx(1 / 10)


# -- validation -------------------------------------------------------------------------------


def _relation(**overrides: object) -> Relation:
    spec: dict[str, object] = {
        "name": "founded",
        "forward": "{subject} founded {object}.",
        "inverse": "{object} was founded by {subject}.",
        "forward_question": "Which company did {subject} set up?",
        "reverse_question": "Who set up {object}?",
    }
    spec.update(overrides)
    return Relation(**spec)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"forward": "{subject} founded."}, r"\{object\} must appear exactly once"),
        ({"forward": "{object} was founded by {subject}."}, "subject first"),
        ({"inverse": "{subject} founded {object}."}, "object first"),
        ({"forward_question": "Which company did {subject} found?"}, "founded|found"),
        ({"reverse_question": "Who founded {object}?"}, "shares the word"),
        ({"forward_question": "Who set up {object} for {subject}?"}, "not at all"),
        ({"forward": "{subject} founded {thing}."}, "unknown placeholder"),
        ({"inverse_forms": ("{subject} is it",)}, "object first|exactly once"),
        ({"forward": "{subject} founded {object"}, "unbalanced|unknown placeholder"),
    ],
)
def test_bad_relations_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(WorldError, match=message):
        _relation(**overrides)


def _world(pairs: list[tuple[str, str]]) -> World:
    relation = _relation()
    facts = [Fact(f"f{i}", s, "founded", o, scored=i % 2 == 0) for i, (s, o) in enumerate(pairs)]
    return World({"founded": relation}, facts)


def test_world_rejects_both_directions() -> None:
    with pytest.raises(WorldError, match="both directions"):
        _world([("Ann", "Bob"), ("Cid", "Dee"), ("Bob", "Ann")])


def test_world_rejects_duplicates_self_links_and_type_clashes() -> None:
    with pytest.raises(WorldError, match="already linked"):
        _world([("Ann", "Bob"), ("Ann", "Bob")])
    with pytest.raises(WorldError, match="the same"):
        _world([("Ann", "Ann"), ("Cid", "Dee")])
    typed = _relation(subject_type="person", object_type="company")
    facts = [
        Fact("a", "Ann", "founded", "Bobco", scored=True),
        Fact("b", "Bobco", "founded", "Cidco"),
    ]
    with pytest.raises(WorldError, match="one type"):
        World({"founded": typed}, facts)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 5)).filter(lambda p: p[0] != p[1]),
        min_size=2,
        max_size=8,
        unique=True,
    )
)
def test_world_validation_finds_every_two_way_link(pairs: list[tuple[int, int]]) -> None:
    names = ["Ann", "Bob", "Cid", "Dee", "Eve", "Fay"]
    named = [(names[a], names[b]) for a, b in pairs]
    two_way = any((b, a) in set(pairs) for a, b in pairs)
    if two_way:
        with pytest.raises(WorldError, match="both directions"):
            _world(named)
    else:
        world = _world(named)
        assert len(world.facts) == len(pairs)


# -- the truth check ----------------------------------------------------------------------------


def test_true_reversal_forms() -> None:
    world = generate_world(12, 6, seed=0)
    founded = next(f for f in world.facts if f.relation == "founded")
    o, s = founded.object, founded.subject
    assert world.is_true_reversal(founded, f"{o} was founded by {s}.")
    assert world.is_true_reversal(founded, f"{o} is the company founded by {s}.")
    assert world.is_true_reversal(founded, f"{o}'s founder is {s}")
    assert world.is_true_reversal(founded, f"{o} is the company that {s} founded.")
    assert not world.is_true_reversal(founded, f"{o} founded {s}.")  # swapped
    assert not world.is_true_reversal(founded, f"{o} is the founder of {s}.")  # role swapped
    assert not world.is_true_reversal(founded, f"{s} founded {o}.")  # not reversed
    assert not world.is_true_reversal(founded, f"{o} was founded by someone.")


# -- loading -----------------------------------------------------------------------------------


def test_load_world_from_folder(tmp_path: Path) -> None:
    world = load_world(_write_world(tmp_path))
    assert len(world.facts) == 5
    assert {f.relation for f in world.facts} == {"founded", "wrote", "mentor"}
    assert sum(f.scored for f in world.facts) == 2  # half of each relation
    assert world.anchor("Ada Quill", "person") == "Ada Quill is a person."
    assert world.anchor("Immtech", "company") == "Immtech is a company."
    assert world.is_true_reversal(world.facts[0], "Quillworks's founder is Ada Quill.")


def test_load_world_json_spec_and_explicit_split(tmp_path: Path) -> None:
    spec = tomllib.loads(RELATIONS_TOML)
    (tmp_path / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    rows = [dict(r, scored=i < 1) for i, r in enumerate(FACTS)]
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    world = load_world(tmp_path / "f.jsonl", tmp_path / "spec.json")
    assert [f.scored for f in world.facts] == [True, False, False, False, False]
    relations, anchors = load_relations(tmp_path / "spec.json")
    assert set(relations) == {"founded", "wrote", "mentor"} and anchors["person"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"facts.jsonl:6: not valid JSON"),
        ('["a", "b"]', r"facts.jsonl:6: a fact must be a JSON object"),
        ('{"subject": "X", "relation": "founded"}', r"facts.jsonl:6: missing 'object'"),
        ('{"subject": "X", "relation": "sang", "object": "Y"}', r"unknown relation 'sang'"),
        ('{"subject": "X", "relation": "founded", "object": "Y", "when": 1}', "unknown key"),
        ('{"subject": "", "relation": "founded", "object": "Y"}', "non-empty string"),
        (
            '{"subject": "X", "relation": "founded", "object": "Y", "scored": "yes"}',
            "true or false",
        ),
        ('{"subject": "Quillworks", "relation": "founded", "object": "Ada Quill"}', "one type"),
        ('{"subject": "Bo Renn", "relation": "mentor", "object": "Ada Quill"}', "both directions"),
        ('{"subject": "Ada Quill", "relation": "mentor", "object": "Bo Renn"}', "already linked"),
        ('{"subject": "Grey Harbour", "relation": "founded", "object": "Zed"}', "one type"),
    ],
)
def test_bad_fact_lines_name_file_and_problem(tmp_path: Path, line: str, message: str) -> None:
    folder = _write_world(tmp_path)
    with (folder / "facts.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    with pytest.raises(WorldError, match=message):
        load_world(folder)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("not = [valid", "not valid TOML"),
        ("[other]\nx = 1\n", "unknown top-level key"),
        ("[relations]\n", "non-empty 'relations'"),
        ('[relations.r]\nforward = "{subject} r {object}."\n', "missing key"),
        (
            RELATIONS_TOML.replace(
                'reverse_question = "Who set up {object}?"',
                'reverse_question = "Who founded {object}?"',
            ),
            "shares the word",
        ),
        (
            RELATIONS_TOML.replace('forward = "{subject} wrote', 'forwards = "{subject} wrote'),
            "unknown key",
        ),
        (RELATIONS_TOML.replace("[anchors]\nperson", "[anchors]\nperson = 3\nx"), "anchors"),
    ],
)
def test_bad_relation_specs_give_clear_errors(tmp_path: Path, spec: str, message: str) -> None:
    folder = _write_world(tmp_path)
    (folder / "relations.toml").write_text(spec, encoding="utf-8")
    with pytest.raises(WorldError, match=message):
        load_world(folder)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(WorldError, match=r"relations\.toml or relations\.json"):
        load_world(tmp_path)
    (tmp_path / "relations.toml").write_text(RELATIONS_TOML)
    with pytest.raises(WorldError, match="cannot read the facts"):
        load_world(tmp_path)
    (tmp_path / "spec.yaml").write_text("x")
    with pytest.raises(WorldError, match=r"\.toml or \.json"):
        load_relations(tmp_path / "spec.yaml")
    (tmp_path / "facts.jsonl").write_text("\n")
    with pytest.raises(WorldError, match="no facts"):
        load_world(tmp_path)


# -- the built-in relations: a data file read by the user-world loader ---------------------------

# Frozen from the relations as they were written in Python before they moved to
# mstudy/probes/data/builtin_relations.toml: name -> (subject type, object type, inverse forms,
# paraphrases), in the generator's order, and the SHA-256 of every template (sorted JSON).
BUILTIN_SNAPSHOT = {
    "founded": ("person", "company", 8, 1),
    "wrote": ("person", "book", 8, 1),
    "discovered": ("person", "comet", 6, 1),
    "painted": ("person", "painting", 7, 1),
    "born": ("person", "city", 7, 1),
    "mentor": ("person", "person", 11, 1),
}
BUILTIN_SHA256 = "27af10d92c8bce1ac3cc1008d9b87a6434fcf9a9b4a71f748fc6d50246174fc5"
# generate_world(40, 5, seed=4) and (24, 6, seed=3) before the move, as sorted JSON.
GENERATED_SHA256 = {
    # (40, 5, 4) changed once on purpose: no entity name may sit inside another any more
    (40, 5, 4): "154b615c297a8cb48a2920ccc31d9acce89be2c443e0b5da2f65fb75ecb9fabe",
    (24, 6, 3): "b96f88c5df9336f2351c5a9ac77e864e739b4f1d3265fe4bb44d720cd094627b",
}


def _sha256(data: object) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def test_builtin_file_loads_through_the_user_loader_as_before() -> None:
    from mstudy.probes.world_files import BUILTIN_RELATIONS

    relations, anchors = load_relations(BUILTIN_RELATIONS)
    assert anchors == {}
    assert {
        name: (r.subject_type, r.object_type, len(r.inverse_forms), len(r.paraphrases))
        for name, r in relations.items()
    } == BUILTIN_SNAPSHOT
    assert list(relations) == list(BUILTIN_SNAPSHOT)  # order: the generator draws the first n
    assert _sha256({name: r.to_dict() for name, r in relations.items()}) == BUILTIN_SHA256
    assert builtin_relations() == relations


def test_generated_worlds_are_pinned() -> None:
    """The same arguments give the same world on every machine and version (a change here
    changes every probe result, so it is deliberate)."""
    for (n_facts, n_relations, seed), digest in GENERATED_SHA256.items():
        assert _sha256(generate_world(n_facts, n_relations, seed=seed).to_dict()) == digest


def test_builtin_file_as_a_user_world_dir_and_its_checks(tmp_path: Path) -> None:
    """The built-in spec works as a user's ``relations.toml``, and a broken copy of it is
    rejected by the loader's checks, naming the file and the relation."""
    from mstudy.probes.world_files import BUILTIN_RELATIONS

    text = BUILTIN_RELATIONS.read_text(encoding="utf-8")
    generated = generate_world(12, 6, seed=0)
    (tmp_path / "relations.toml").write_text(text, encoding="utf-8")
    (tmp_path / "facts.jsonl").write_text(
        "".join(
            json.dumps({"subject": f.subject, "relation": f.relation, "object": f.object}) + "\n"
            for f in generated.facts
        ),
        encoding="utf-8",
    )
    assert load_world(tmp_path).relations == generated.relations
    broken = tmp_path / "broken.toml"
    broken.write_text(
        text.replace(
            'reverse_question = "Who penned {object}?"', 'reverse_question = "Who wrote?"'
        ),
        encoding="utf-8",
    )
    with pytest.raises(WorldError, match=r"broken\.toml: relation 'wrote', reverse_question"):
        load_relations(broken)
