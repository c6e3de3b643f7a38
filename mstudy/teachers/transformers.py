"""``transformers``: a local causal LM as a teacher, run in length-bucketed, left-padded batches.

Importing this module imports neither torch nor transformers: the tokenizer is loaded when the
fingerprint is first needed, the model on the first ``generate``.

How requests are run
--------------------
``generate`` pulls requests lazily into a window of ``max_window`` (a few batches' worth).
Each batch holds requests with the same ``max_new_tokens``; it is made of the oldest waiting
request and the neighbours closest to it in prompt length, so padding stays small and no
request waits long. Temperature, top-p and stop strings may differ inside a batch: they are
applied per row. Completions are yielded as each batch finishes, so their order differs from
the input's; each carries its request's ``key``.

Sampling and seeds
------------------
The model decodes greedily (``do_sample=False``); a per-row logits processor does the
sampling for rows with ``temperature > 0``: softmax of ``logits / temperature``, top-p, then
inverse-CDF sampling with one uniform number per step drawn from that request's own
``torch.Generator`` (on the CPU), seeded with ``Request.seed``. The random stream of a
request therefore does not depend on its batch, its position in it, the batch size or the
device. What can still differ between batch compositions is floating-point rounding of the
logits (padding changes matrix shapes), which may flip a token only where two tokens are tied
to ~1e-6; the same requests run twice with the same settings give identical outputs.
Requests without a seed draw their generator's seed from the OS (not reproducible).

Structured output
-----------------
A request whose params carry a response schema is decoded under that schema's grammar with
xgrammar (the ``structured`` extra): a per-row logits processor masks every token the JSON
schema does not allow at that point, so the reply is valid JSON of the schema (unless it hits
``max_new_tokens`` first). Rows without a schema in the same batch are left alone. Grammars
are compiled once per schema; a schema xgrammar cannot compile is decoded without constraint
(with a warning), and the parse step validates every reply either way. Without xgrammar, a
schema request is a ``TeacherError`` naming the install command, unless
``structured_output=False`` says to decode freely.
"""

from __future__ import annotations

import copy
import gc
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mstudy._hashing import stable_hash
from mstudy.errors import TeacherError
from mstudy.records import Completion, FinishReason, Request
from mstudy.teachers.base import (
    RAW_PROMPT_STOPS,
    apply_stop,
    fingerprint,
    folder_digest,
    format_raw_prompt,
    quick_file_digest,
)

__all__ = ["TransformersTeacher", "resolve_device"]

log = logging.getLogger(__name__)

#: Bumped whenever a change here changes outputs for the same model and requests.
IMPL_VERSION = 1

#: Decoding settings that are fixed by this teacher; part of the fingerprint.
DECODING = {
    "sampler": "per-request-cpu-generator-inverse-cdf",
    "skip_special_tokens": True,
    "repetition_penalty": 1.0,
    "model_generation_config": "ignored",
}

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


@dataclass
class _Item:
    """A request ready to run: its prompt token ids and effective stop strings."""

    request: Request
    ids: list[int]
    stops: tuple[str, ...]
    order: int

    @property
    def group(self) -> int:
        return self.request.params.max_new_tokens


def _is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error (by its type, never by its text)."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return oom is not None and isinstance(exc, oom)


def _error(request: Request, message: str, teacher: str, prompt_tokens: int = 0) -> Completion:
    return Completion(
        key=request.key,
        text="",
        finish_reason="error",
        prompt_tokens=prompt_tokens,
        teacher=teacher,
        error=message,
    )


