"""Verification of answers and programs, and the sandbox that runs teacher-written code.

Every attack runs three times: with every layer (the default), without the Python audit hook
(the kernel layers, Landlock, namespaces, rlimits, contain it on their own), and with the audit
hook but without Landlock and namespaces (what is left on a system without them). Tests of a
kernel layer skip where this machine lacks it.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import signal
import socket
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mstudy import (
    Completion,
    Example,
    Message,
    Record,
    Rejection,
    Request,
    ScriptedTeacher,
    Study,
    sandbox,
)
from mstudy.config import parse_config
from mstudy.filters.verify import (
    AnswerCheck,
    ProgramCheck,
    answers_agree,
    canonical_answer,
    extract_code,
    run_program,
)
from mstudy.sandbox import GUARDS, SandboxLimits, run_python
from mstudy.strategies.pot import ProgramOfThought

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs POSIX")

FAST = SandboxLimits(timeout=3.0, memory_mb=256)
LAYERS = {
    "all": {},
    "kernel-only": {"audit": False},  # Landlock, namespaces, rlimits, uid: no audit hook
    "audit-only": {"landlock": False, "namespaces": False},  # what is left without Linux
}
layered = pytest.mark.parametrize("layers", list(LAYERS.values()), ids=list(LAYERS))


@pytest.fixture(scope="module")
def guards() -> tuple[str, ...]:
    result = run_python("print('ready')", limits=FAST)
    assert result.ok, result.stderr
    return result.guards


def need(guards: tuple[str, ...], *layers: str) -> None:
    missing = [layer for layer in layers if layer not in guards]
    if missing:
        pytest.skip(f"this machine lacks the isolation layer(s) {missing}")


def sandbox_processes() -> list[str]:
    """Command lines of live sandbox processes (their config names the sandbox folder)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"mstudy-sandbox-" in cmdline:
            found.append(entry)
    return found


def no_sandbox_left(deadline: float = 3.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not sandbox_processes():
            return True
        time.sleep(0.1)
    return False


def example(text: str, strategy: str = "cot", source_id: str = "s1", **fields: Any) -> Example:
    request = Request((Message("user", text),), source_id=source_id, strategy=strategy)
    return Example.from_completion(request, Completion(request.key, text), {"text": text, **fields})


# -- the sandbox: ordinary programs -------------------------------------------------------------


def test_runs_a_program_in_another_process(guards: tuple[str, ...]) -> None:
    result = run_python("import os\nprint(os.getpid())\nprint(6 * 7)", limits=FAST)
    assert result.ok and result.last_line == "42"
    assert int(result.stdout.split()[0]) != os.getpid()
    assert set(result.guards) <= set(GUARDS) and "rlimits" in result.guards


def test_stdin_exit_status_and_errors() -> None:
    assert run_python("print(input()[::-1])", stdin="abc", limits=FAST).stdout == "cba\n"
    exited = run_python("raise SystemExit(3)", limits=FAST)
    assert exited.returncode == 3 and not exited.ok and exited.error() == "exit status 3"
    crashed = run_python("1 / 0", limits=FAST)
    assert crashed.returncode == 1 and "ZeroDivisionError" in crashed.error()


def test_working_folder_is_fresh_and_removed() -> None:
    code = "import os\nprint(os.getcwd())\nprint(os.listdir('.'))\nopen('out.txt', 'w').write('x')"
    result = run_python(code, limits=FAST)
    assert result.ok
    folder, listing = result.stdout.splitlines()
    assert "mstudy-sandbox-" in folder and listing == "['main.py']"
    assert not Path(folder).exists()


def test_the_child_module_runs_by_path() -> None:
    command = sandbox._child_command("python3", switched=False)
    assert command == ["python3", "-I", "-S", str(sandbox._CHILD)]
    assert sandbox._CHILD.name == "_sandbox_child.py" and sandbox._CHILD.is_file()


def test_a_fresh_uid_runs_the_child_even_where_mstudy_is_closed_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, guards: tuple[str, ...]
) -> None:
    need(guards, "uid")  # root callers only: the program runs as a fresh uid
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    child = closed / "_sandbox_child.py"
    shutil.copy(sandbox._CHILD, child)
    monkeypatch.setattr(sandbox, "_CHILD", child)
    assert sandbox._child_command("python3", switched=True)[3] == "-c"
    result = run_python("print(6 * 7)", limits=FAST)
    assert result.ok and result.last_line == "42", result.stderr
    assert "uid" in result.guards and "audit" in result.guards


