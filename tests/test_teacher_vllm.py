"""RemoteTeacher against a real vLLM server (CPU build) serving SmolLM2-135M-Instruct.

Needs the separate environment that ``.ci/vllm-setup`` builds (``$MSTUDY_VLLM_VENV``, default
``<repo>/.venv-vllm``); skipped without it unless ``MSTUDY_REQUIRE_VLLM=1``. The server takes
30-90 s to start on 2 cores and about 4.6 GB of memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mstudy.records import GenerationParams, Message, Request
from mstudy.teachers.remote import RemoteTeacher

REPO = Path(__file__).resolve().parent.parent
SERVED_NAME = "smollm2"
EXACT_DTYPE = "float32"
"""The dtype of the vLLM runs whose answers are checked. In bfloat16 on a CPU with AMX,
vLLM's CPU build runs attention through its AMX kernels (block sizes are multiples of 32
there, so they cannot be avoided), and SmolLM2 answered "What is the capital of France?"
with "L'Étoile, la Marseillaise, la femme, ..." where float32, and transformers in bfloat16
on the same machine, say "The capital of France is Paris." Throughput tests keep bfloat16."""
pytestmark = pytest.mark.slow


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def vllm_server(
    *,
    port: int | None = None,
    startup_timeout: float | None = None,
    kv_cache_gb: int = 2,
    dtype: str = EXACT_DTYPE,
) -> Iterator[str]:
    """Start vLLM's OpenAI server on 127.0.0.1, yield its base URL (``.../v1``), stop it."""
    venv = vllm_venv()
    port = port or free_port()
    timeout = startup_timeout or float(os.environ.get("MSTUDY_VLLM_START_TIMEOUT", "180"))
    env = {
        **os.environ,
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb),
        "HF_HUB_OFFLINE": "1",
    }
    command = [
        str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(venv / "models" / "smollm2"),
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", dtype, "--max-model-len", "2048",
        "--served-model-name", SERVED_NAME, "--enforce-eager",
        # Chunked prefill splits a prompt when many arrive at once (~64 here); the CPU build
        # then rewinds a seeded request's generator, which CPU generators cannot do, and the
        # engine dies ("CPU Generator does not use offset"). mstudy seeds every request.
        "--no-enable-chunked-prefill",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mstudy-vllm-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            try:
                _wait_healthy(process, port, timeout, log_path)
                yield f"http://127.0.0.1:{port}/v1"
            finally:
                _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it has its own session: the engine runs in a
    child process), then SIGKILL what is left after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group


def _wait_healthy(process: subprocess.Popen[bytes], port: int, timeout: float, log: Path) -> None:
    def tail() -> str:
        return "\n".join(log.read_text(errors="replace").splitlines()[-25:])

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM server exited with {process.returncode}:\n{tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"vLLM server not healthy after {timeout:.0f} s:\n{tail()}")
        time.sleep(1.0)


@pytest.fixture(scope="module")
def vllm_url() -> Iterator[str]:
    reason = vllm_missing()
    if reason is not None:
        if os.environ.get("MSTUDY_REQUIRE_VLLM") == "1":
            pytest.fail(f"MSTUDY_REQUIRE_VLLM=1 but {reason}")
        pytest.skip(reason)
    started = time.monotonic()
    with vllm_server() as url:
        sys.stderr.write(f"\nvLLM server ready in {time.monotonic() - started:.0f} s\n")
        yield url


def test_generates_against_vllm(vllm_url: str) -> None:
    greedy = GenerationParams(max_new_tokens=32, temperature=0.0)
    plain = [
        Request(messages=(Message("user", question),), params=greedy)
        for question in (
            "What is the capital of France?",
            "Name a primary colour.",
            "What is 2 + 2?",
            "Say hello in Spanish.",
        )
    ]
    prefilled = Request(
        messages=(Message("user", "Reverse this fact: Alice is the mother of Bob."),),
        params=greedy,
        prefill="Bob's mother is",
    )
    stopped = Request(
        messages=(Message("user", "Count from 1 to 20, one number per line."),),
        params=GenerationParams(max_new_tokens=64, temperature=0.0, stop=("7",)),
    )
    capped = Request(
        messages=(Message("user", "Write a long story about a dragon."),),
        params=GenerationParams(max_new_tokens=8, temperature=0.7, seed=3),
    )
    requests = [*plain, prefilled, stopped, capped]
    with RemoteTeacher(SERVED_NAME, base_url=vllm_url, concurrency=8) as teacher:
        started = time.monotonic()
        completions = {c.key: c for c in teacher.generate(requests)}
        elapsed = time.monotonic() - started
        again = next(iter(teacher.generate([capped])))
    assert set(completions) == {r.key for r in requests}
    for completion in completions.values():
        assert completion.ok, completion.error
        assert completion.text.strip()
        assert completion.prompt_tokens > 0 and completion.completion_tokens > 0
        assert completion.teacher == teacher.fingerprint
    assert "paris" in completions[plain[0].key].text.lower()
    assert completions[prefilled.key].text.startswith("Bob's mother is")
    assert "7" not in completions[stopped.key].text
    assert completions[capped.key].finish_reason == "length"
    assert completions[capped.key].completion_tokens == 8
    assert again.text == completions[capped.key].text  # seeded sampling reproduces
    sys.stderr.write(f"8 requests in {elapsed:.2f} s\n")


def test_keeps_several_requests_in_flight(vllm_url: str) -> None:
    """The server's own metrics show more than one request running at once."""
    requests = [
        Request(
            messages=(Message("user", f"Write a short poem about the number {i}."),),
            params=GenerationParams(max_new_tokens=48, temperature=0.0),
        )
        for i in range(16)
    ]
    peak = 0
    metrics_url = vllm_url.removesuffix("/v1") + "/metrics"
    with RemoteTeacher(SERVED_NAME, base_url=vllm_url, concurrency=8) as teacher:
        for completion in teacher.generate(requests):
            assert completion.ok, completion.error
            with urllib.request.urlopen(metrics_url, timeout=5) as response:
                for line in response.read().decode().splitlines():
                    if line.startswith("vllm:num_requests_running"):
                        peak = max(peak, int(float(line.rsplit(" ", 1)[1])))
    assert peak > 1


def test_response_format_constrains_the_server_to_the_schema(vllm_url: str) -> None:
    """A schema strategy's requests carry ``response_format``: vLLM's guided decoding makes
    every reply valid JSON of the schema, unless it runs out of tokens."""
    from mstudy import Study
    from mstudy.strategies.facts import Facts

    records = [
        {"id": "curie", "text": "Marie Curie discovered polonium in Paris."},
        {"id": "brandt", "text": "Olaf Brandt is the father of Lena Brandt."},
        {"id": "tower", "text": "The Zorvath Tower stands in the city of Meridia."},
        {"id": "ada", "text": "Ada Lovelace wrote the first computer program."},
    ]
    strategy = Facts(max_facts=3, params={"temperature": 0.7, "seed": 0}, n=2)
    with RemoteTeacher(SERVED_NAME, base_url=vllm_url, concurrency=8) as teacher:
        report = Study(teacher, [strategy]).run(records)
    for rejection in report.rejections(reason="schema"):
        assert "cut off at max_new_tokens" in rejection["detail"], rejection
    assert report.accepted >= 2, report.rejections()
