"""The Ray teacher pool on a real local Ray cluster: same rows as one process, exactly once
when an actor or the driver is killed, with the strategies' parsing and the per-record
filters run in the pool's actors (logged pids tell where)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl
from harness.ray_teachers import (
    OddWords,
    PickyParaphrase,
    ShortAfterDedup,
    parsed_by,
    sleepy,
    traced,
)

import mstudy
from mstudy.errors import ConfigError, TeacherError
from mstudy.teachers.ray_pool import RayTeacher

ray = pytest.importorskip("ray")

TESTS = Path(__file__).parent
REPO = TESTS.parent
WORKER_PATH = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}}


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A real local Ray instance with worker processes (4 logical CPUs on 2 cores)."""
    if ray.is_initialized():  # another test module's example started one
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, runtime_env=WORKER_PATH)
    try:
        yield
    finally:
        ray.shutdown()


def records(count: int) -> list[dict[str, Any]]:
    """Facts with repeats (so dedup has work) and multi-word, non-ASCII names."""
    names = ["Ada Quill", "Jürgen Øberg", "Li Wei", "Amara Okafor-Nwosu", "Ada Quill"]
    return [
        {"id": f"r{i:03d}", "text": f"{names[i % 5]} founded company number {i % 17}."}
        for i in range(count)
    ]


def study(teacher: Any, out: Path, log: Path | None = None, **kwargs: Any) -> mstudy.Study:
    """A strategy whose parse rejects some replies, a per-record filter that rejects some
    rows and rewrites the others, dedup and near_dedup, and a per-record filter after them."""
    trace = None if log is None else str(log)
    return mstudy.Study(
        teacher=teacher,
        strategies=[PickyParaphrase(n=2, log=trace), mstudy.Explain()],
        filters=[OddWords(log=trace), "length", "dedup", "near_dedup", ShortAfterDedup(log=trace)],
        sinks=[out / "rows.jsonl"],
        rejects=out / "rejects.jsonl",
        progress=False,
        **kwargs,
    )


def _parsed_in_actors(
    source: list[dict[str, Any]], log: Path, actors: set[int], what: str = "parse"
) -> None:
    """Replies were parsed (``what`` was done) in more than one actor, and in the driver
    only for a record whose text another record repeats (an identical request in flight: one
    call answers both, the actor parses and checks it for the record that sent it, the driver
    for the other)."""
    in_actors = traced(str(log), what) - {os.getpid()}
    assert in_actors <= actors and len(in_actors) > 1
    texts = [r["text"] for r in source]
    repeated = {r["id"] for r in source if texts.count(r["text"]) > 1}
    assert parsed_by(str(log), os.getpid(), what) <= repeated


def _report(report: mstudy.Report) -> dict[str, Any]:
    counts = report.to_dict()
    del counts["elapsed_s"]
    return counts


def test_a_ray_pool_gives_the_rows_and_report_of_one_process_parsing_in_its_actors(
    cluster: None, tmp_path: Path
) -> None:
    source = records(90)
    one_log, ray_log = tmp_path / "one.log", tmp_path / "ray.log"
    one = study(sleepy(0.0), tmp_path / "one", one_log).run(source)
    pool = RayTeacher(functools.partial(sleepy, 0.0), replicas=3, batch_size=4, num_cpus=0.5)
    try:
        report = study(pool, tmp_path / "ray", ray_log).run(source)
        assert pool.stats["batches"] > 3
        actors = set(pool.actor_pids())
    finally:
        pool.close()
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(tmp_path / "ray" / name) == read_jsonl(tmp_path / "one" / name)
    assert _report(report) == _report(one)
    assert report.records == 90 and report.status == "done"
    rejected = {row["reason"] for row in read_jsonl(tmp_path / "ray" / "rejects.jsonl")}
    assert {"picky", "odd word count", "duplicate", "short"} <= rejected
    assert any("words" in row for row in read_jsonl(tmp_path / "ray" / "rows.jsonl"))
    # parsing and the filters before dedup ran in the actors; dedup and after, in the driver
    driver = os.getpid()
    assert traced(str(one_log), "parse") == {driver}
    _parsed_in_actors(source, ray_log, actors)
    _parsed_in_actors(source, ray_log, actors, "check:odd_words")
    assert traced(str(ray_log), "check:short_after_dedup") == {driver}