def test_generated_code_never_runs_in_the_callers_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("generated code reached the caller's interpreter")

    check = ProgramCheck(workers=1, timeout=3)
    item = example("print(sum(range(10)))", strategy="pot", gold="45")
    for name in ("exec", "eval", "compile"):
        monkeypatch.setattr(builtins, name, refuse)
    verdict = check.check(item)
    monkeypatch.undo()
    assert isinstance(verdict, Example) and verdict.fields["answer"] == "45"


# -- the sandbox: attacks -----------------------------------------------------------------------

BOMB = """
import os, time
for _ in range(10_000):
    try:
        if os.fork() == 0:
            os.setsid()
            time.sleep(60)
    except OSError:
        pass
time.sleep(60)
"""


@layered
def test_fork_bomb_is_contained(layers: dict[str, bool], guards: tuple[str, ...]) -> None:
    need(guards, "rlimits")
    start = time.monotonic()
    result = run_python(BOMB, limits=SandboxLimits(timeout=1.0, max_processes=8), **layers)
    assert not result.ok and time.monotonic() - start < 8
    assert no_sandbox_left(), "processes started by the sandboxed program survived it"


@layered
def test_infinite_loop_hits_the_wall_clock_timeout(layers: dict[str, bool]) -> None:
    start = time.monotonic()
    result = run_python("while True:\n    pass", limits=SandboxLimits(timeout=0.5), **layers)
    assert result.limit == "timeout" and result.returncode < 0
    assert time.monotonic() - start < 4


def test_sleeping_program_hits_the_timeout_too() -> None:
    result = run_python("import time\ntime.sleep(30)", limits=SandboxLimits(timeout=0.5))
    assert result.limit == "timeout"


def test_cpu_limit_is_reported() -> None:
    limits = SandboxLimits(timeout=6.0, cpu_seconds=1)
    assert run_python("while True:\n    pass", limits=limits).limit == "cpu"


@layered
def test_file_writes_outside_the_folder_fail(
    layers: dict[str, bool], tmp_path: Path, guards: tuple[str, ...]
) -> None:
    if layers.get("audit") is False:
        need(guards, "landlock-fs")
    marker = uuid.uuid4().hex
    targets = [
        tmp_path / f"escape-{marker}.txt",
        Path("/tmp") / f"mstudy-escape-{marker}.txt",
        Path.cwd() / f"escape-{marker}.txt",
    ]
    code = textwrap.dedent(
        f"""
        import os
        ok = []
        for path in {[str(t) for t in targets]!r} + ["../escape-{marker}.txt"]:
            try:
                with open(path, "w") as handle:
                    handle.write("pwned")
                ok.append(path)
            except OSError as exc:
                pass
        try:
            os.symlink("/tmp", "link")
            open("link/mstudy-escape-{marker}-2.txt", "w").write("pwned")
            ok.append("symlink")
        except OSError:
            pass
        with open("inside.txt", "w") as handle:
            handle.write("fine")
        print(open("inside.txt").read(), ok)
        """
    )
    result = run_python(code, limits=FAST, **layers)
    assert result.ok, result.stderr
    assert result.stdout.strip() == "fine []"
    for target in [*targets, Path("/tmp") / f"mstudy-escape-{marker}-2.txt"]:
        assert not target.exists()


@layered
def test_the_callers_environment_is_out_of_reach(
    layers: dict[str, bool], monkeypatch: pytest.MonkeyPatch, guards: tuple[str, ...]
) -> None:
    if layers.get("audit") is False:
        need(guards, "landlock-fs")
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("MSTUDY_TEST_SECRET", secret)
    code = textwrap.dedent(
        f"""
        import os
        print(dict(os.environ))
        for pid in ["self", str(os.getppid()), "1", "{os.getpid()}"]:
            try:
                print(open(f"/proc/{{pid}}/environ", "rb").read())
            except OSError as exc:
                print("denied", pid)
        try:
            for entry in os.listdir("/proc"):
                try:
                    print(open(f"/proc/{{entry}}/environ", "rb").read())
                except OSError:
                    pass
        except OSError:
            print("no /proc")
        """
    )
    result = run_python(code, limits=FAST, **layers)
    assert secret not in result.stdout and secret not in result.stderr
    assert "MSTUDY_TEST_SECRET" not in result.stdout


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    yield server
    server.close()


@layered
def test_no_network(
    layers: dict[str, bool], listener: socket.socket, guards: tuple[str, ...]
) -> None:
    if layers.get("audit") is False and not {"netns", "landlock-net"} & set(guards):
        pytest.skip("this machine has neither a network namespace nor Landlock's TCP rules")
    port = listener.getsockname()[1]
    code = textwrap.dedent(
        f"""
        import socket
        try:
            s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
            s.sendall(b"leak")
            print("connected")
        except OSError as exc:
            print("refused", type(exc).__name__)
        """
    )
    result = run_python(code, limits=FAST, **layers)
    assert "connected" not in result.stdout
    with pytest.raises(OSError):
        listener.accept()


