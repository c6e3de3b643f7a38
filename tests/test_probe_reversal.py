"""The reversal probe: teacher study, selection, leak checks, student, outputs, CLI."""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import pytest

from mstudy.probes.defaults import DEFAULTS
from mstudy.probes.errors import LeakError
from mstudy.probes.leaks import check_no_leak
from mstudy.probes.outputs import write_outputs
from mstudy.probes.result import ProbeResult
from mstudy.probes.reversal import run_probe
from mstudy.probes.rules import Candidate, SwapFilter, pattern, select_consistent
from mstudy.probes.student import StudentConfig
from mstudy.probes.student_data import build_student_data, qa_prompt
from mstudy.probes.studying import study_world
from mstudy.probes.world import Fact, World
from mstudy.probes.world_generator import generate_world
from mstudy.records import Example, Request
from mstudy.teachers.scripted import ScriptedTeacher

# The small world of the default test tier: big enough that the student learns the question
# format from the format half, small enough to train in seconds on one thread.
SMALL = {"facts": 40, "relations": 4, "epochs": 100, "seeds": 1}


def _fact(world: World, relation: str, index: int = 0) -> Fact:
    return [f for f in world.facts if f.relation == relation][index]


# -- the student ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rules_result() -> ProbeResult:
    return run_probe(teacher="rules", student=StudentConfig(lr=3e-3), **SMALL)  # type: ignore[arg-type]


def test_reversal_curse_and_its_cure_on_a_small_world(rules_result: ProbeResult) -> None:
    forward = rules_result.condition("forward")
    ceiling = rules_result.condition("rule_reversals")
    control = rules_result.condition("teacher_paraphrases")
    # the student learned the facts and the question format...
    assert min(forward.forward) >= 0.5
    # ...but cannot answer the other way round: chance level
    assert max(forward.reverse) <= 0.05
    # one reversed statement per fact fixes it
    assert min(ceiling.reverse) >= 0.70
    # the same amount of extra data, subject first, does not
    assert max(control.reverse) <= 0.10
    assert control.extra_statements == ceiling.extra_statements
    # with the rules teacher the teacher-reversal condition is the ceiling: trained once
    assert [c.name for c in rules_result.conditions] == [
        "forward",
        "teacher_paraphrases",
        "rule_reversals",
    ]
    assert rules_result.chance["reverse"] < 0.05


