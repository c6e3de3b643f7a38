"""Shared by the ``mstudy view`` tests: a real study's output, a probe folder written by the
probe's own writer, and the real ``mstudy view`` command started as a process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mstudy.cli import main

FACTS = Path(__file__).parent.parent / "examples" / "data" / "facts.jsonl"

STUDY = """
[source]
path = "facts.jsonl"

[teacher]
name = "scripted"
reply.reverse = "{% if sample == 0 %}{{ object }} is linked to {{ subject }}.{% else %}\
I cannot help with that request.{% endif %}"
reply.paraphrase = "Put another way: {{ text }}"

[[strategies]]
name = "reverse"
n = 2

[[strategies]]
name = "paraphrase"

[[filters]]
name = "length"
min_chars = 45

[[sinks]]
name = "jsonl"
path = "out/enriched.jsonl"

[[sinks]]
name = "parquet"
path = "out/enriched.parquet"

[rejects]
name = "jsonl"
path = "out/rejects.jsonl"
"""


def make_study(folder: Path) -> Path:
    """Run a real study (scripted teacher) into ``folder/out`` with its report.json; return
    the config's path. Some replies are rejected by the parser, some by the length filter."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "facts.jsonl").write_bytes(FACTS.read_bytes())
    config = folder / "study.toml"
    config.write_text(STUDY, encoding="utf-8")
    code = main(["run", str(config), "-q", "--json-report", str(folder / "out" / "report.json")])
    assert code == 0
    return config


def folder_hash(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class View:
    """A running ``mstudy view`` process and its URL."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process, self.url = process, url

    def get(self, path: str) -> tuple[int, str]:
        """Status and body of a page (error pages too)."""
        try:
            with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=60) as reply:
                return reply.status, reply.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", errors="replace")

    def json(self, path: str) -> dict[str, object]:
        status, body = self.get(path)
        assert status == 200, body
        value: dict[str, object] = json.loads(body)
        return value


@contextmanager
def view(*args: str, timeout: float = 120) -> Iterator[View]:
    """Start ``mstudy view ARGS`` (port 0), wait for the URL it prints, stop it at the end."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mstudy", "view", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline, seen = time.monotonic() + timeout, ""
        url = None
        while url is None:
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(f"mstudy view did not start: {seen}")
            if selector.select(timeout=1):
                line = process.stdout.readline()
                seen += line
                match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
                url = match.group(1) if match else None
        yield View(process, url)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def make_probe(folder: Path) -> Path:
    """A probe folder written by the probe's own writer from a result with known figures
    (one reversal of each verdict: true, false and not decided)."""
    from mstudy.probes.outputs import write_outputs
    from mstudy.probes.result import ConditionResult, ProbeResult

    conditions = [
        ConditionResult("forward", "forward only", 0, 60, [0.9, 0.95], [0.0, 0.05]),
        ConditionResult("teacher_reversals", "+ teacher reversals", 18, 78, [0.9, 0.9], [0.6, 0.7]),
        ConditionResult("rule_reversals", "+ rule reversals (ceiling)", 20, 80, [1.0], [0.85]),
    ]
    reversal = {"relation": "father", "round": 0, "pattern": "p", "selected": True}
    result = ProbeResult(
        teacher="scripted",
        world={"facts": 20, "scored": 10, "format": 10, "relations": 2, "entities": 40},
        settings={"seeds": 2},
        conditions=conditions,
        chance={"forward": 0.05, "reverse": 0.05},
        teacher_stats={
            "yield": 0.9,
            "precision": 0.5,
            "facts_with_reversal": 18,
            "facts": 20,
            "true": 9,
            "requests": 40,
            "rounds": 2,
        },
        paraphrase_stats={"used": 18, "wanted": 18, "from_rules": 0},
        leak_check={"questions": 20, "training_texts": 100, "dropped": 0},
        times={"world": {"wall": 0.1, "cpu": 0.1}},
        environment={},
        reversals=[
            {
                **reversal,
                "fact": "f1",
                "statement": "Ann is the mother of Bo.",
                "reversal": "Bo is the child of Ann.",
                "true": True,
            },
            {
                **reversal,
                "fact": "f2",
                "statement": "Cy is the father of Di.",
                "reversal": "Di is the father of Cy.",
                "true": False,
            },
            {
                **reversal,
                "fact": "f3",
                "statement": "Ed is the uncle of Flo.",
                "reversal": "Flo is related to Ed.",
                "true": None,
            },
        ],
    )
    write_outputs(result, folder)
    return folder