def test_memory_cap() -> None:
    result = run_python("x = bytearray(2 * 1024 ** 3)", limits=SandboxLimits(memory_mb=128))
    assert result.limit == "memory"
    assert run_program("x = [0] * (10 ** 9)", limits=SandboxLimits(memory_mb=128)).reason == (
        "memory limit"
    )


def test_output_cap() -> None:
    result = run_python("while True:\n    print('x' * 1000)", limits=SandboxLimits(max_output=4096))
    assert result.limit == "output" and result.truncated and len(result.stdout) <= 4096


def test_file_size_cap() -> None:
    code = "open('big', 'wb').write(b'x' * (8 * 1024 * 1024))"
    result = run_python(code, limits=SandboxLimits(max_file_mb=1), audit=False)
    assert result.limit == "file size"


def test_cannot_signal_the_caller() -> None:
    hits: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: hits.append(signum))
    try:
        code = f"import os, signal\nos.kill({os.getpid()}, signal.SIGUSR1)"
        for layers in LAYERS.values():
            run_python(code, limits=FAST, **layers)
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert hits == []


def test_required_isolation_refuses_to_run_without_it() -> None:
    result = run_python("print('ran')", limits=FAST, namespaces=False, require=["netns"])
    assert result.limit == "isolation" and result.stdout == ""
    assert result.missing == ("netns",) and "netns" in result.error()
    with pytest.raises(ValueError, match="unknown guard"):
        run_python("print(1)", require=["seccomp"])
    assert run_program("print(1)", require=["netns"]).reason in (None, "isolation unavailable")


# -- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("got", "gold"),
    [
        ("41", "41"),
        ("1,000", "1000"),
        ("$1000.00", "1000"),
        ("\\boxed{12}", "12"),
        ("x = 0.5", "1/2"),
        ("50%", "0.5"),
        ("41 books", "41"),
        ("The Eiffel Tower.", "eiffel tower"),
        ("**Paris**", "Paris"),
    ],
)
def test_answers_agree(got: str, gold: str) -> None:
    assert answers_agree(got, gold)


@pytest.mark.parametrize(
    ("got", "gold"), [("41", "42"), ("Paris", "Rome"), ("", ""), ("1/3", "0.33")]
)
def test_answers_disagree(got: str, gold: str) -> None:
    assert not answers_agree(got, gold)


@given(st.integers(-(10**12), 10**12))
def test_numbers_agree_across_formats(n: int) -> None:
    for form in (f"{n:,}", f"{n}.0", f"{n:,}.00", f" {n} ", f"x = {n}"):
        assert answers_agree(form, str(n)), form
    if n >= 0:
        assert answers_agree(f"${n:,}", str(n))
    assert not answers_agree(str(n + 1), str(n))


@given(st.text(max_size=40))
def test_canonical_answer_is_idempotent_and_agreement_symmetric(text: str) -> None:
    once = canonical_answer(text)
    assert canonical_answer(once) == once
    assert answers_agree(text, "7") == answers_agree("7", text)


@given(st.text(max_size=40), st.text(max_size=40))
def test_agreement_is_symmetric(a: str, b: str) -> None:
    assert answers_agree(a, b) == answers_agree(b, a)


def test_answer_check_on_cot_rows(tmp_path: Path) -> None:
    check = AnswerCheck(gold={"s1": "41", "s2": "7"})
    right = example("1. 4 x 12 = 48.\n2. 48 - 7 = 41.\nFinal answer: 41", source_id="s1")
    assert isinstance(check.check(right), Example)
    wrong = check.check(example("Final answer: 40", source_id="s1"))
    assert isinstance(wrong, Rejection) and wrong.reason == "wrong answer"
    assert wrong.stage == "filter:answer_check" and "expected '41'" in wrong.detail
    none = check.check(example("I think so.", source_id="s2"))
    assert isinstance(none, Rejection) and none.reason == "no final answer"
    missing = check.check(example("Final answer: 3", source_id="s9"))
    assert isinstance(missing, Rejection) and missing.reason == "no gold answer"
    lenient = AnswerCheck(gold={}, on_missing_gold="keep")
    assert isinstance(lenient.check(example("Final answer: 3", source_id="s9")), Example)
    on_row = AnswerCheck().check(example("Final answer: \\boxed{9}", gold="9"))
    assert isinstance(on_row, Example)
    other = AnswerCheck().check(example("anything", strategy="explain"))
    assert isinstance(other, Example)
    gold_file = tmp_path / "gold.jsonl"
    gold_file.write_text(json.dumps({"id": "s1", "answer": "41"}) + "\n", encoding="utf-8")
    assert isinstance(AnswerCheck(gold_path=str(gold_file)).check(right), Example)