def test_rounds_parse_in_the_actors_and_give_the_rows_of_one_process(
    cluster: None, tmp_path: Path
) -> None:
    """A Rounds strategy asks again for the records its parse or the filters rejected."""

    def rounds(teacher: Any, out: Path, log: Path) -> mstudy.Study:
        strategy = mstudy.Rounds(PickyParaphrase(log=str(log)), rounds=3)
        return mstudy.Study(
            teacher, [strategy], [OddWords(log=str(log)), "dedup"], [out / "rows.jsonl"],
            out / "rejects.jsonl", progress=False,
        )  # fmt: skip

    source = records(40)
    one = rounds(sleepy(0.0), tmp_path / "one", tmp_path / "one.log").run(source)
    pool = RayTeacher(functools.partial(sleepy, 0.0), replicas=2, batch_size=4, num_cpus=0.5)
    try:
        report = rounds(pool, tmp_path / "ray", tmp_path / "ray.log").run(source)
        actors = set(pool.actor_pids())
    finally:
        pool.close()
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(tmp_path / "ray" / name) == read_jsonl(tmp_path / "one" / name)
    assert _report(report) == _report(one)
    assert report.rounds["picky"][1].asked > 0  # some records were asked again
    _parsed_in_actors(source, tmp_path / "ray.log", actors)


def test_strategies_that_do_not_pickle_are_parsed_in_the_driver(
    cluster: None, tmp_path: Path
) -> None:
    source = records(20)
    study(sleepy(0.0), tmp_path / "one").run(source)
    log = tmp_path / "ray.log"
    pool = RayTeacher(functools.partial(sleepy, 0.0), replicas=2, batch_size=4, num_cpus=0.5)
    unpicklable = study(pool, tmp_path / "ray", log)
    unpicklable.strategies[0].lock = threading.Lock()  # type: ignore[attr-defined]
    try:
        unpicklable.run(source)
    finally:
        pool.close()
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(tmp_path / "ray" / name) == read_jsonl(tmp_path / "one" / name)
    assert traced(str(log), "parse") == {os.getpid()}


def test_parse_in_actors_off_leaves_parsing_to_the_driver(cluster: None, tmp_path: Path) -> None:
    source = records(20)
    study(sleepy(0.0), tmp_path / "one").run(source)
    log = tmp_path / "ray.log"
    pool = RayTeacher(
        functools.partial(sleepy, 0.0), replicas=2, num_cpus=0.5, parse_in_actors=False
    )
    try:
        study(pool, tmp_path / "ray", log).run(source)
    finally:
        pool.close()
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(tmp_path / "ray" / name) == read_jsonl(tmp_path / "one" / name)
    assert traced(str(log), "parse") == traced(str(log), "check:odd_words") == {os.getpid()}


def test_an_actor_killed_mid_run_costs_nothing_but_its_batch(cluster: None, tmp_path: Path) -> None:
    source = records(60)
    one = study(sleepy(0.0), tmp_path / "one").run(source)
    log = tmp_path / "calls.log"
    pool = RayTeacher(
        functools.partial(sleepy, 0.02, str(log)), replicas=2, batch_size=4, num_cpus=0.5
    )
    victim = pool.actor_pids()[0]
    trace = tmp_path / "trace.log"

    def kill_when_busy() -> None:
        while not log.exists() or len(log.read_text().splitlines()) < 30:
            time.sleep(0.01)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    try:
        report = study(pool, tmp_path / "ray", trace).run(source)
        killer.join(timeout=5)
        assert pool.stats["actor_deaths"] >= 1 and pool.stats["resubmitted"] >= 1
        restarted = pool.actor_pids()
        assert victim not in restarted  # restarted by Ray
    finally:
        pool.close()
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(tmp_path / "ray" / name) == read_jsonl(tmp_path / "one" / name)
    assert _report(report) == _report(one)
    # the restarted actor loaded the strategies again and parsed in its new process
    _parsed_in_actors(source, trace, {victim, *restarted})
    assert set(restarted) & traced(str(trace), "parse")


def test_the_pool_refuses_a_built_teacher_and_bad_sizes() -> None:
    with pytest.raises(ConfigError) as built:
        RayTeacher(sleepy(0.0))  # type: ignore[arg-type]
    assert built.value.parameter == "teacher"
    with pytest.raises(ConfigError) as size:
        RayTeacher("scripted", replicas=0)
    assert size.value.parameter == "replicas"
    with pytest.raises(ConfigError) as parse:
        RayTeacher("scripted", parse_in_actors="no")  # type: ignore[arg-type]
    assert parse.value.parameter == "parse_in_actors"


