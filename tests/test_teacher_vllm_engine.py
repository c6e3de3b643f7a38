"""The ``vllm`` teacher: vLLM's offline engine (CPU build) in process, on SmolLM2-135M-Instruct.

The engine runs in the separate environment that ``.ci/vllm-setup`` builds
(``$MSTUDY_VLLM_VENV``, default ``<repo>/.venv-vllm``): each check runs
``tests/harness/vllm_teacher_driver.py`` with that environment's python and this checkout's
mstudy on ``PYTHONPATH`` (plus a ``.dist-info`` folder with mstudy's entry points, so that
names resolve there as in an installed mstudy). Skipped without that environment unless
``MSTUDY_REQUIRE_VLLM=1``. One engine start for the whole module (about a minute on 2 cores),
plus two start-ups that are cut short.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mstudy.errors import TeacherError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
DRIVER = REPO / "tests" / "harness" / "vllm_teacher_driver.py"


def vllm_venv() -> Path:
    return Path(os.environ.get("MSTUDY_VLLM_VENV") or REPO / ".venv-vllm")


def vllm_missing() -> str | None:
    """Why the vLLM tier cannot run here, or None."""
    venv = vllm_venv()
    if not (venv / "bin" / "python").exists():
        return f"no vLLM environment at {venv}; run .ci/vllm-setup"
    if not (venv / "models" / "smollm2" / ".mstudy-converted").exists():
        return f"no converted SmolLM2 in {venv}/models/smollm2; run .ci/vllm-setup"
    return None


def require_vllm() -> None:
    reason = vllm_missing()
    if reason is not None:
        if os.environ.get("MSTUDY_REQUIRE_VLLM") == "1":
            pytest.fail(f"MSTUDY_REQUIRE_VLLM=1 but {reason}")
        pytest.skip(reason)


def entry_points_dist(folder: Path) -> Path:
    """A ``.dist-info`` for mstudy with this checkout's entry points, in ``folder``."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    info = folder / "mstudy-0.0.0+checkout.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mstudy\nVersion: 0.0.0\n")
    sections = []
    for group, entries in project["entry-points"].items():
        sections.append(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    (info / "entry_points.txt").write_text("\n".join(sections))
    return folder


def session_processes(sid: int) -> list[str]:
    """``pid name`` of every process whose session id is ``sid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # fields[3]: session, [0]: state
            found.append(f"{entry.name} {name}")
    return found


def wait_gone(sid: int, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def kill_session(sid: int) -> None:
    for line in session_processes(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


class Driver:
    """The driver script as a process in a session of its own."""

    def __init__(self, mode: str, tmp: Path) -> None:
        site = entry_points_dist(tmp / "site")
        self.out = tmp / "result.json"
        self.log = tmp / "driver.log"
        venv = vllm_venv()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(site)]),
            "HF_HUB_OFFLINE": "1",
            "VLLM_TARGET_DEVICE": "cpu",
        }
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)
        command = [
            str(venv / "bin" / "python"),
            str(DRIVER),
            mode,
            str(venv / "models" / "smollm2"),
            str(self.out),
            str(tmp),
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(line for line in lines if "Attempted to load weight" not in line)[-4000:]

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(self.process.pid)
            pytest.fail(f"the driver ran past {timeout:.0f} s:\n{self.tail()}")
        assert code == 0, f"the driver exited with {code}:\n{self.tail()}"
        return dict(json.loads(self.out.read_text()))

    def stop(self) -> None:
        kill_session(self.process.pid)
        self.process.wait()


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_vllm()
    driver = Driver("run", tmp_path_factory.mktemp("vllm-run"))
    try:
        result = driver.result(timeout=float(os.environ.get("MSTUDY_VLLM_RUN_TIMEOUT", "900")))
        result["left"] = wait_gone(driver.process.pid, 30)
        sys.stderr.write(f"\nvllm teacher: engine started in {result['startup_s']:.0f} s\n")
        yield result
    finally:
        driver.stop()


def test_without_vllm_one_line_error_names_the_install_command() -> None:
    """Runs in mstudy's own environment, which has no vLLM."""
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    from mstudy.teachers.vllm import INSTALL_COMMAND, VLLMTeacher

    with pytest.raises(TeacherError) as caught:
        VLLMTeacher("HuggingFaceTB/SmolLM2-135M-Instruct")
    message = str(caught.value)
    assert "\n" not in message
    assert INSTALL_COMMAND in message
    assert INSTALL_COMMAND == "pip install 'mstudy[vllm]'"


@pytest.mark.slow
def test_completions_prefill_stops_lengths_and_token_counts(engine_run: dict[str, Any]) -> None:
    assert engine_run["keys_match"]
    done = engine_run["completions"]
    fingerprint = engine_run["fingerprint"]
    for name in ("plain", "prefilled", "stopped", "capped", "schema"):
        completion = done[name]
        assert completion["finish_reason"] in ("stop", "length"), (name, completion)
        assert completion["text"].strip(), name
        assert completion["teacher"] == fingerprint
        assert completion["completion_tokens"] > 0
        # prompt tokens as counted without the engine are those the engine saw
        assert completion["prompt_tokens"] == completion["counted"] > 0, name
    assert "paris" in done["plain"]["text"].lower()
    assert done["prefilled"]["text"].startswith("Bob's mother is")
    assert done["prefilled"]["prompt_tokens"] > done["plain"]["prompt_tokens"] - 10
    stopped = done["stopped"]
    assert "7" not in stopped["text"] and "6" in stopped["text"]
    assert stopped["finish_reason"] == "stop"
    assert done["capped"]["finish_reason"] == "length"
    assert done["capped"]["completion_tokens"] == 8


@pytest.mark.slow
def test_a_prompt_longer_than_the_context_is_an_error_completion(
    engine_run: dict[str, Any],
) -> None:
    too_long = engine_run["completions"]["too_long"]
    assert too_long["finish_reason"] == "error"
    assert too_long["text"] == ""
    assert "1024" in too_long["error"]  # the engine's reason names the context length


@pytest.mark.slow
def test_schema_request_returns_json_of_the_schema(engine_run: dict[str, Any]) -> None:
    reply = json.loads(engine_run["completions"]["schema"]["text"])
    assert set(reply) == {"name", "age"}
    assert isinstance(reply["name"], str) and isinstance(reply["age"], int)


@pytest.mark.slow
def test_seeded_samples_do_not_depend_on_the_batch(engine_run: dict[str, Any]) -> None:
    mixed = engine_run["seeded_mixed"]
    assert engine_run["seeded_alone"] == mixed[0]
    assert len(set(mixed)) > 1  # each sample has its own seed


@pytest.mark.slow
def test_many_seeded_requests_at_once_all_complete(engine_run: dict[str, Any]) -> None:
    """More prompt tokens than one engine step takes: on vLLM 0.32's CPU build, a seeded
    prompt split over two steps killed the engine, unless the teacher turns chunked prefill
    off there."""
    burst = engine_run["burst"]
    assert burst["prompt_tokens"] > 4096
    assert burst["ok"] == burst["count"] == 120


@pytest.mark.slow
def test_completions_stream_as_they_finish_and_requests_are_pulled_lazily(
    engine_run: dict[str, Any],
) -> None:
    order = engine_run["stream_order"]
    assert len(order) == 10
    assert order[0] <= 2  # the short request first, while the long ones still run
    # max_in_flight=4: the first completion came while at most 4 requests had been pulled
    assert engine_run["pulled_at_first"] <= 4


@pytest.mark.slow
def test_a_study_runs_on_the_teacher_and_names_resolve(engine_run: dict[str, Any]) -> None:
    study = engine_run["study"]
    assert study["status"] == "done"
    assert study["requests"] == study["completions"] > 0
    assert study["completion_tokens"] > 0
    assert study["rows"] > 0
    assert study["teachers"] == [engine_run["fingerprint"]]
    assert engine_run["by_name"] == {"type": "VLLMTeacher", "same": True}


@pytest.mark.slow
def test_close_stops_the_engine_and_nothing_outlives_the_run(engine_run: dict[str, Any]) -> None:
    assert any("VLLM" in name for name in engine_run["children_open"])
    assert engine_run["children_closed"] == []
    assert engine_run["left"] == []


@pytest.mark.slow
def test_startup_timeout_raises_startup_error_and_leaves_no_process(tmp_path: Path) -> None:
    require_vllm()
    driver = Driver("timeout", tmp_path)
    try:
        result = driver.result(timeout=180)
        left = wait_gone(driver.process.pid, 30)
    finally:
        driver.stop()
    error = result["error"]
    assert error["type"] == "StartupError"
    assert error["teacher"] == "vllm" and error["timeout"] == 3
    assert error["elapsed"] >= 3
    assert result["children"] == []
    assert left == []


@pytest.mark.slow
def test_engine_processes_end_when_the_parent_is_killed_during_startup(tmp_path: Path) -> None:
    """The defect seen from outside: a parent killed by a time-out left its engine behind."""
    require_vllm()
    driver = Driver("load", tmp_path)
    sid = driver.process.pid
    try:
        deadline = time.monotonic() + 240
        while not any("VLLM::EngineCor" in p for p in session_processes(sid)):
            assert driver.process.poll() is None, driver.tail()
            assert time.monotonic() < deadline, "the engine process never appeared"
            time.sleep(0.5)
        time.sleep(2.0)
        os.kill(sid, signal.SIGKILL)  # the parent only, as a time-out kills it
        driver.process.wait()
        left = wait_gone(sid, 45)
    finally:
        driver.stop()
    assert left == []
