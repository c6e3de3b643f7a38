"""The composition probe: world, teacher studies and their checks, leak check, students, CLI."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mstudy.probes.compose import (
    COMPOSE_DEFAULTS,
    COMPOSE_STUDENT,
    _score,
    run_compose_probe,
    write_compose_outputs,
)
from mstudy.probes.compose_data import build_compose_data
from mstudy.probes.compose_files import (
    generate_compose_world,
    load_compose_spec,
    load_compose_world,
)
from mstudy.probes.compose_result import ComposeResult
from mstudy.probes.compose_studying import study_compose
from mstudy.probes.compose_world import ComposeWorld, TwoHop
from mstudy.probes.errors import LeakError, WorldError
from mstudy.probes.world import Fact
from mstudy.records import Request
from mstudy.teachers.scripted import ScriptedTeacher

# The small world of the default tier: enough format questions for the student to learn the
# answer format and to copy names into a chain, small enough to train in seconds a student.
SMALL: dict[str, Any] = {"people": 24, "epochs": 120, "seeds": 2}
SMALL_STUDENT = replace(COMPOSE_STUDENT, lr=3e-3)


@pytest.fixture(scope="module")
def rules_result() -> ComposeResult:
    return run_compose_probe(teacher="rules", student=SMALL_STUDENT, **SMALL)


def _held(result: ComposeResult, name: str) -> float:
    values = result.condition(name).held_out
    return sum(values) / len(values)


def test_two_hops_are_learnt_only_from_chains_or_composed_statements(
    rules_result: ComposeResult,
) -> None:
    atomic = _held(rules_result, "atomic")
    chains = _held(rules_result, "rule_chains")
    connect = _held(rules_result, "rule_connect")
    control = _held(rules_result, "teacher_paraphrases")
    # the student learnt the facts' format questions...
    assert min(rules_result.condition("atomic").format) >= 0.8
    # ...but cannot compose two facts it was told separately: near chance (the split keeps
    # every held-out first hop out of the format half, and no held-out answer is the
    # subject's own place, so nothing but composing gives it)
    assert rules_result.world["shortcuts"]["shared_first_hop"] == 0
    assert rules_result.world["shortcuts"]["own_fact"] == 0
    assert atomic <= rules_result.chance + 0.1
    # being told the composition fixes it, and so does writing the chain
    assert connect >= atomic + 0.35
    assert chains >= atomic + 0.35
    # the same number of extra texts that compose nothing does not
    assert control <= atomic + 0.1
    assert control <= rules_result.chance + 0.1
    ceiling = rules_result.condition("rule_connect")
    assert rules_result.condition("teacher_paraphrases").extra_texts == ceiling.extra_texts
    # with the rules teacher the teacher conditions are the ceilings: trained once
    assert [c.name for c in rules_result.conditions] == [
        "atomic",
        "rule_chains",
        "rule_connect",
        "teacher_paraphrases",
    ]


def test_result_reports_and_writes_everything(rules_result: ComposeResult, tmp_path: Path) -> None:
    data = rules_result.to_dict()
    assert data["probe"] == "compose"
    assert data["teacher_stats"]["chains"]["yield"] == 1.0
    assert data["teacher_stats"]["connect"]["precision"] == 1.0
    held = rules_result.world["held_out"]
    assert data["leak_check"]["questions"] == held == data["leak_check"]["chains"]
    assert held == SMALL["people"]  # two compositions, half of each held out
    table = str(rules_result)
    for text in ("atomic facts", "rule chains", "ceiling", "chance", "by its chain", "Leak"):
        assert text in table
    paths = write_compose_outputs(rules_result, tmp_path / "out")
    assert {p.name for p in paths} == {
        "report.json",
        "table.md",
        "chart.png",
        "texts.jsonl",
        "training_data.json",
        "world.json",
    }
    assert json.loads((tmp_path / "out" / "report.json").read_text())["probe"] == "compose"
    assert (tmp_path / "out" / "chart.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    rows = [
        json.loads(line)
        for line in (tmp_path / "out" / "texts.jsonl").read_text().split("\n")
        if line
    ]
    assert {r["kind"] for r in rows} == {"chain", "connect"}


# -- the world --------------------------------------------------------------------------------


def test_generated_world_shape() -> None:
    world = generate_compose_world(10, seed=3)
    assert len(world.facts) == 30
    assert len(world.questions) == 20 and len(world.held_out) == 10
    people = {f.subject for f in world.facts}
    # every middle entity is also a subject elsewhere, and no one mentors their mentor
    mentor = {f.subject: f.object for f in world.facts if f.relation == "mentor"}
    assert set(mentor.values()) == people
    assert all(mentor[mentor[p]] != p for p in people)
    q = world.held_out[0]
    assert world.rule_chain(q).endswith(f"Final answer: {q.answer}")
    assert world.is_true_composed(q, world.composed_statement(q))
    assert not world.is_true_composed(q, f"{q.middle} lives in {q.answer}.")
    assert generate_compose_world(10, seed=3).to_dict() == world.to_dict()


@settings(max_examples=40, deadline=None)
@given(people=st.integers(min_value=4, max_value=90), seed=st.integers(0, 10_000))
def test_held_out_answers_cannot_be_had_without_composing(people: int, seed: int) -> None:
    """The atomic-only baseline is near chance only if nothing but composing gives the
    held-out answers: no held-out first hop or middle entity in the format half (else a
    student learns "A's mentor" from the format half), no answer equal to the subject's own
    place, no place much commoner than another."""
    world = generate_compose_world(people, seed=seed)
    held, fmt = world.held_out, world.format_questions
    assert {q.subject for q in held}.isdisjoint(q.subject for q in fmt)
    assert {q.middle for q in held}.isdisjoint(q.middle for q in fmt)
    own = {(f.subject, f.relation): f.object for f in world.facts}
    for q in held:
        second = world.compositions[q.composition].second
        assert own[(q.subject, second)] != q.answer
    for relation in ("lives_in", "works_for"):
        uses = Counter(f.object for f in world.facts if f.relation == relation)
        assert max(uses.values()) - min(uses.values()) <= 1
    for name in world.compositions:  # half of each composition held out
        mine = [q for q in world.questions if q.composition == name]
        assert sum(q.held_out for q in mine) == len(mine) // 2
    shortcuts = world.shortcuts()
    assert shortcuts["own_fact"] == shortcuts["shared_first_hop"] == 0
    assert world.chance() <= 1 / 3


def test_questions_sharing_a_middle_entity_are_held_out_together(tmp_path: Path) -> None:
    """Two students with one advisor: both questions on the same side of the split, whatever
    the seed; a world where every question shares one middle entity cannot be split."""
    facts = _own_facts()
    facts.append({"subject": "Ann Vel9", "relation": "advisor", "object": "Prof Kor0"})
    folder = _write_world(tmp_path / "shared", _own_spec(), facts)
    for seed in range(8):
        world = load_compose_world(folder, seed=seed)
        side = {q.subject: q.held_out for q in world.questions}
        assert side["Ann Vel9"] == side["Ann Vel0"]
        assert 1 <= len(world.held_out) <= 3
    one = [
        {"subject": f"Ann Vel{i}", "relation": "advisor", "object": "Prof Kor"} for i in range(4)
    ]
    one.append({"subject": "Prof Kor", "relation": "office", "object": "Hall Ub"})
    with pytest.raises(WorldError, match="none can be held out"):
        load_compose_world(_write_world(tmp_path / "one", _own_spec(), one))


def _write_world(folder: Path, spec: dict[str, Any], facts: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "relations.json").write_text(json.dumps(spec))
    (folder / "facts.jsonl").write_text("".join(json.dumps(f) + "\n" for f in facts))
    return folder


def _own_spec() -> dict[str, Any]:
    """A spec unlike the built-in one: multi-word names, other relations."""
    return {
        "relations": {
            "advisor": {
                "subject_type": "student",
                "object_type": "professor",
                "forward": "The advisor of {subject} is {object}.",
            },
            "office": {
                "subject_type": "professor",
                "object_type": "building",
                "forward": "{subject} has an office in {object}.",
            },
        },
        "compositions": {
            "advisor_office": {
                "first": "advisor",
                "second": "office",
                "question": "In which building does the advisor of {subject} sit?",
                "composed": "The advisor of {subject} has an office in {object}, and is {middle}.",
            }
        },
    }


def _own_facts() -> list[dict[str, Any]]:
    facts = []
    for i in range(6):
        facts.append({"subject": f"Ann Vel{i}", "relation": "advisor", "object": f"Prof Kor{i}"})
        facts.append({"subject": f"Prof Kor{i}", "relation": "office", "object": f"Hall Ub{i}"})
    return facts


def test_load_a_world_of_your_own(tmp_path: Path) -> None:
    world = load_compose_world(_write_world(tmp_path, _own_spec(), _own_facts()), seed=1)
    assert len(world.questions) == 6 and len(world.held_out) == 3
    q = world.questions[0]
    assert world.question_text(q) == "In which building does the advisor of Ann Vel0 sit?"
    assert q.answers == {"Hall Ub0"}
    assert world.composed_statement(q).startswith("The advisor of Ann Vel0 has an office")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s, f: s["compositions"]["advisor_office"].update(second="nope"),
            "unknown relation",
        ),
        (
            lambda s, f: s["relations"]["office"].update(subject_type="dean"),
            "ends at a 'professor'",
        ),
        (
            lambda s, f: s["compositions"]["advisor_office"].update(
                composed="{subject}: {object}."
            ),
            "{middle} must appear exactly once",
        ),
        (lambda s, f: s["relations"]["advisor"].update(colour="red"), "unknown key"),
        (lambda s, f: f[0].update(scored=True), "has 'scored'"),
        (lambda s, f: f.__setitem__(slice(2, None), []), "needs at least 2"),
    ],
)
def test_bad_worlds_fail_on_load_naming_the_problem(
    tmp_path: Path, change: Any, message: str
) -> None:
    spec, facts = _own_spec(), _own_facts()
    change(spec, facts)
    with pytest.raises(WorldError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_compose_world(_write_world(tmp_path, spec, facts))


def test_a_bad_world_fails_before_any_teacher_call(tmp_path: Path) -> None:
    """Templates that are well formed one by one but whose rule texts leak the question are
    found on load, not after the teacher has worked."""
    spec = _own_spec()
    composition = spec["compositions"]["advisor_office"]
    composition["question"] = "Which building for {subject}?"
    composition["composed"] = "Which building for {subject}? {object}, says {middle}."
    folder = _write_world(tmp_path, spec, _own_facts())
    teacher = ScriptedTeacher("never")
    with pytest.raises(WorldError, match="contains the question"):
        run_compose_probe(teacher=teacher, world_dir=folder, seeds=1, epochs=1)
    assert teacher.calls == 0


def test_builtin_spec_reads_with_the_users_loader() -> None:
    from mstudy.probes.compose_files import BUILTIN_COMPOSE

    relations, compositions, anchors = load_compose_spec(BUILTIN_COMPOSE)
    assert set(relations) == {"mentor", "lives_in", "works_for"}
    assert set(compositions) == {"mentor_city", "mentor_company"}
    assert anchors["city"] == "{entity} is a city."


# -- the studies and their checks ---------------------------------------------------------------


def _messy_teacher(world: ComposeWorld) -> ScriptedTeacher:
    """By question index: right, wrong final answer, bridge left out, or answer first."""
    questions = {q.id: q for q in world.questions}
    index = {q.id: i for i, q in enumerate(world.questions)}
    by_text = {world.statement(f): f for f in world.facts}

    def reply(request: Request) -> str:
        if request.strategy == "paraphrase":
            return world.paraphrase_statement(by_text[str(request.variables["text"])])
        q = questions[request.source_id]
        kind = index[q.id] % 3
        if request.strategy == "cot":
            if kind == 0:
                return world.rule_chain(q)
            if kind == 1:
                return f"{q.subject}'s mentor is {q.middle}. Final answer: {q.subject}"
            return f"{q.subject} asked around. Final answer: {q.answer}"
        if kind == 2:
            return f"{q.answer} is where {q.subject}'s mentor is."
        return world.composed_statement(q)

    return ScriptedTeacher(reply)


def test_study_keeps_only_verified_chains_and_subject_first_statements() -> None:
    world = generate_compose_world(12, seed=2)
    study = study_compose(world, _messy_teacher(world), samples=2)
    kind = {q.id: i % 3 for i, q in enumerate(world.questions)}
    assert set(study.chains) == {q.id for q in world.format_questions if kind[q.id] == 0}
    assert set(study.connected) == {q.id for q in world.questions if kind[q.id] != 2}
    stats = study.stats
    assert stats["chains"]["accepted"] == len(study.chains)
    assert stats["chains"]["rounds"] == 2  # the rejected ones were asked again
    reasons = stats["chains"]["rejections"]
    assert any("wrong answer" in k for k in reasons)  # the cot check and answer_check
    assert any("subject-first" in k for k in reasons)  # the middle entity is missing
    assert stats["connect"]["true"] == len(study.connected)
    # the rule texts cover every question, the control as many facts as statements
    assert len(study.rule_chains) == len(study.rule_connected) == len(world.questions)
    assert len(study.paraphrases) == len(study.connected)


def test_chains_open_with_the_first_fact_as_far_as_its_subject(tmp_path: Path) -> None:
    """The chain's prefill restates the first fact in the world's own form: the subject alone
    where the form starts with it, "The advisor of Ann Vel0" where it does not."""
    seen: dict[str, str | None] = {}

    def reply(request: Request) -> str:
        if request.strategy == "cot":
            seen[request.source_id] = request.prefill
        return "-"

    own = load_compose_world(_write_world(tmp_path, _own_spec(), _own_facts()), seed=1)
    study_compose(own, ScriptedTeacher(reply), samples=1)
    assert seen and all(seen[q.id] == f"The advisor of {q.subject}" for q in own.format_questions)
    seen.clear()
    builtin = generate_compose_world(8, seed=0)
    study_compose(builtin, ScriptedTeacher(reply), samples=1)
    assert seen and all(seen[q.id] == q.subject for q in builtin.format_questions)


def test_connect_keeps_only_role_keeping_statements_and_grades_all_in_three_parts() -> None:
    """A teacher whose statements drop the first hop (false), restate the second fact
    (undecided: true but nothing composed), or name a wrong mentor (false): link_check keeps
    only the composed ones, asks again for the rest, and every statement written is graded."""
    world = generate_compose_world(12, seed=4)
    questions = {q.id: q for q in world.questions}
    index = {q.id: i for i, q in enumerate(world.questions)}
    people = [f.subject for f in world.facts if f.relation == "mentor"]
    by_text = {world.statement(f): f for f in world.facts}
    prompts: list[str] = []

    def reply(request: Request) -> str:
        if request.strategy == "paraphrase":
            return world.paraphrase_statement(by_text[str(request.variables["text"])])
        q = questions[request.source_id]
        if request.strategy == "cot":
            return world.rule_chain(q)
        prompts.append("\n".join(m.content for m in request.messages))
        second = q.paths[0][1]
        kind = index[q.id] % 4
        if kind == 0:
            return world.composed_statement(q)
        if kind == 1:  # the subject's own place: the first hop dropped
            own = world.statement(Fact("x", q.subject, second.relation, q.answer))
            return own[:-1] + ", as everyone knows."
        if kind == 2:  # "A's mentor B lives in C.": the second fact restated
            return f"{q.subject}'s mentor {world.statement(second)}"
        other = next(p for p in people if p not in (q.subject, q.middle))
        return world.composed_statement(q).replace(q.middle, other)

    study = study_compose(world, ScriptedTeacher(reply), samples=2)
    kind = {q.id: i % 4 for i, q in enumerate(world.questions)}
    assert set(study.connected) == {q for q, k in kind.items() if k == 0}
    stats = study.stats["connect"]
    assert stats["rounds"] == 3  # samples + one more round for the rejected ones
    assert stats["selected"] == {"true": stats["accepted"], "false": 0, "undecided": 0}
    n = {k: sum(v == k for v in kind.values()) for k in range(4)}
    assert stats["all_written"] == {"true": n[0], "false": 3 * (n[1] + n[3]), "undecided": 3 * n[2]}
    reasons = " ".join(stats["rejections"])
    for why in ("first hop dropped", "restates the second fact", "adds a name"):
        assert why in reasons
    rejected = [r for r in study.rows if r["kind"] == "connect rejected"]
    assert {r["verdict"] for r in rejected} == {"false", "undecided"}
    # the few-shot examples are the world's own wording, with names the world does not have
    assert "; that mentor is" in prompts[0]  # the composition's own composed form
    shots = prompts[0].split("Fact: ")[1:-1]
    entities = [e.casefold() for e in world.entity_types]
    assert shots and not any(e in shot.casefold() for shot in shots for e in entities)


@settings(max_examples=15, deadline=None)
@given(st.integers(4, 30), st.integers(0, 2**16))
def test_each_fact_is_learnt_apart_from_its_chain(people: int, seed: int) -> None:
    """No base text holds a first hop next to another fact of its subject or its middle
    entity (the direct student would learn to compose without writing the chain), and every
    first hop also comes after another sentence (a chain's first step recalls it mid-text)."""
    world = generate_compose_world(people, seed=seed)
    data = build_compose_data(world, study_compose(world, "rules", samples=1))
    first = {c.first for c in world.compositions.values()}
    hops = [f for f in world.facts if f.relation in first]
    for fact in hops:
        hop = world.statement(fact)
        holding = [t for t in data.base if hop in t]
        others = [
            world.statement(g)
            for g in world.facts
            if g is not fact and {g.subject, g.object} & {fact.subject, fact.object}
        ]
        assert not any(o in t for t in holding for o in others), (hop, holding)
        assert any(not t.startswith(hop) for t in holding), (hop, holding)
    # the second hops are in each subject's profile, after its anchor
    for fact in world.facts:
        if fact.relation not in first:
            assert any(
                t.startswith(f"Q: What is {fact.subject}?") and world.statement(fact) in t
                for t in data.base
            )


def test_leak_check_drops_or_stops() -> None:
    world = generate_compose_world(12, seed=5)
    study = study_compose(world, "rules", samples=1)
    data = build_compose_data(world, study)
    texts = [*data.base, *(t for g in data.extra.values() for t in g)]
    for q in world.held_out:
        assert not any(world.question_text(q) in t for t in texts)
        assert not any(world.rule_chain(q) in t for t in texts)
    for q in world.format_questions:
        assert any(world.question_text(q) in t for t in data.base)
    # a teacher text that holds a held-out question is dropped and counted
    held: TwoHop = world.held_out[0]
    study.teacher = "some teacher"
    study.connected = dict(study.rule_connected)
    study.connected[held.id] += " " + world.question_text(held)
    data = build_compose_data(world, study)
    assert data.leak_check["dropped"] == 1
    assert len(data.extra["teacher_connect"]) == len(world.questions) - 1
    # a held-out question's answer chain in the training data stops the run
    study.connected[held.id] = world.rule_chain(held)
    with pytest.raises(LeakError):
        build_compose_data(world, study)


def test_chain_students_are_scored_by_their_final_answer() -> None:
    gold = frozenset({"Velmora"})
    assert _score(
        "Zap ' s mentor is Kor . Kor lives in Velmora . Final answer : Velmora", gold, "chain"
    )
    assert not _score("Zap ' s mentor is Kor . Kor lives in Velmora .", gold, "chain")
    assert _score("Velmora", gold, "direct")
    assert not _score("Final answer : Velmora", gold, "direct")


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_compose_registers_and_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mstudy.probes.cli import register

    parser = argparse.ArgumentParser(prog="mstudy")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "probe",
            "compose",
            "--teacher",
            "rules",
            "--people",
            "6",
            "--epochs",
            "2",
            "--seeds",
            "1",
            "--out",
            str(tmp_path),
            "--quiet",
            "--json",
        ]
    )
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["probe"] == "compose" and report["world"]["questions"] == 12
    assert (tmp_path / "table.md").is_file() and (tmp_path / "chart.png").is_file()
    defaults = parser.parse_args(["probe", "compose"])
    assert defaults.teacher == COMPOSE_DEFAULTS["teacher"] == "default"
    assert defaults.people == COMPOSE_DEFAULTS["people"]
    assert defaults.out == Path("out/probe-compose")


