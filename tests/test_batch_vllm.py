"""The batch input format through vLLM's own offline batch runner (CPU build), mapped back.

``python -m vllm.entrypoints.openai.run_batch -i in.jsonl -o out.jsonl`` reads the file the
batch teacher uploads to a provider and writes the results file a provider returns: a real
end-to-end check of both formats. Needs the environment of ``.ci/vllm-setup``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_teacher_vllm import EXACT_DTYPE, SERVED_NAME, vllm_missing, vllm_venv

from mstudy.records import GenerationParams, Message, Request
from mstudy.teachers.batch_files import BatchResult, completion_for, read_results, write_input

pytestmark = pytest.mark.slow


def test_vllm_run_batch_answers_the_batch_file_and_results_map_back(tmp_path: Path) -> None:
    reason = vllm_missing()
    if reason is not None:
        if os.environ.get("MSTUDY_REQUIRE_VLLM") == "1":
            pytest.fail(f"MSTUDY_REQUIRE_VLLM=1 but {reason}")
        pytest.skip(reason)
    greedy = GenerationParams(max_new_tokens=12, temperature=0.0)
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string"}},
        "required": ["capital"],
    }
    asked = [
        Request((Message("user", "What is the capital of France?"),), greedy),
        Request((Message("user", "Name a primary colour."),), greedy, prefill="A primary"),
        Request(
            (Message("user", "Name one colour."),),
            GenerationParams(max_new_tokens=8, temperature=0.9, seed=7, stop=(".",)),
        ),
        Request(
            (Message("user", "What is the capital of Italy? Answer in JSON."),),
            GenerationParams(max_new_tokens=24, temperature=0.0, response_schema=schema),
        ),
    ]
    batch_in, batch_out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    assert write_input(list(reversed(asked)), batch_in, SERVED_NAME) == len(asked)
    venv = vllm_venv()
    env = {
        **os.environ,
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    command = [
        str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.run_batch",
        "-i", str(batch_in), "-o", str(batch_out),
        "--model", str(venv / "models" / "smollm2"), "--served-model-name", SERVED_NAME,
        "--dtype", EXACT_DTYPE, "--max-model-len", "1024", "--enforce-eager",
    ]  # fmt: skip
    done = subprocess.run(
        command, env=env, capture_output=True, timeout=600, start_new_session=True
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    results = {
        item.custom_id: item
        for item in read_results(batch_out.read_bytes().split(b"\n"))
        if isinstance(item, BatchResult)
    }
    assert set(results) == {request.key for request in asked}
    completions = [completion_for(r, results[r.key], "vllm-run-batch") for r in asked]
    assert all(c.ok and c.text.strip() for c in completions)
    assert "paris" in completions[0].text.lower()
    assert completions[1].text.startswith("A primary")
    assert "." not in completions[2].text
    assert all(c.prompt_tokens > 0 and c.completion_tokens > 0 for c in completions)
    import json

    assert isinstance(json.loads(completions[3].text)["capital"], str)