class _RowSampler:
    """Logits processor sampling each row with its own temperature, top-p and generator.

    Rows with temperature 0 are left alone (the greedy argmax picks them). A sampled row's
    scores become 0 at the drawn token and -inf elsewhere, so the argmax picks the draw.
    """

    def __init__(self, temperatures: list[float], top_ps: list[float], seeds: list[int]) -> None:
        import torch

        self.rows = [i for i, t in enumerate(temperatures) if t > 0]
        self.temperatures = [temperatures[i] for i in self.rows]
        self.top_ps = [top_ps[i] for i in self.rows]
        self.generators = []
        for i in self.rows:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(seeds[i])
            self.generators.append(generator)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        rows = torch.tensor(self.rows, device=scores.device)
        temps = torch.tensor(self.temperatures, device=scores.device, dtype=torch.float32)
        logits = scores[rows].float() / temps[:, None]
        probs = torch.softmax(logits, dim=-1)
        order = None
        if any(p < 1.0 for p in self.top_ps):
            probs, order = torch.sort(probs, dim=-1, descending=True)
            top_p = torch.tensor(self.top_ps, device=scores.device, dtype=torch.float32)
            mass_before = torch.cumsum(probs, dim=-1) - probs
            probs = probs.masked_fill(mass_before >= top_p[:, None], 0.0)
        cdf = torch.cumsum(probs, dim=-1)
        draws = torch.cat([torch.rand(1, generator=g) for g in self.generators])
        draws = draws.to(scores.device) * cdf[:, -1]
        picked = torch.searchsorted(cdf, draws[:, None]).clamp_(max=cdf.shape[-1] - 1)
        # never pick a zero-probability token (possible only through rounding at the edges)
        picked = torch.where(
            torch.gather(probs, 1, picked) > 0, picked, torch.argmax(probs, dim=-1, keepdim=True)
        )
        if order is not None:
            picked = torch.gather(order, 1, picked)
        out = scores.clone()
        out[rows] = float("-inf")
        out[rows, picked[:, 0]] = 0.0
        return out


class _GrammarRows:
    """Logits processor: each row with a grammar matcher may only pick tokens it allows.

    The matcher of a row is fed the token chosen at the previous step; a row whose matcher
    has terminated (it accepted an end-of-sequence token) or refused a token (the row ended
    by a stop string and is being padded) is left alone from then on. Tokens holding a raw
    control character (``banned``) are masked too: xgrammar's JSON strings admit them, strict
    JSON does not (they must be escaped), and compact JSON needs none outside strings.
    """

    def __init__(self, matchers: list[Any], vocab_size: int, banned: Any) -> None:
        import xgrammar

        self.banned = banned
        self.matchers = matchers
        self.live = [i for i, m in enumerate(matchers) if m is not None]
        self.vocab_size = vocab_size
        self.bitmask = xgrammar.allocate_token_bitmask(len(matchers), vocab_size)
        self.first = True

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import xgrammar

        if not self.first:
            last = input_ids[:, -1].tolist()
            self.live = [
                i
                for i in self.live
                if not self.matchers[i].is_terminated() and self.matchers[i].accept_token(last[i])
            ]
        self.first = False
        rows = [i for i in self.live if not self.matchers[i].is_terminated()]
        if not rows:
            return scores
        for i in rows:
            self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
        xgrammar.apply_token_bitmask_inplace(
            scores,
            self.bitmask.to(scores.device),
            vocab_size=min(self.vocab_size, scores.shape[-1]),
            indices=rows,
        )
        if self.banned.numel():
            import torch

            index = torch.tensor(rows, device=scores.device)[:, None]
            scores[index, self.banned.to(scores.device)[None, :]] = float("-inf")
        return scores


def _control_tokens(info: Any) -> Any:
    """Ids of the tokens (special ones aside) whose bytes hold a control character."""
    import torch

    special = set(info.special_token_ids) | set(info.stop_token_ids)
    ids = [
        i
        for i, piece in enumerate(info.decoded_vocab)
        if i not in special and any(byte < 0x20 for byte in piece)
    ]
    return torch.tensor(ids, dtype=torch.long)