# -- program of thought -------------------------------------------------------------------------


def test_extract_code() -> None:
    assert extract_code("Here:\n```python\nprint(1)\n```\nDone.") == "print(1)"
    assert extract_code("```python\nx = 2\nprint(x)") == "x = 2\nprint(x)"
    assert extract_code("print(3)") == "print(3)"
    assert extract_code("The answer is 3.") is None


def test_program_check_verdicts() -> None:
    check = ProgramCheck(timeout=1, workers=2)
    cases = {
        "right": ("```python\nprint(4 * 12 - 7)\n```", "41", None),
        "wrong": ("print(40)", "41", "wrong answer"),
        "syntax": ("print(41", "41", "syntax error"),
        "crash": ("print(1/0)", "41", "runtime error"),
        "silent": ("x = 41", "41", "no output"),
        "loop": ("while True: pass", "41", "timeout"),
        "empty": ("   ", "41", "no code"),
    }
    items = [example(code, "pot", name, gold=gold) for name, (code, gold, _) in cases.items()]
    verdicts = check.check_many(items)
    for (name, (_, _, reason)), verdict in zip(cases.items(), verdicts, strict=True):
        if reason is None:
            assert isinstance(verdict, Example) and verdict.fields["answer"] == "41", name
        else:
            assert isinstance(verdict, Rejection) and verdict.reason == reason, (name, verdict)
            assert verdict.stage == "filter:pot_check"
    assert isinstance(check.check(example("print(1)", "pot")), Rejection)  # no gold
    assert isinstance(check.check(example("print(1)", "cot")), Example)  # not its strategy


def pot_records() -> list[dict[str, Any]]:
    return [
        {"id": "p1", "question": "What is 4 times 12 minus 7?", "answer": "41"},
        {"id": "p2", "question": "What is 2 to the power 10?", "answer": "1,024"},
        {"id": "p3", "question": "What is 3 plus 3?", "answer": "6"},
    ]


def pot_reply(request: Request) -> str:
    programs = {
        "p1": "print(4 * 12 - 7)\n```",
        "p2": "print(2 ** 10)\n```",
        "p3": "import os\nprint(os.environ.get('HOME', 'none'))\nprint(5)\n```",
    }
    return "```python\n" + programs[request.source_id]


def test_pot_strategy_runs_and_verifies_programs() -> None:
    study = Study(ScriptedTeacher(pot_reply), [ProgramOfThought(timeout=3)])
    items = list(study.stream(pot_records()))
    kept = {i.source_id: i for i in items if isinstance(i, Example)}
    assert set(kept) == {"p1", "p2"}
    assert kept["p1"].fields == {
        "input": "What is 4 times 12 minus 7?",
        "text": "print(4 * 12 - 7)",
        "answer": "41",
        "gold": "41",
    }
    rejected = [i for i in items if isinstance(i, Rejection)]
    assert [(r.source_id, r.reason) for r in rejected] == [("p3", "wrong answer")]


def test_pot_strategy_parse_rejects_without_code() -> None:
    strategy = ProgramOfThought(prefill="")
    record = Record.from_mapping(pot_records()[0])
    request = strategy.requests(record)[0]
    results = strategy.parse(record, request, Completion(request.key, "It is 41."))
    assert isinstance(results[0], Rejection) and results[0].reason == "no code"


def test_pot_and_pot_check_by_name_from_toml(tmp_path: Path) -> None:
    source = tmp_path / "problems.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in pot_records()), encoding="utf-8")
    config = parse_config(
        textwrap.dedent(
            """
            [source]
            path = "problems.jsonl"

            [teacher]
            name = "scripted"
            reply = "```python\\nprint({{ answer | replace(',', '') }})\\n```"

            [[strategies]]
            name = "pot"
            execute = false

            [[filters]]
            name = "pot_check"
            timeout = 3
            workers = 1

            [[filters]]
            name = "answer_check"
            strategies = ["pot"]
            """
        ),
        tmp_path / "study.toml",
    )
    study, path = config.build()
    items = list(study.stream(path))
    assert [i.fields["answer"] for i in items if isinstance(i, Example)] == ["41", "1024", "6"]