def test_actors_that_cannot_build_their_teacher_fail_the_run_clearly(cluster: None) -> None:
    pool = RayTeacher({"name": "no-such-teacher"}, num_cpus=0.5)
    with pytest.raises(TeacherError, match="could not build their teacher"):
        _ = pool.fingerprint


def test_without_ray_the_error_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(TeacherError, match=r"pip install 'mstudy\[ray\]'"):
        _ = RayTeacher("scripted").fingerprint


CONFIG = """
[source]
path = "facts.jsonl"
id_field = "id"

[teacher]
name = "scripted"
reply = "{{ text | default('') }} (from the pool)"

[[strategies]]
name = "paraphrase"
n = 2

[[filters]]
name = "dedup"

[[sinks]]
name = "jsonl"
path = "out/rows.jsonl"

[rejects]
name = "jsonl"
path = "out/rejects.jsonl"

[ray]
replicas = 2
batch_size = 2
num_cpus = 0.5
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _processes() -> dict[int, tuple[int, int, bytes]]:
    """Every visible process: pid -> (parent pid, process group, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(entry.name)] = (int(stat[1]), int(stat[2]), (entry / "cmdline").read_bytes())
        except (OSError, IndexError, ValueError):
            continue
    return found


def _cluster(folder: Path) -> set[int]:
    """The processes of the Ray cluster whose temp dir is ``folder``: those whose command
    line names it (GCS, raylet, monitors) and their descendants (agents and workers, whose
    command lines Ray rewrites)."""
    table = _processes()
    ours = {pid for pid, (_, _, cmd) in table.items() if str(folder).encode() in cmd}
    while True:
        children = {pid for pid, (parent, _, _) in table.items() if parent in ours}
        if children <= ours:
            return ours - {os.getpid()}
        ours |= children


def _stop(folder: Path) -> None:
    """Stop the cluster of ``folder`` and nothing else (``ray stop`` would stop every Ray
    cluster of this user on the machine)."""
    ours = _cluster(folder)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours & _alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ours & _alive():
            time.sleep(0.2)


def _alive() -> set[int]:
    """The pids of processes that are not zombies."""
    alive = set()
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            ):
                alive.add(int(entry.name))
        except (OSError, IndexError):
            continue
    return alive