class _StopTracker:
    """Stopping criterion: ends a row at its first stop string; records where rows ended.

    Only rows with stop strings are checked: each step decodes the last few tokens of such a
    row (enough to hold the longest stop string) and looks for its stops there.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_length: int,
        stops: list[tuple[str, ...]],
        eos_ids: frozenset[int],
    ) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.stops = stops
        self.eos_ids = eos_ids
        self.ended_at: list[int | None] = [None] * len(stops)
        self.finished = [not row for row in stops]  # rows without stops are not watched
        longest = max((len(s) for row in stops for s in row), default=0)
        # a token decodes to at least one character (or a piece of a multi-byte one)
        self.window = longest + 4

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        steps = input_ids.shape[1] - self.prompt_length
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        watched = [i for i, finished in enumerate(self.finished) if not finished]
        if watched:
            # one device-to-host copy per step for the whole batch, not one per row
            tails = input_ids[:, start:].tolist()
            live = []
            for i in watched:
                if tails[i] and tails[i][-1] in self.eos_ids:
                    self.finished[i] = True  # ended by end-of-sequence; generate knows
                else:
                    live.append(i)
            # (older transformers decode an empty batch as one empty text: skip it)
            texts = (
                self.tokenizer.batch_decode([tails[i] for i in live], skip_special_tokens=True)
                if live
                else []
            )
            for i, text in zip(live, texts, strict=True):
                if any(s in text for s in self.stops[i]):
                    self.ended_at[i] = steps
                    self.finished[i] = True
        done = [at is not None for at in self.ended_at]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def resolve_device(device: str) -> str:
    """``device`` itself, or for ``"auto"`` the best one here: cuda, then mps, then cpu."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class TransformersTeacher:
    """A local causal LM (hub name, local folder, GGUF file or loaded model) as a teacher.

    Args:
        model: hub id, local folder, or an already loaded ``PreTrainedModel`` (then
            ``tokenizer`` must be given as an object too).
        tokenizer: hub id, folder or tokenizer object; default: the model's.
        revision: hub revision (branch, tag or commit) of the model.
        gguf_file: name of a GGUF file inside ``model`` to load (dequantized) instead.
        device: ``"auto"`` (cuda, then mps, then cpu) or a torch device string.
        dtype: ``"auto"`` (bf16 on CUDA where supported, else fp16 on CUDA/MPS, fp32 on CPU),
            or ``"float32"``, ``"bfloat16"``, ``"float16"`` (and the short forms).
        batch_size: requests per forward batch; halved on out-of-memory.
        raw_prompt: format messages as plain ``User: ...`` text instead of the chat template
            (for base models; the stops ``"\\nUser:"`` and ``"\\nSystem:"`` are then added).
        trust_remote_code: passed to ``from_pretrained``.
        max_window: how many requests are pulled ahead to form batches (default 4 batches).
        model_id: a name that identifies the model in the fingerprint instead of its files
            (e.g. the distribution and file it came from).
        structured_output: constrain the replies of requests with a response schema with
            xgrammar (needs ``pip install 'mstudy[structured]'``); off, they are decoded freely
            and only validated.

    The model's own ``generation_config`` sampling defaults are ignored: each request's
    ``params`` decide. ``prompt_tokens`` counts the prompt including the prefill;
    ``completion_tokens`` counts the generated tokens, including a final end-of-sequence token
    and the tokens of a stop string that were cut from the text.
    """

    name = "transformers"

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        *,
        tokenizer: str | os.PathLike[str] | Any | None = None,
        revision: str | None = None,
        gguf_file: str | None = None,
        device: str = "auto",
        dtype: str | Any = "auto",
        batch_size: int = 16,
        raw_prompt: bool = False,
        trust_remote_code: bool = False,
        max_window: int | None = None,
        model_id: str | None = None,
        structured_output: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_window is not None and max_window < batch_size:
            raise ValueError(f"max_window ({max_window}) must be >= batch_size ({batch_size})")
        self._model_spec: str | None = None
        self._model: Any = None
        if isinstance(model, (str, os.PathLike)):
            self._model_spec = os.fspath(model)
        else:
            if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
                raise TeacherError(
                    "a loaded model needs its tokenizer object: "
                    "TransformersTeacher(model, tokenizer=tokenizer)"
                )
            self._model = model
        self._tokenizer_spec: str | None = None
        self._tokenizer: Any = None
        if isinstance(tokenizer, (str, os.PathLike)):
            self._tokenizer_spec = os.fspath(tokenizer)
        elif tokenizer is not None:
            self._tokenizer = tokenizer
        self.revision = revision
        self.gguf_file = gguf_file
        self._device_arg = device
        self._dtype_arg = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
        if self._dtype_arg != "auto" and self._dtype_arg not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use 'auto', {', '.join(sorted(_DTYPES))}")
        self.batch_size = batch_size
        self.raw_prompt = raw_prompt
        self.trust_remote_code = trust_remote_code
        self.max_window = max_window or 4 * batch_size
        self.model_id = model_id
        self.structured_output = bool(structured_output)
        self._grammars: dict[str, Any] = {}
        self._grammar_compiler: Any = None
        self._banned: Any = None
        self._device: str | None = None
        self._fingerprint: str | None = None
        self._pad_id = 0
        self._eos_ids: frozenset[int] = frozenset()
        self._context: int | None = None
        self._generation_config: Any = None

    # -- description -----------------------------------------------------------------------

    def __repr__(self) -> str:
        model = self.model_id or self._model_spec or type(self._model).__name__
        parts = [repr(model)]
        if self.gguf_file:
            parts.append(f"gguf_file={self.gguf_file!r}")
        if self.revision:
            parts.append(f"revision={self.revision!r}")
        parts += [
            f"device={self._device or self._device_arg!r}",
            f"dtype={self._dtype_arg!r}",
            f"batch_size={self.batch_size}",
        ]
        if self.raw_prompt:
            parts.append("raw_prompt=True")
        parts.append(f"loaded={self._model is not None}")
        return f"TransformersTeacher({', '.join(parts)})"

    @property
    def device(self) -> str:
        """The device the model runs on (resolved from ``"auto"`` on first use)."""
        if self._device is None:
            if self._device_arg == "auto" and self._model is not None and self._model_spec is None:
                self._device = str(self._model.device)
            else:
                self._device = resolve_device(self._device_arg)
        return self._device

    @property
    def dtype(self) -> str:
        """The dtype name the model runs in (resolved from ``"auto"``)."""
        if self._dtype_arg != "auto":
            return _DTYPES[self._dtype_arg]
        if self._model is not None and self._model_spec is None:
            return str(self._model.dtype).replace("torch.", "")
        device = self.device
        if device.startswith("cuda"):
            import torch

            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if device.startswith("mps"):
            return "float16"
        return "float32"

    @property
    def fingerprint(self) -> str:
        """Stable hash of model identity, dtype, prompt format and decoding settings."""
        if self._fingerprint is None:
            tokenizer = self._get_tokenizer()
            if self.raw_prompt:
                prompt_format: Any = {"raw": format_raw_prompt.__name__, "stops": RAW_PROMPT_STOPS}
            else:
                prompt_format = {"chat_template": stable_hash(tokenizer.chat_template)}
            self._fingerprint = fingerprint(
                self.name,
                {
                    "impl": IMPL_VERSION,
                    "model": self._model_identity(),
                    "tokenizer": {
                        "source": self._tokenizer_identity(),
                        "vocab": len(tokenizer),
                        "eos": tokenizer.eos_token,
                        "bos": tokenizer.bos_token,
                    },
                    "dtype": self.dtype,
                    "prompt": prompt_format,
                    "decoding": DECODING,
                    # only when off, so that fingerprints made before it existed still hold
                    **({} if self.structured_output else {"schema": "unconstrained"}),
                },
            )
        return self._fingerprint

    @property
    def constrains_schema(self) -> bool:
        """Whether replies to schema requests are constrained (xgrammar installed and
        ``structured_output`` on): :class:`~mstudy.interfaces.SchemaConstrained`."""
        if not self.structured_output:
            return False
        import importlib.util

        return importlib.util.find_spec("xgrammar") is not None

    def _model_identity(self) -> Any:
        if self.model_id is not None:
            return {"id": self.model_id}
        if self._model_spec is None:
            config = self._model.config
            return {
                "object": getattr(config, "name_or_path", ""),
                "commit": getattr(config, "_commit_hash", None),
                "config": stable_hash(config.to_dict()),
                "weights": self._weight_sample(),
            }
        path = Path(self._model_spec)
        if path.is_dir():
            if self.gguf_file:
                files: Any = {self.gguf_file: quick_file_digest(path / self.gguf_file)}
            else:
                files = folder_digest(path)
            return {"local": path.name, "gguf_file": self.gguf_file, "files": files}
        if path.is_file():
            return {"local": path.name, "files": {path.name: quick_file_digest(path)}}
        return {
            "hub": self._model_spec,
            "revision": self._resolve_commit() or self.revision,
            "gguf_file": self.gguf_file,
        }

    def _weight_sample(self) -> str:
        """A digest of a few thousand values of the first and last parameter tensors."""
        import torch

        params = list(self._model.parameters())
        digest = []
        for tensor in (params[0], params[-1]) if params else ():
            values = tensor.detach().flatten()[:4096].to("cpu", torch.float32)
            digest.append(stable_hash(values.numpy().tobytes()))
        return stable_hash(digest)

    def _tokenizer_identity(self) -> Any:
        spec = self._tokenizer_spec
        if spec is None:
            return "model" if self._tokenizer is None or self._model_spec else "object"
        path = Path(spec)
        if path.is_dir():
            return {"local": path.name, "files": folder_digest(path)}
        return {"hub": spec}

    def _resolve_commit(self) -> str | None:
        """The commit hash a hub model resolves to (from the local cache when offline)."""
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(
                str(self._model_spec),
                revision=self.revision,
                gguf_file=self.gguf_file,
                trust_remote_code=self.trust_remote_code,
            )
        except Exception as exc:
            raise TeacherError(f"cannot find model {self._model_spec!r}: {exc}") from exc
        commit = getattr(config, "_commit_hash", None)
        return commit if isinstance(commit, str) else None

    # -- loading ---------------------------------------------------------------------------

    def _get_tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            source = self._tokenizer_spec or self._model_spec
            kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
            if self._tokenizer_spec is None:
                kwargs.update(revision=self.revision)
                if self.gguf_file:
                    kwargs.update(gguf_file=self.gguf_file)
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            except Exception as exc:
                raise TeacherError(f"cannot load the tokenizer of {source!r}: {exc}") from exc
        if not self.raw_prompt and not getattr(self._tokenizer, "chat_template", None):
            raise TeacherError(
                f"the tokenizer of {self.model_id or self._model_spec or 'the model'!r} has no "
                "chat template; pass raw_prompt=True to format messages as plain "
                "'User: ... / Assistant:' text, or give a tokenizer that has one"
            )
        return self._tokenizer

    def _get_model(self) -> Any:
        if self._generation_config is not None:
            return self._model
        import torch
        from transformers import GenerationConfig

        if self._model is None:
            from transformers import AutoModelForCausalLM

            kwargs: dict[str, Any] = {
                "revision": self.revision,
                "dtype": getattr(torch, self.dtype),
                "trust_remote_code": self.trust_remote_code,
            }
            if self.gguf_file:
                kwargs["gguf_file"] = self.gguf_file
            try:
                model: Any = AutoModelForCausalLM.from_pretrained(str(self._model_spec), **kwargs)
            except Exception as exc:
                raise TeacherError(f"cannot load model {self._model_spec!r}: {exc}") from exc
            self._model = model.to(self.device).eval()
            log.info("loaded %r on %s (%s)", self._model_spec, self.device, self.dtype)
        else:
            if self._dtype_arg != "auto":
                self._model = self._model.to(dtype=getattr(torch, self.dtype))
            if self._device_arg == "auto":
                self._device = str(self._model.device)
            else:
                self._model = self._model.to(self._device_arg)
            self._model.eval()
        tokenizer = self._get_tokenizer()
        config = self._model.generation_config
        eos: set[int] = set()
        for value in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, (list, tuple)):
                eos.update(int(v) for v in value)
        self._eos_ids = frozenset(eos)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = getattr(config, "pad_token_id", None)
        if pad is None:
            pad = min(eos) if eos else 0
        self._pad_id = int(pad)
        self._context = getattr(self._model.config, "max_position_embeddings", None)
        make_config: Any = GenerationConfig
        self._generation_config = make_config(
            bos_token_id=getattr(config, "bos_token_id", None),
            eos_token_id=sorted(eos) or None,
            pad_token_id=self._pad_id,
        )
        return self._model

    def load(self) -> TransformersTeacher:
        """Load the tokenizer and model now (``generate`` otherwise does on first use)."""
        self._get_model()
        return self

    def close(self) -> None:
        """Free the model (a later ``generate`` loads it again)."""
        if self._model is None or self._model_spec is None:
            self._generation_config = None
            return
        self._model = None
        self._generation_config = None
        gc.collect()
        if self._device is not None and self._device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def __enter__(self) -> TransformersTeacher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- prompts ---------------------------------------------------------------------------

    def prompt_text(self, request: Request) -> str:
        """The exact text the model is given for ``request`` (template + prefill)."""
        tokenizer = self._get_tokenizer()
        if self.raw_prompt:
            return format_raw_prompt(request.chat(), request.prefill)
        text = tokenizer.apply_chat_template(
            request.chat(), add_generation_prompt=True, tokenize=False
        )
        if not isinstance(text, str):
            raise TeacherError(f"the chat template returned {type(text).__name__}, not text")
        return text + (request.prefill or "")

    def count_prompt_tokens(self, request: Request) -> int:
        """Prompt tokens of ``request`` as this model sees them (for dry runs)."""
        text = self.prompt_text(request)
        return len(self._get_tokenizer()(text, add_special_tokens=self.raw_prompt)["input_ids"])

    def _prepare(self, request: Request, order: int) -> _Item | Completion:
        try:
            text = self.prompt_text(request)
            ids = self._tokenizer(text, add_special_tokens=self.raw_prompt)["input_ids"]
        except TeacherError:
            raise
        except Exception as exc:
            return _error(request, f"cannot build the prompt: {exc}", self.fingerprint)
        if not ids:
            return _error(request, "the prompt is empty", self.fingerprint)
        if self._context is not None and len(ids) >= self._context:
            return _error(
                request,
                f"the prompt has {len(ids)} tokens; the model's context is {self._context}",
                self.fingerprint,
                len(ids),
            )
        if (
            request.params.response_schema is not None
            and self.structured_output
            and not self.constrains_schema
        ):
            raise TeacherError(
                "a request has a response schema, and constraining decoding to it needs "
                "xgrammar: pip install 'mstudy[structured]' (or pass structured_output=False "
                "to decode freely; replies are validated either way)"
            )
        stops = tuple(request.params.stop)
        if self.raw_prompt:
            stops += RAW_PROMPT_STOPS
        return _Item(request, list(ids), stops, order)

    # -- generation ------------------------------------------------------------------------

    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        """Yield one completion per request, batch by batch (order may differ from input)."""
        self._get_model()
        teacher = self.fingerprint
        source = iter(requests)
        pool: list[_Item] = []
        exhausted = False
        order = 0
        while True:
            while not exhausted and len(pool) < self.max_window:
                try:
                    request = next(source)
                except StopIteration:
                    exhausted = True
                    break
                item = self._prepare(request, order)
                order += 1
                if isinstance(item, Completion):
                    yield item
                else:
                    pool.append(item)
            if not pool:
                if exhausted:
                    return
                continue
            batch = self._pick_batch(pool)
            yield from self._run(batch, teacher)

    def _pick_batch(self, pool: list[_Item]) -> list[_Item]:
        """Remove and return the oldest request's batch: its group's nearest in length."""
        oldest = pool[0]
        group = sorted(
            (item for item in pool if item.group == oldest.group),
            key=lambda item: (len(item.ids), item.order),
        )
        size = self.batch_size
        if len(group) > size:
            at = group.index(oldest)
            starts = range(max(0, at - size + 1), min(at, len(group) - size) + 1)
            start = min(starts, key=lambda s: len(group[s + size - 1].ids) - len(group[s].ids))
            group = group[start : start + size]
        chosen = {id(item) for item in group}
        pool[:] = [item for item in pool if id(item) not in chosen]
        return group

    def _run(self, batch: list[_Item], teacher: str) -> Iterator[Completion]:
        """Run a batch; on OOM halve it, on another error retry its requests one by one."""
        try:
            results = self._generate_batch(batch, teacher)
        except Exception as exc:
            if _is_oom(exc):
                self._free_device_memory()
                if len(batch) == 1:
                    item = batch[0]
                    yield _error(item.request, f"out of memory: {exc}", teacher, len(item.ids))
                    return
                half = len(batch) // 2
                if self.batch_size > half:
                    log.warning(
                        "out of memory at batch size %d; going on with batch size %d",
                        len(batch),
                        half,
                    )
                    self.batch_size = half
                yield from self._run(batch[:half], teacher)
                yield from self._run(batch[half:], teacher)
                return
            if len(batch) == 1:
                item = batch[0]
                message = f"{type(exc).__name__}: {exc}"
                log.warning("request %s failed: %s", item.request.key, message)
                yield _error(item.request, message, teacher, len(item.ids))
                return
            log.warning("a batch of %d failed (%r); retrying one by one", len(batch), exc)
            for item in batch:
                yield from self._run([item], teacher)
            return
        yield from results

    def _free_device_memory(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # -- structured output -----------------------------------------------------------------

    def _vocab_size(self) -> int:
        """Rows of the model's output layer (the logits' width; may exceed the tokenizer's)."""
        embeddings = self._model.get_output_embeddings()
        if embeddings is not None and getattr(embeddings, "weight", None) is not None:
            return int(embeddings.weight.shape[0])
        return int(getattr(self._model.config, "vocab_size", 0) or len(self._tokenizer))

    def _grammar(self, schema: str) -> Any:
        """The compiled grammar of ``schema`` (None when xgrammar cannot compile it)."""
        if schema not in self._grammars:
            import xgrammar

            if self._grammar_compiler is None:
                info = xgrammar.TokenizerInfo.from_huggingface(
                    self._tokenizer,
                    vocab_size=self._vocab_size(),
                    stop_token_ids=sorted(self._eos_ids) or None,
                )
                self._grammar_compiler = xgrammar.GrammarCompiler(info)
                self._banned = _control_tokens(info)
            try:
                grammar = self._grammar_compiler.compile_json_schema(
                    schema, any_whitespace=False, strict_mode=True
                )
            except Exception as exc:
                log.warning(
                    "xgrammar cannot compile a response schema (%s: %s); its requests are "
                    "decoded without constraint and validated afterwards",
                    type(exc).__name__,
                    exc,
                )
                grammar = None
            self._grammars[schema] = grammar
        return self._grammars[schema]

    def _matchers(self, batch: Sequence[_Item]) -> list[Any]:
        """A fresh grammar matcher for each row with a response schema (None for the rest)."""
        schemas = [item.request.params.response_schema for item in batch]
        if all(schema is None for schema in schemas):
            return [None] * len(batch)
        if not self.structured_output:
            return [None] * len(batch)
        import xgrammar

        matchers: list[Any] = []
        for item, schema in zip(batch, schemas, strict=True):
            grammar = None if schema is None else self._grammar(schema)
            matcher = None if grammar is None else xgrammar.GrammarMatcher(grammar)
            prefill = item.request.prefill
            if matcher is not None and prefill and not matcher.accept_string(prefill):
                matcher = None  # the prefill already leaves the schema; validated later
            matchers.append(matcher)
        return matchers

    def _generate_batch(self, batch: Sequence[_Item], teacher: str) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        model = self._get_model()
        tokenizer = self._tokenizer
        width = max(len(item.ids) for item in batch)
        input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, item in enumerate(batch):
            input_ids[row, width - len(item.ids) :] = torch.tensor(item.ids, dtype=torch.long)
            attention[row, width - len(item.ids) :] = 1
        max_new_tokens = batch[0].request.params.max_new_tokens
        processors = LogitsProcessorList()
        params = [item.request.params for item in batch]
        if any(p.temperature > 0 for p in params):
            seeds = [
                item.request.seed
                if item.request.seed is not None
                else random.SystemRandom().randrange(2**63)
                for item in batch
            ]
            processors.append(
                _RowSampler([p.temperature for p in params], [p.top_p for p in params], seeds)
            )
        matchers = self._matchers(batch)
        if any(m is not None for m in matchers):
            processors.insert(0, _GrammarRows(matchers, self._vocab_size(), self._banned))
        tracker = _StopTracker(tokenizer, width, [item.stops for item in batch], self._eos_ids)
        criteria = StoppingCriteriaList([tracker] if any(item.stops for item in batch) else [])
        config = copy.deepcopy(self._generation_config)
        config.max_new_tokens = max_new_tokens
        config.do_sample = False
        # the model's own generation defaults (sampling, penalties) must not leak in
        saved, model.generation_config = model.generation_config, copy.deepcopy(config)
        try:
            with torch.inference_mode():
                output = model.generate(
                    input_ids=input_ids.to(model.device),
                    attention_mask=attention.to(model.device),
                    generation_config=config,
                    logits_processor=processors,
                    stopping_criteria=criteria,
                )
        finally:
            model.generation_config = saved
        generated = output[:, width:].tolist()
        completions = []
        for row, item in enumerate(batch):
            tokens = generated[row]
            count = len(tokens)
            reason: FinishReason = "length"
            eos_at = next((j for j, t in enumerate(tokens) if t in self._eos_ids), None)
            if eos_at is not None:
                count, reason = eos_at + 1, "stop"
            ended = tracker.ended_at[row]
            if ended is not None and ended <= count:
                count, reason = ended, "stop"
            text = tokenizer.decode(tokens[:count], skip_special_tokens=True)
            text, stopped = apply_stop(text, item.stops)
            if stopped:
                reason = "stop"
            prefill = item.request.prefill or ""
            if self.raw_prompt and not prefill:
                text = text.lstrip()
            completions.append(
                Completion(
                    key=item.request.key,
                    text=prefill + text,
                    finish_reason=reason,
                    prompt_tokens=len(item.ids),
                    completion_tokens=count,
                    teacher=teacher,
                )
            )
        return completions
