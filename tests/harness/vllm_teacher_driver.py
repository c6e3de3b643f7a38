"""Drives the ``vllm`` teacher for tests/test_teacher_vllm_engine.py, inside the vLLM
environment (its own python, mstudy from PYTHONPATH). Writes one JSON object to argv[3].

    python vllm_teacher_driver.py MODE MODEL OUT [WORKDIR]

MODE ``run``: one engine, every check the tests make; ``timeout``: a start-up that runs past
its limit; ``load``: start the engine and wait (the test kills this process).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from mstudy import GenerationParams, Message, Request, Study, plugins
from mstudy.config import load_config
from mstudy.errors import StartupError
from mstudy.teachers.vllm import VLLMTeacher

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def engine_children() -> list[str]:
    """Names of this process's descendants, but multiprocessing's resource tracker."""
    names = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "multiprocessing.resource_tracker" not in " ".join(proc.cmdline()):
                names.append(proc.name())
        except psutil.Error:
            pass
    return names


def ask(text: str, prefill: str | None = None, **params: Any) -> Request:
    return Request(
        messages=(Message("user", text),),
        params=GenerationParams(**params),
        prefill=prefill,
    )


def run(teacher: VLLMTeacher, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    greedy = {"max_new_tokens": 32, "temperature": 0.0}
    plain = ask("What is the capital of France?", **greedy)
    prefilled = ask("Reverse this fact: Alice is the mother of Bob.", "Bob's mother is", **greedy)
    stopped = ask(
        "Count from 1 to 20, one number per line.", max_new_tokens=64, temperature=0.0, stop="7"
    )
    capped = ask("Write a long story about a dragon.", max_new_tokens=8, temperature=0.8, seed=3)
    schema = ask(
        "Describe a person called Ann who is 31, as JSON with fields name and age.",
        max_new_tokens=64,
        temperature=0.0,
        response_schema=SCHEMA,
    )
    too_long = ask("word " * 1200, **greedy)
    requests = [plain, prefilled, stopped, capped, schema, too_long]
    started = time.monotonic()
    first = {c.key: c for c in teacher.generate(requests)}
    out["elapsed_first"] = time.monotonic() - started
    out["keys_match"] = sorted(first) == sorted(r.key for r in requests)
    names = ["plain", "prefilled", "stopped", "capped", "schema", "too_long"]
    out["completions"] = {
        name: {
            "text": first[r.key].text,
            "finish_reason": first[r.key].finish_reason,
            "prompt_tokens": first[r.key].prompt_tokens,
            "completion_tokens": first[r.key].completion_tokens,
            "error": first[r.key].error,
            "teacher": first[r.key].teacher,
            "counted": teacher.count_prompt_tokens(r) if name != "too_long" else None,
        }
        for name, r in zip(names, requests, strict=True)
    }
    out["fingerprint"] = teacher.fingerprint

    # seeded samples: the same alone, and among other requests in any order
    seeded = [
        Request(
            messages=(Message("user", "Invent a name for a cat."),),
            params=GenerationParams(max_new_tokens=12, temperature=1.0, seed=11),
            sample=i,
        )
        for i in range(3)
    ]
    others = [
        ask(f"Write a sentence about the number {i}.", max_new_tokens=40, temperature=0.9)
        for i in range(10)
    ]
    alone = {c.key: c.text for c in teacher.generate(seeded[:1])}
    mixed = {c.key: c.text for c in teacher.generate([*others[:5], *seeded[::-1], *others[5:]])}
    out["seeded_alone"] = alone[seeded[0].key]
    out["seeded_mixed"] = [mixed[r.key] for r in seeded]

    # many seeded requests at once: more prompt tokens than one engine step takes (vLLM
    # 0.32's CPU build crashed on a seeded prompt split over two steps)
    topic = "Tell me one surprising fact about the number {0}, in a single short sentence. " * 3
    burst = [
        Request(
            messages=(Message("user", topic.format(i)),),
            params=GenerationParams(max_new_tokens=4, temperature=0.7, seed=1),
            sample=i,
        )
        for i in range(120)
    ]
    burst_done = list(teacher.generate(burst))
    out["burst"] = {
        "ok": sum(c.ok for c in burst_done),
        "count": len(burst_done),
        "prompt_tokens": sum(c.prompt_tokens for c in burst_done),
    }

    # streaming: a short request comes back before the long ones end; the iterable is
    # pulled lazily, a bounded number ahead
    teacher.max_in_flight = 4
    pulled: list[int] = []

    def stream() -> Any:
        yield ask("Say yes.", max_new_tokens=2, temperature=0.0)
        for i in range(9):
            pulled.append(i)
            yield ask(
                f"Write a long essay about rivers, part {i}.", max_new_tokens=48, temperature=0.0
            )

    order = []
    pulled_at_first = None
    for completion in teacher.generate(stream()):
        if pulled_at_first is None:
            pulled_at_first = len(pulled)
        order.append(completion.completion_tokens)
    out["stream_order"] = order
    out["pulled_at_first"] = pulled_at_first
    teacher.max_in_flight = None

    # a real Study with the teacher
    records = [
        {"id": "f1", "text": "Olaf Brandt is the father of Lena Brandt.",
         "subject": "Olaf Brandt", "object": "Lena Brandt"},
        {"id": "f2", "text": "Ada Quill founded Quillworks.",
         "subject": "Ada Quill", "object": "Quillworks"},
    ]  # fmt: skip
    sink = workdir / "out.jsonl"
    study = Study(teacher, ["reverse", "paraphrase"], sinks=[sink], rejects=workdir / "rej.jsonl")
    report = study.run(records)
    out["study"] = {
        "status": report.status,
        "completions": sum(s.completions for s in report.strategies.values()),
        "requests": sum(s.requests for s in report.strategies.values()),
        "completion_tokens": sum(s.completion_tokens for s in report.strategies.values()),
        "rows": len(sink.read_text().splitlines()) if sink.exists() else 0,
        "teachers": sorted(
            {json.loads(line)["provenance"]["teacher"] for line in sink.read_text().splitlines()}
        )
        if sink.exists()
        else [],
    }
    # by name, as a TOML config names it (the test puts mstudy's entry points on the path)
    config = workdir / "study.toml"
    lines = [
        "[source]",
        'path = "facts.jsonl"',
        "[teacher]",
        'name = "vllm"',
        f"model = {json.dumps(teacher.model)}",
        'dtype = "float32"',
        "max_model_len = 1024",
        "enforce_eager = true",
        "kv_cache_gb = 1",
        "[[strategies]]",
        'name = "reverse"',
    ]
    config.write_text("\n".join(lines) + "\n")
    table = dict(load_config(config).teacher)
    named = plugins.create("teachers", table.pop("name"), **table)
    out["by_name"] = {
        "type": type(named).__name__,
        "same": named.fingerprint == teacher.fingerprint,
    }
    out["children_open"] = engine_children()
    teacher.close()
    out["children_closed"] = engine_children()
    return out


def main() -> None:
    mode, model, out_path = sys.argv[1:4]
    workdir = Path(sys.argv[4]) if len(sys.argv) > 4 else Path(out_path).parent
    common: dict[str, Any] = {
        # float32: its answers are checked (see EXACT_DTYPE in tests/test_teacher_vllm.py)
        "dtype": "float32",
        "max_model_len": 1024,
        "enforce_eager": True,
        "kv_cache_gb": 1,
    }
    result: dict[str, Any] = {"pid": os.getpid()}
    if mode == "run":
        with VLLMTeacher(model, startup_timeout=600, **common) as teacher:
            started = time.monotonic()
            teacher.load()
            result["startup_s"] = time.monotonic() - started
            result.update(run(teacher, workdir))
    elif mode == "timeout":
        teacher = VLLMTeacher(model, startup_timeout=3, **common)
        started = time.monotonic()
        try:
            teacher.load()
        except StartupError as exc:
            result["error"] = {
                "type": type(exc).__name__,
                "teacher": exc.teacher,
                "timeout": exc.timeout,
                "elapsed": exc.elapsed,
                "message": str(exc),
            }
        result["raised_after_s"] = time.monotonic() - started
        result["children"] = engine_children()
    elif mode == "load":
        teacher = VLLMTeacher(model, startup_timeout=600, **common)
        Path(out_path).write_text(json.dumps({"pid": os.getpid(), "loading": True}))
        teacher.load()
        result["loaded"] = True
    Path(out_path).write_text(json.dumps(result))
    if mode == "load":
        time.sleep(600)  # the test kills this process


if __name__ == "__main__":  # vLLM's engine processes are spawned: a main guard is needed
    main()
