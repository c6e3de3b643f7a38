"""Chained studies, lineage and rounds: what a user of ``a >> b`` and ``Rounds`` relies on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mstudy
from mstudy import Chain, ExactDedup, Paraphrase, Report, Reverse, Rounds, ScriptedTeacher, Study
from mstudy.config import parse_config

HARNESS = Path(__file__).parent / "harness" / "chain_study.py"
REPLIES = {"reverse": "{{ object }} holds {{ subject }}.", "paraphrase": "So: {{ text }}"}


def facts(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"r{i}", "text": f"A{i} is in B{i}.", "subject": f"A{i}", "object": f"B{i}"}
        for i in range(n)
    ]


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


def two_stages(teacher: Any = None, **chain: Any) -> Chain:
    teacher = teacher or ScriptedTeacher(REPLIES)
    return Chain([Study(teacher, ["reverse"]), Study(teacher, ["paraphrase"])], **chain)


# -- lineage ----------------------------------------------------------------------------------

ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
words = st.text("abcdefghij", min_size=1, max_size=8)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(ids, words, words), min_size=1, max_size=8, unique_by=lambda r: r[0])
)
def test_lineage_chains_back_to_the_source_ids(
    tmp_path: Path, rows: list[tuple[str, str, str]]
) -> None:
    source = [
        {"id": i, "text": f"{a} is in {b}.", "subject": a, "object": b}
        for i, a, b in rows
        if i.strip()
    ]
    out = tmp_path / f"{len(list(tmp_path.iterdir()))}"
    chain = two_stages(sinks=[out / "final.jsonl"])
    chain.stages[0].sink_specs.append(out / "stage1.jsonl")
    chain.run(source)
    first = {row["id"]: row for row in read(out / "stage1.jsonl")}
    final = read(out / "final.jsonl")
    assert len(final) == len(source)
    for row in first.values():
        assert row["provenance"]["generation"] == 1
        assert row["provenance"]["parents"] == [row["source_id"]]
    for row, record in zip(final, source, strict=True):
        prov = row["provenance"]
        assert prov["generation"] == 2
        root, parent = prov["parents"]
        assert root == record["id"] and parent == row["source_id"]
        assert first[parent]["source_id"] == root
    # ids are stable: the same chain again gives the same rows
    again = tmp_path / "again.jsonl"
    two_stages(sinks=[again]).run(source)
    assert again.read_bytes() == (out / "final.jsonl").read_bytes()
    again.unlink()


def test_studying_an_mstudy_output_again_continues_the_generations(tmp_path: Path) -> None:
    teacher = ScriptedTeacher(REPLIES)
    two_stages(teacher, sinks=[tmp_path / "g2.jsonl"]).run(facts(3))
    Study(teacher, ["paraphrase"], sinks=[tmp_path / "g3.jsonl"]).run(tmp_path / "g2.jsonl")
    g2, g3 = read(tmp_path / "g2.jsonl"), read(tmp_path / "g3.jsonl")
    for parent, row in zip(g2, g3, strict=True):
        assert row["provenance"]["generation"] == 3
        assert row["provenance"]["parents"] == [*parent["provenance"]["parents"], parent["id"]]
    # plain columns give a lineage too (data from another tool)
    rows = [{"id": "x", "text": "A is in B.", "generation": 4, "parents": ["p0", "p1"]}]
    (example,) = Study(teacher, ["paraphrase"]).iter(rows)
    assert example.provenance.generation == 5
    assert example.provenance.parents == ("p0", "p1", "x")


def test_a_malformed_lineage_is_an_input_rejection_naming_the_field() -> None:
    rows = [
        {"id": "bad", "text": "A is in B.", "provenance": {"generation": -1, "source_id": "s"}},
        {"id": "ok", "text": "C is in D."},
    ]
    run = Study(ScriptedTeacher(REPLIES), ["paraphrase"]).stream(rows)
    items = list(run)
    rejection = items[0]
    assert isinstance(rejection, mstudy.Rejection)
    assert (rejection.stage, rejection.reason, rejection.field) == (
        "input",
        "invalid_lineage",
        "provenance.generation",
    )
    assert "'bad'" in rejection.detail
    assert isinstance(items[1], mstudy.Example) and items[1].provenance.generation == 1


# -- Python and TOML ---------------------------------------------------------------------------

CHAIN_TOML = """
[source]
path = "facts.jsonl"