def test_cli_compose_world_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mstudy.probes.cli import register

    folder = _write_world(tmp_path / "w", _own_spec(), _own_facts())
    parser = argparse.ArgumentParser(prog="mstudy")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "probe",
            "compose",
            "--teacher",
            "rules",
            "--world-dir",
            str(folder),
            "--epochs",
            "1",
            "--seeds",
            "1",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--json",
        ]
    )
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["world"]["source"].endswith("facts.jsonl")
    assert report["world"]["compositions"] == ["advisor_office"]


# -- the real teacher (slow tier) --------------------------------------------------------------


@pytest.mark.slow
def test_compose_probe_with_the_embedded_teacher(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    result = run_compose_probe(teacher="default", student=SMALL_STUDENT, samples=2, **SMALL)
    write_compose_outputs(result, tmp_path)
    stats = result.teacher_stats
    assert stats["chains"]["requests"] >= len(
        [q for q in result.world_data["questions"] if not q["held_out"]]
    )
    assert stats["chains"]["accepted"] > 0 and stats["connect"]["accepted"] > 0
    names = [c.name for c in result.conditions]
    assert names == [
        "atomic",
        "teacher_chains",
        "rule_chains",
        "teacher_connect",
        "rule_connect",
        "teacher_paraphrases",
    ]
    # the embedded teacher's chains and composed statements teach the two hops the student
    # cannot compose on its own; its paraphrases of single facts do not
    atomic = _held(result, "atomic")
    assert atomic <= result.chance + 0.1
    assert _held(result, "rule_chains") >= atomic + 0.35
    assert _held(result, "teacher_chains") >= atomic + 0.25
    assert _held(result, "teacher_connect") >= atomic + 0.25
    assert _held(result, "teacher_paraphrases") <= result.chance + 0.1
    print(result)
