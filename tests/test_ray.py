"""The Ray teacher pool on a real local Ray cluster: same rows as one process, exactly once
when an actor or the driver is killed."""

from __future__ import annotations

import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import read_jsonl
from harness.ray_teachers import sleepy

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


def study(teacher: Any, out: Path, **kwargs: Any) -> mstudy.Study:
    return mstudy.Study(
        teacher=teacher,
        strategies=[mstudy.Paraphrase(n=2), mstudy.Explain()],
        filters=["length", "dedup", "near_dedup"],
        sinks=[out / "rows.jsonl"],
        rejects=out / "rejects.jsonl",
        progress=False,
        **kwargs,
    )


def test_a_ray_pool_gives_the_rows_of_one_process(cluster: None, tmp_path: Path) -> None:
    source = records(90)
    study(sleepy(0.0), tmp_path / "one").run(source)
    pool = RayTeacher(functools.partial(sleepy, 0.0), replicas=3, batch_size=4, num_cpus=0.5)
    try:
        report = study(pool, tmp_path / "ray").run(source)
        assert pool.stats["batches"] > 3
    finally:
        pool.close()
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(tmp_path / "ray" / name) == read_jsonl(tmp_path / "one" / name)
    assert report.records == 90 and report.status == "done"
    assert sum(s.accepted for s in report.strategies.values()) > 0


def test_an_actor_killed_mid_run_costs_nothing_but_its_batch(cluster: None, tmp_path: Path) -> None:
    source = records(60)
    study(sleepy(0.0), tmp_path / "one").run(source)
    log = tmp_path / "calls.log"
    pool = RayTeacher(
        functools.partial(sleepy, 0.02, str(log)), replicas=2, batch_size=4, num_cpus=0.5
    )
    victim = pool.actor_pids()[0]

    def kill_when_busy() -> None:
        while not log.exists() or len(log.read_text().splitlines()) < 30:
            time.sleep(0.01)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    try:
        study(pool, tmp_path / "ray").run(source)
        killer.join(timeout=5)
        assert pool.stats["actor_deaths"] >= 1 and pool.stats["resubmitted"] >= 1
        assert victim not in pool.actor_pids()  # restarted by Ray
    finally:
        pool.close()
    for name in ("rows.jsonl", "rejects.jsonl"):
        assert read_jsonl(tmp_path / "ray" / name) == read_jsonl(tmp_path / "one" / name)


def test_the_pool_refuses_a_built_teacher_and_bad_sizes() -> None:
    with pytest.raises(ConfigError) as built:
        RayTeacher(sleepy(0.0))  # type: ignore[arg-type]
    assert built.value.parameter == "teacher"
    with pytest.raises(ConfigError) as size:
        RayTeacher("scripted", replicas=0)
    assert size.value.parameter == "replicas"


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


@pytest.fixture(scope="module")
def head_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A separate Ray cluster (``ray start --head`` on 127.0.0.1) that drivers join."""
    port = 6390 + os.getpid() % 500
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
    ray_cli = str(Path(sys.executable).parent / "ray")
    start = [
        ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
        "--num-cpus=4", "--include-dashboard=false", f"--temp-dir={temp}",
        "--disable-usage-stats",
    ]  # fmt: skip
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)


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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
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