def _env(*paths: Path) -> dict[str, str]:
    """The environment of a head node and of the drivers that join it: the tests on the
    path, and Ray's token authentication off (a cluster on 127.0.0.1 for one test module;
    with it on, drivers here fail to join a ``ray start`` head: InvalidAuthToken)."""
    path = os.pathsep.join([*map(str, paths), str(TESTS), str(REPO)])
    return {**os.environ, "PYTHONPATH": path, "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def head_node() -> Iterator[str]:
    """A separate Ray cluster (``ray start --head`` on 127.0.0.1, a free port) that drivers
    join; stopped by its own processes at the end."""
    port = _free_port()
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths
    env = _env()
    ray_cli = str(Path(sys.executable).parent / "ray")
    start = [
        ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
        "--num-cpus=4", "--include-dashboard=false", f"--temp-dir={temp}",
        "--disable-usage-stats",
    ]  # fmt: skip
    try:
        subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _facts(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records(count))
    (folder / "facts.jsonl").write_text(lines, encoding="utf-8")


def test_mstudy_run_ray_joins_a_cluster_and_writes_the_rows_of_one_process(
    head_node: str, tmp_path: Path
) -> None:
    for name in ("one", "ray"):
        _facts(tmp_path / name, 30)
        (tmp_path / name / "study.toml").write_text(CONFIG, encoding="utf-8")
    env = _env()
    run = [sys.executable, "-m", "mstudy", "run", "study.toml", "-q"]
    subprocess.run(run, cwd=tmp_path / "one", env=env, check=True, timeout=300)
    done = subprocess.run(
        [*run, "--ray", head_node], cwd=tmp_path / "ray", env=env, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(tmp_path / "ray" / "out" / name) == read_jsonl(
            tmp_path / "one" / "out" / name
        )


PARSING_CONFIG = """
[source]
path = "facts.jsonl"
id_field = "id"

[teacher]
name = "scripted"
reply = "{{{{ text | default('') }}}} (from the pool)"

[[strategies]]
name = "picky"
n = 2
log = "{log}"

[[filters]]
name = "odd_words"
log = "{log}"

[[filters]]
name = "dedup"

[[sinks]]
name = "jsonl"
path = "out/rows.jsonl"

[rejects]
name = "jsonl"
path = "out/rejects.jsonl"

[ray]
replicas = 2
batch_size = 2
num_cpus = 0.5
"""

HARNESS_PLUGINS = """[mstudy.strategies]
picky = harness.ray_teachers:PickyParaphrase

[mstudy.filters]
odd_words = harness.ray_teachers:OddWords
"""


def _harness_plugins(folder: Path) -> Path:
    """A folder whose distribution registers the harness strategy and filter as plugins."""
    info = folder / "mstudy_ray_harness-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: mstudy-ray-harness\nVersion: 0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(HARNESS_PLUGINS, encoding="utf-8")
    return folder


def test_mstudy_run_ray_from_a_toml_parses_in_the_actors(head_node: str, tmp_path: Path) -> None:
    plugins = _harness_plugins(tmp_path / "plugins")
    env = _env(plugins)
    for name in ("one", "ray"):
        _facts(tmp_path / name, 30)
        log = (tmp_path / f"{name}.log").as_posix()
        config = PARSING_CONFIG.format(log=log)
        (tmp_path / name / "study.toml").write_text(config, encoding="utf-8")
    run = [sys.executable, "-m", "mstudy", "run", "study.toml", "-q"]
    subprocess.run(run, cwd=tmp_path / "one", env=env, check=True, timeout=300)
    process = subprocess.Popen(
        [*run, "--ray", head_node], cwd=tmp_path / "ray", env=env, stderr=subprocess.PIPE
    )
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()
    rejects = read_jsonl(tmp_path / "ray" / "out" / "rejects.jsonl")
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(tmp_path / "ray" / "out" / name) == read_jsonl(
            tmp_path / "one" / "out" / name
        )
    assert {"picky", "odd word count"} <= {row["reason"] for row in rejects}
    ray_log = str(tmp_path / "ray.log")
    assert len(traced(ray_log, "parse") - {process.pid}) == 2  # both actors parsed
    assert not parsed_by(ray_log, process.pid)  # no repeated record: the driver parsed none
    assert process.pid not in traced(ray_log, "check:odd_words")


def test_an_unknown_ray_setting_is_refused_naming_it(tmp_path: Path) -> None:
    from mstudy.config import load_config

    (tmp_path / "study.toml").write_text(CONFIG + "replica = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "study.toml")
    assert caught.value.parameter == "replica"


DRIVER = """
import functools, sys
import mstudy
from harness.ray_teachers import sleepy
from mstudy.teachers.ray_pool import RayTeacher

address, folder, log = sys.argv[1], sys.argv[2], sys.argv[3]
pool = RayTeacher(functools.partial(sleepy, 0.05, log), replicas=2, batch_size=2,
                  num_cpus=0.5, address=address)
study = mstudy.Study(teacher=pool, strategies=[mstudy.Paraphrase(n=2)], filters=["dedup"],
                     sinks=[folder + "/rows.jsonl"], rejects=folder + "/rejects.jsonl",
                     cache=folder + "/calls.sqlite", journal=folder + "/journal",
                     checkpoint_every=0, progress=False)
study.run(folder + "/facts.jsonl")
"""


def _driver(address: str, folder: Path, log: Path) -> subprocess.Popen[bytes]:
    env = _env()
    command = [sys.executable, "-c", DRIVER, address, str(folder), str(log)]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE)


def _stored_keys(cache: Path) -> set[str]:
    with sqlite3.connect(cache) as db:
        return {str(row[0]) for row in db.execute("select key from calls")}


@pytest.mark.skipif(sys.platform != "linux", reason="ray start and SIGKILL: linux")
def test_the_driver_killed_and_run_again_repeats_no_stored_call(
    head_node: str, tmp_path: Path
) -> None:
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _facts(reference, 60)
    _facts(killed, 60)
    done = _driver(head_node, reference, tmp_path / "reference-calls.log")
    assert done.wait(timeout=300) == 0, done.stderr.read().decode() if done.stderr else ""

    calls = tmp_path / "calls.log"
    process = _driver(head_node, killed, calls)
    deadline = time.monotonic() + 240
    while not calls.exists() or len(calls.read_text().splitlines()) < 50:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(2.0)  # the killed driver's actors end with its job
    stored = _stored_keys(killed / "calls.sqlite")
    made_before = len(calls.read_text().splitlines())
    assert stored, "the killed run had stored calls"

    again = _driver(head_node, killed, calls)
    assert again.wait(timeout=300) == 0, again.stderr.read().decode() if again.stderr else ""
    second = {line.split()[0] for line in calls.read_text().splitlines()[made_before:]}
    assert second and not stored & second  # it went on, and made no stored call again
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(killed / name) == read_jsonl(reference / name)