def test_result_reports_everything(rules_result: ProbeResult, tmp_path: Path) -> None:
    data = rules_result.to_dict()
    assert data["teacher"] == "rules"
    assert data["teacher_stats"]["yield"] == 1.0
    assert data["teacher_stats"]["precision"] == 1.0
    assert data["leak_check"]["questions"] == 2 * rules_result.world["scored"]
    assert set(data["times"]) >= {"world", "teacher reversals", "students (train + score)"}
    assert data["settings"]["student"]["threads"] == 1
    table = str(rules_result)
    for text in ("forward only", "paraphrases", "ceiling", "chance", "yield", "precision"):
        assert text in table
    paths = write_outputs(rules_result, tmp_path / "out")
    names = {p.name for p in paths}
    assert names == {
        "report.json",
        "table.md",
        "chart.png",
        "reversals.jsonl",
        "training_data.json",
        "world.json",
    }
    assert json.loads((tmp_path / "out" / "report.json").read_text())["probe"] == "reversal"
    png = (tmp_path / "out" / "chart.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert width > 300 and height > 200
    # a whole image that a PNG decoder reads back at that size
    from matplotlib.image import imread

    assert imread(tmp_path / "out" / "chart.png").shape[:2] == (height, width)


# -- the study: filters, selection, statistics -------------------------------------------------


def _messy_teacher(world: World) -> ScriptedTeacher:
    """Answers like a weak teacher: right, swapped, misspelt or wrong, by fact index."""
    index = {f.id: i for i, f in enumerate(world.facts)}
    by_pair = {(f.subject, f.object): f for f in world.facts}
    by_text = {world.statement(f): f for f in world.facts}

    def reply(request: Request) -> str:
        v = request.variables
        fact = by_pair.get((v.get("subject"), v.get("object"))) or by_text[str(v["text"])]
        kind = index[fact.id] % 4
        if request.strategy == "paraphrase":
            return f"{fact.subject} is known for {fact.object}." if kind != 3 else "Nothing."
        if kind == 0:
            return world.inverse_statement(fact)
        if kind == 1:  # the names swapped, the wording kept: a false statement
            return (
                world.statement(fact)
                .replace(fact.subject, "@")
                .replace(fact.object, fact.subject)
                .replace("@", fact.object)
            )
        if kind == 2:  # the subject misspelt
            last = "q" if fact.subject[-1] != "q" else "z"
            return f"{fact.object} was made by {fact.subject[:-1]}{last}."
        return f"{fact.object} is the child of {fact.subject}."

    return ScriptedTeacher(reply)


def test_study_filters_select_and_count() -> None:
    world = generate_world(40, 5, seed=4)
    outcome = study_world(world, _messy_teacher(world), samples=2)
    stats = outcome.teacher_stats
    right = {f.id for i, f in enumerate(world.facts) if i % 4 == 0}
    child = {f.id for i, f in enumerate(world.facts) if i % 4 == 3}
    # swapped and misspelt replies never get through; "child of" shares no word with any
    # relation, so it is never verified; nor is the rules' "is the birthplace of" for "was
    # born in" (true, but nothing in the source confirms it)
    born = {f.id for f in world.facts if f.relation == "born"}
    assert right - born <= set(outcome.reversals)
    assert set(outcome.reversals) <= right - born
    assert not child & set(outcome.reversals)
    assert stats["facts_with_reversal"] == len(outcome.reversals)
    assert stats["yield"] == len(outcome.reversals) / 40
    true = sum(world.is_true_reversal(c.fact, c.text) for c in outcome.reversals.values())
    assert stats["true"] == true == len(right - born)
    assert stats["precision"] == pytest.approx(true / len(outcome.reversals))
    assert stats["rounds"] == 2  # some facts had nothing after round 1
    reasons = stats["rejections"]
    assert any("subject missing" in k for k in reasons)
    assert any("no-swap" in k or "relation not rewritten" in k for k in reasons)
    # the paraphrase control: only facts that got a reversal, subject first
    assert set(outcome.paraphrases) <= set(outcome.reversals)
    for fid, text in outcome.paraphrases.items():
        fact = next(f for f in world.facts if f.id == fid)
        assert text.startswith(fact.subject)
    # the ceiling comes from the rules, for every fact
    assert len(outcome.rule_reversals) == 40


def test_student_data_keeps_scored_questions_out() -> None:
    world = generate_world(40, 5, seed=4)
    outcome = study_world(world, _messy_teacher(world), samples=1)
    data = build_student_data(world, outcome)
    every = [*data.base, *(t for texts in data.extra.values() for t in texts)]
    for fact in world.scored_facts:
        for question in (world.forward_question(fact), world.reverse_question(fact)):
            assert not any(question in t for t in every)
            assert qa_prompt(question) in data.prompts
    for fact in world.format_facts:
        assert any(world.reverse_question(fact) in t for t in data.base)
    assert len(data.extra["teacher_paraphrases"]) == len(data.extra["teacher_reversals"])
    assert data.extra["forward"] == []


def test_teacher_text_containing_a_scored_question_is_dropped() -> None:
    world = generate_world(20, 5, seed=1)
    victim = world.scored_facts[0]
    question = world.reverse_question(victim)

    def reply(request: Request) -> str:
        v = request.variables
        fact = next(f for f in world.facts if f.subject == v.get("subject"))
        text = world.inverse_statement(fact)
        if fact is victim and request.strategy == "reverse":
            return f"{fact.object} ({question}){text[len(fact.object) :]}"
        if request.strategy == "paraphrase":
            return world.paraphrase_statement(fact)
        return text

    outcome = study_world(world, ScriptedTeacher(reply), samples=1, min_agreement=1)
    assert victim.id in outcome.reversals
    data = build_student_data(world, outcome)
    assert data.leak_check["dropped"] == 1
    assert not any(question in t for t in data.extra["teacher_reversals"])


def test_check_no_leak() -> None:
    assert check_no_leak(["Ada founded Quillworks."], ["Who set up Quillworks?"]) == 1
    with pytest.raises(LeakError, match="who set up quillworks"):
        check_no_leak(["Q: Who set up Quillworks? A: Ada"], ["Who set up Quillworks?"])


def test_swap_filter_and_patterns() -> None:
    world = generate_world(10, 5, seed=0)
    fact = _fact(world, "born")
    swap = SwapFilter({"r1": (fact.subject, fact.object)})
    request = Request(messages=(), source_id="r1", strategy="reverse")
    from mstudy.records import Completion

    def example(text: str) -> Example:
        fields = {"input": world.statement(fact), "text": text, "answer": None}
        return Example.from_completion(request, Completion(request.key, text), fields)

    swapped = f"{fact.object} was born in {fact.subject}."
    assert not isinstance(swap.check(example(swapped)), Example)
    assert isinstance(swap.check(example(world.inverse_statement(fact))), Example)
    assert (
        pattern(
            f"{fact.object} is the city where {fact.subject} was born.", fact.subject, fact.object
        )
        == "city where <s> was born"
    )
    assert pattern("nothing here", fact.subject, fact.object) == ""


def test_select_consistent_prefers_shared_patterns() -> None:
    world = generate_world(20, 5, seed=2)
    founded = [f for f in world.facts if f.relation == "founded"]
    group = "g"
    candidates = [
        Candidate(
            founded[0], f"{founded[0].object} was founded by {founded[0].subject}.", 0, group
        ),
        Candidate(founded[0], f"{founded[0].object} loves {founded[0].subject}.", 1, group),
        Candidate(
            founded[1], f"{founded[1].object} was founded by {founded[1].subject}.", 1, group
        ),
        Candidate(founded[2], f"{founded[2].object} hums near {founded[2].subject}.", 0, group),
    ]
    chosen, dropped = select_consistent(candidates)
    assert chosen[founded[0].id].sample == 0
    assert founded[1].id in chosen
    assert founded[2].id in dropped and founded[2].id not in chosen


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_registers_and_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mstudy.probes.cli import register

    parser = argparse.ArgumentParser(prog="mstudy")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "probe",
            "reversal",
            "--teacher",
            "rules",
            "--facts",
            "20",
            "--epochs",
            "2",
            "--seeds",
            "1",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "forward only" in out and "ceiling" in out
    assert (tmp_path / "report.json").is_file() and (tmp_path / "chart.png").is_file()
    defaults = parser.parse_args(["probe", "reversal"])
    assert defaults.teacher == DEFAULTS["teacher"] == "default"
    assert defaults.facts == DEFAULTS["facts"]


def test_cli_world_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mstudy.probes.cli import register

    world = generate_world(16, 4, seed=0)
    relations = {name: r.to_dict() for name, r in world.relations.items()}
    (tmp_path / "relations.json").write_text(json.dumps({"relations": relations}))
    (tmp_path / "facts.jsonl").write_text(
        "".join(
            json.dumps({"subject": f.subject, "relation": f.relation, "object": f.object}) + "\n"
            for f in world.facts
        )
    )
    parser = argparse.ArgumentParser(prog="mstudy")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "probe",
            "reversal",
            "--teacher",
            "rules",
            "--world-dir",
            str(tmp_path),
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
    assert report["world"]["facts"] == 16
    assert report["world"]["source"].endswith("facts.jsonl")


# -- the real teacher (slow tier) --------------------------------------------------------------


@pytest.mark.slow
def test_probe_with_the_embedded_teacher(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    result = run_probe(teacher="default", facts=60, relations=4, seeds=1, epochs=100, samples=2)
    write_outputs(result, tmp_path)
    stats = result.teacher_stats
    assert stats["requests"] >= 60
    assert 0 < stats["yield"] <= 1
    assert stats["facts_with_reversal"] > 0
    # precision in three parts, for the selected reversals and for all the teacher wrote
    selected, everything = stats["selected"], stats["all_reversals"]
    assert selected["n"] == stats["facts_with_reversal"]
    assert selected["true"] + selected["false"] + selected["undecided"] == selected["n"]
    assert everything["n"] >= stats["candidates_before_selection"] >= selected["n"]
    assert selected["false_rate"] <= everything["false_rate"]
    forward = result.condition("forward")
    reversals = result.condition("teacher_reversals")
    ceiling = result.condition("rule_reversals")
    control = result.condition("teacher_paraphrases")
    assert control.extra_statements == reversals.extra_statements
    assert max(forward.reverse) <= 0.05
    assert min(ceiling.reverse) >= 0.5
    # what the teacher's reversals do is measured, not assumed: report it
    print(result)


def test_students_give_the_same_answers_spawned_as_forked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a teacher used CUDA, students start by ``spawn`` (a forked child cannot use CUDA
    there): their results must not depend on how their processes started."""
    from mstudy.probes import training

    small = {"facts": 12, "relations": 2, "epochs": 8, "seeds": 1, "workers": 2}
    results = {}
    for method in ("fork", "spawn"):
        monkeypatch.setattr(training, "start_method", lambda method=method: method)
        result = run_probe(teacher="rules", **small)  # type: ignore[arg-type]
        results[method] = [(c.name, c.forward, c.reverse) for c in result.conditions]
    assert results["spawn"] == results["fork"]


def test_start_method_is_spawn_once_cuda_is_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from mstudy.probes.training import start_method

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert start_method() == "fork"
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert start_method() == "spawn"