[teacher]
name = "scripted"
reply = { reverse = "{{ object }} holds {{ subject }}.", paraphrase = "So: {{ text }}" }

[[stages]]
name = "reverse"
[[stages.strategies]]
name = "reverse"
[[stages.sinks]]
name = "jsonl"
path = "out/reversed.jsonl"

[[stages]]
name = "paraphrase"
strategies = ["paraphrase"]
filters = ["dedup"]

[[sinks]]
name = "jsonl"
path = "out/final.jsonl"

[rejects]
name = "jsonl"
path = "out/rejects.jsonl"
"""


def test_a_chain_in_toml_writes_what_the_same_chain_in_python_writes(tmp_path: Path) -> None:
    (tmp_path / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in facts(5)))
    (tmp_path / "study.toml").write_text(CHAIN_TOML)
    config = parse_config(CHAIN_TOML, tmp_path / "study.toml")
    assert config.is_chain
    chain, source = config.build_chain(progress=False)
    report = chain.run(source)
    assert list(report.stages) == ["reverse", "paraphrase"]
    assert not chain.journal.exists()  # a finished chain removes its journal

    teacher = ScriptedTeacher({"reverse": REPLIES["reverse"], "paraphrase": REPLIES["paraphrase"]})
    py = tmp_path / "py"
    chain = Study(teacher, [Reverse()], sinks=[py / "reversed.jsonl"], name="reverse") >> Study(
        teacher, [Paraphrase()], [ExactDedup()], name="paraphrase"
    )
    chain.sink_specs.append(py / "final.jsonl")
    chain.rejects_spec = py / "rejects.jsonl"
    chain.run(tmp_path / "facts.jsonl")
    for name in ("reversed.jsonl", "final.jsonl"):
        assert (tmp_path / "out" / name).read_bytes() == (py / name).read_bytes()


def test_cli_runs_a_chained_config(tmp_path: Path) -> None:
    (tmp_path / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in facts(3)))
    (tmp_path / "study.toml").write_text(CHAIN_TOML)
    done = subprocess.run(
        [sys.executable, "-m", "mstudy", "run", str(tmp_path / "study.toml")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "stage 1: reverse" in done.stdout and "stage 2: paraphrase" in done.stdout
    assert len(read(tmp_path / "out" / "final.jsonl")) == 3


def test_a_config_with_strategies_and_stages_is_refused(tmp_path: Path) -> None:
    text = CHAIN_TOML.replace(
        '[[stages]]\nname = "reverse"',
        '[[strategies]]\nname = "reverse"\n\n[[stages]]\nname = "reverse"',
        1,
    )
    with pytest.raises(mstudy.ConfigError) as info:
        parse_config(text, tmp_path / "study.toml")
    assert info.value.parameter == "strategies" and info.value.line is not None


# -- rejects and the report --------------------------------------------------------------------


def test_every_stage_s_rejects_are_counted_and_written_with_the_stage_named(
    tmp_path: Path,
) -> None:
    teacher = ScriptedTeacher(
        {"reverse": "{{ object }} holds {{ subject }}.", "paraphrase": "It is the same."}
    )
    rows = [*facts(4), {"id": "nofield", "text": "X is in Y."}]  # no subject: reverse rejects
    rows[1] = {**rows[1], "text": "B1 holds A1."}  # the reversal copies it: rejected
    chain = Chain(
        [Study(teacher, ["reverse"], ["dedup"]), Study(teacher, ["paraphrase"], ["dedup"])],
        rejects=tmp_path / "rejects.jsonl",
    )
    report = chain.run(rows)
    rejects = read(tmp_path / "rejects.jsonl")
    by_stage: dict[str, int] = {}
    for row in rejects:
        by_stage[row["chain_stage"]] = by_stage.get(row["chain_stage"], 0) + 1
    assert by_stage == {
        name: stage.rejected for name, stage in report.stages.items() if stage.rejected
    }
    assert set(by_stage) == {"reverse", "paraphrase"}  # "It is the same." thrice: dedup
    assert report.rejected == len(rejects)
    assert report.accepted == 1
    text = str(report)
    assert "stage 1: reverse" in text and "stage 2: paraphrase" in text
    html = report._repr_html_()
    assert "stage 1: reverse" in html and "stage 2: paraphrase" in html
    restored = Report.from_state(json.loads(json.dumps(report.to_state())))
    assert restored.to_state() == report.to_state()
    assert str(restored) == str(report)


# -- rounds ------------------------------------------------------------------------------------


def test_rounds_ask_again_only_the_records_without_an_accepted_example() -> None:
    calls: list[tuple[str, float, int]] = []

    def reply(request: mstudy.Request) -> str:
        calls.append((request.source_id, request.params.temperature, request.sample))
        v = request.variables
        number = int(v["subject"][1:])
        if request.params.temperature < 0.3 + 0.3 * (number % 3):  # r0 at once, r1 in 2, r2 in 3
            return v["text"]
        return f"{v['object']} holds {v['subject']}."

    schedule = [{"temperature": 0.4}, {"temperature": 0.7}, {"temperature": 1.0}]
    study = Study(ScriptedTeacher(reply), [Rounds(Reverse(), rounds=3, schedule=schedule)])
    rows = list(study.iter(facts(6)))
    report = study.last_report
    assert report is not None
    assert [(r.asked, r.accepted) for r in report.rounds["reverse"]] == [(6, 2), (4, 2), (2, 2)]
    assert sorted(calls) == sorted(
        [(f"r{i}", 0.4, 0) for i in range(6)]
        + [(f"r{i}", 0.7, 1) for i in range(6) if i % 3]
        + [(f"r{i}", 1.0, 2) for i in range(6) if i % 3 == 2]
    )
    assert [row.source_id for row in rows] == [f"r{i}" for i in range(6)]  # source order
    assert sum(report.strategies["reverse"].rejected.values()) == 4 + 2  # the copies, all kept
    assert "round 2 4 asked -> 2 accepted" in str(report)
    # a re-run with the call cache repeats no call: each round's requests have their own key
    assert len({(c[0], c[2]) for c in calls}) == len(calls)


def test_rounds_reuse_cached_calls_on_a_rerun(tmp_path: Path) -> None:
    calls: list[str] = []

    def reply(request: mstudy.Request) -> str:
        calls.append(request.key)
        v = request.variables
        return (
            v["text"] if request.params.temperature < 1 else f"{v['object']} holds {v['subject']}."
        )

    def study() -> Study:
        rounds = Rounds(Reverse(), rounds=2, schedule=[{"temperature": 0.5}, {"temperature": 1.0}])
        return Study(ScriptedTeacher(reply), [rounds], cache=tmp_path / "calls.sqlite")

    first = [e.to_row() for e in study().iter(facts(4))]
    assert len(calls) == 8
    second = [e.to_row() for e in study().iter(facts(4))]
    assert len(calls) == 8 and second == first


def test_rounds_check_their_settings() -> None:
    with pytest.raises(mstudy.ConfigError) as info:
        Rounds(Reverse(), rounds=0)
    assert info.value.parameter == "rounds"
    with pytest.raises(mstudy.ConfigError) as info:
        Rounds(Reverse(), rounds=2, schedule=[{"temprature": 1.0}])
    assert info.value.parameter == "schedule"
    with pytest.raises(mstudy.ConfigError):
        Rounds(Reverse(), rounds=1, schedule=[{}, {}])


# -- kill and resume mid-chain -----------------------------------------------------------------

N = 300


def write_data(path: Path) -> None:
    with open(path, "w") as handle:
        for i in range(N):
            row = {
                "id": f"r{i}",
                "text": f"Thing {i} rests in Place {i % 40}.",
                "subject": f"Thing {i}",
                "object": f"Place {i % 40}",
            }
            handle.write(json.dumps(row) + "\n")


def outputs(out: Path) -> dict[str, bytes]:
    return {n: (out / n).read_bytes() for n in ("reversed.jsonl", "final.jsonl", "rejects.jsonl")}


def lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def clean_chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes], int]:
    tmp = tmp_path_factory.mktemp("clean-chain")
    data = tmp / "data.jsonl"
    write_data(data)
    log = tmp / "calls.log"
    cmd = [sys.executable, str(HARNESS), str(data), str(tmp / "out"), "--calls-log", str(log)]
    subprocess.run(cmd, check=True, timeout=300)
    expected = outputs(tmp / "out")
    stages = {json.loads(line)["chain_stage"] for line in expected["rejects.jsonl"].splitlines()}
    assert stages == {"reverse", "paraphrase"}
    calls = log.read_text().split()
    assert len(calls) == len(set(calls)) == N + N // 2 + N  # round 2 for odd subjects
    return data, expected, len(calls)


@pytest.mark.parametrize("kill_at", [[100], [420], [300, 480], [80, 330, 600]])
def test_a_chain_killed_mid_stage_resumes_byte_identical_without_repeating_calls(
    tmp_path: Path, clean_chain: tuple[Path, dict[str, bytes], int], kill_at: list[int]
) -> None:
    data, expected, total = clean_chain
    out, journal, log = tmp_path / "out", tmp_path / "journal", tmp_path / "calls.log"
    cmd = [
        sys.executable,
        str(HARNESS),
        str(data),
        str(out),
        "--journal",
        str(journal),
        "--calls-log",
        str(log),
        "--delay",
        "0.002",
    ]
    for calls in kill_at:  # kill when the teacher has made this many calls (stage 2 from 450)
        proc = subprocess.Popen(cmd)
        deadline = time.monotonic() + 120
        while lines(log) < calls and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert journal.exists()
    subprocess.run(cmd, check=True, timeout=300)
    assert outputs(out) == expected
    assert not journal.exists()
    made = log.read_text().split()
    assert len(set(made)) == total
    # each kill may lose at most the one call in flight before it was stored
    assert len(made) - total <= len(kill_at)


def test_facts_then_reverse_then_paraphrase_as_one_chain(tmp_path: Path) -> None:
    """The issue's chain: free text -> atomic facts -> reversed statements -> paraphrases,
    each row tracing back to the document it came from."""

    def teacher(request: mstudy.Request) -> str:
        if request.strategy == "facts":
            return json.dumps(
                {
                    "facts": [
                        {
                            "subject": "Ada Quill",
                            "relation": "founded",
                            "object": "Quillworks",
                            "statement": "Ada Quill founded Quillworks.",
                        },
                        {
                            "subject": "Quillworks",
                            "relation": "is based in",
                            "object": "Tórshavn",
                            "statement": "Quillworks is based in Tórshavn.",
                        },
                    ]
                }
            )
        if request.strategy == "reverse":
            v = request.variables
            return f"{v['object']} is where the story of {v['subject']} begins."
        return "In other words: " + request.messages[-1].content.split("Text: ")[-1]

    scripted = ScriptedTeacher(teacher)
    chain = (
        Study(scripted, ["facts"])
        >> Study(scripted, ["reverse"])
        >> Study(scripted, ["paraphrase"])
    )
    out = tmp_path / "final.jsonl"
    text = "Ada Quill founded Quillworks, which is based in Tórshavn."
    report = Chain(chain.stages, sinks=[out]).run([{"id": "doc-1", "text": text}])
    rows = read(out)
    assert len(rows) == 2 and report.accepted == 2
    for row in rows:
        prov = row["provenance"]
        assert prov["generation"] == 3 and prov["parents"][0] == "doc-1"
        assert len(prov["parents"]) == 3
    assert {row["input"].split(" is where")[0] for row in rows} == {"Quillworks", "Tórshavn"}
