"""TransformersTeacher on a tiny random Llama chat model built locally (tests/tiny_model.py)."""

from __future__ import annotations

import collections
import itertools
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_model import build_tiny_model, build_tokenizer

from mstudy.errors import TeacherError
from mstudy.interfaces import Teacher
from mstudy.records import Completion, GenerationParams, Message, Request
from mstudy.teachers.base import apply_stop, find_stop, format_raw_prompt
from mstudy.teachers.transformers import TransformersTeacher, _Item, _StopTracker

QUESTION = "What is the capital of France?"


def ask(
    text: str = QUESTION,
    *,
    max_new_tokens: int = 12,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: tuple[str, ...] = (),
    sample: int = 0,
    prefill: str | None = None,
) -> Request:
    params = GenerationParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=stop
    )
    return Request((Message("user", text),), params, sample=sample, prefill=prefill)


def by_key(completions: Iterator[Completion]) -> dict[str, Completion]:
    out: dict[str, Completion] = {}
    for completion in completions:
        assert completion.key not in out
        out[completion.key] = completion
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def teacher(model_dir: Path) -> Iterator[TransformersTeacher]:
    """On the machine's best device ("auto"): a GPU where there is one."""
    teacher = TransformersTeacher(model_dir, batch_size=4)
    yield teacher
    teacher.close()


@pytest.fixture(scope="module")
def cpu_teacher(model_dir: Path) -> Iterator[TransformersTeacher]:
    """On the CPU in float32, where a row's output does not depend on its batch. On a GPU in
    bf16 or fp16 the batch's shape changes rounding, so exact equality is a CPU property."""
    teacher = TransformersTeacher(model_dir, batch_size=4, device="cpu")
    yield teacher
    teacher.close()


def reference_greedy(teacher: TransformersTeacher, text: str, max_new_tokens: int) -> list[int]:
    """Greedy tokens of plain ``model.generate`` on one unpadded prompt (the ground truth)."""
    import torch

    model, tokenizer = teacher.load()._model, teacher._tokenizer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids], device=model.device),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    return [int(t) for t in out[0, len(ids) :]]


# -- import and description -----------------------------------------------------------------


def test_import_leaves_torch_out() -> None:
    code = (
        "import sys, json, mstudy.teachers.transformers, mstudy.teachers.default;"
        "print(json.dumps([m for m in ('torch', 'transformers') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_is_a_teacher_with_clean_repr(teacher: TransformersTeacher, model_dir: Path) -> None:
    assert isinstance(teacher, Teacher)
    assert teacher.name == "transformers"
    text = repr(teacher)
    assert text.startswith("TransformersTeacher(") and str(model_dir) in text
    assert "batch_size=4" in text


def test_fingerprint_stable_and_sensitive(model_dir: Path, tmp_path: Path) -> None:
    a = TransformersTeacher(model_dir, dtype="float32").fingerprint
    assert TransformersTeacher(model_dir, dtype="float32", batch_size=7).fingerprint == a
    for device in ("cpu", "cuda", "cuda:1", "mps"):  # never the device itself
        assert TransformersTeacher(model_dir, dtype="float32", device=device).fingerprint == a
    assert TransformersTeacher(model_dir, dtype="bfloat16").fingerprint != a
    auto = TransformersTeacher(model_dir)  # "auto" is fingerprinted as the dtype it resolves to
    assert auto.fingerprint == TransformersTeacher(model_dir, dtype=auto.dtype).fingerprint
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert TransformersTeacher(other, dtype="float32").fingerprint != a
    assert TransformersTeacher(model_dir, dtype="float32", raw_prompt=True).fingerprint != a
    named = TransformersTeacher(model_dir, model_id="tiny==1").fingerprint
    assert named != auto.fingerprint
    assert TransformersTeacher(other, model_id="tiny==1").fingerprint == named


def test_fingerprint_of_loaded_model_objects(model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    first = TransformersTeacher(model, tokenizer=tokenizer).fingerprint
    again = AutoModelForCausalLM.from_pretrained(model_dir)
    assert TransformersTeacher(again, tokenizer=tokenizer).fingerprint == first
    with torch.no_grad():  # same config and name, other weights
        next(again.parameters())[0, 0] += 1.0
    assert TransformersTeacher(again, tokenizer=tokenizer).fingerprint != first


def test_dtype_validation() -> None:
    with pytest.raises(ValueError, match="unknown dtype"):
        TransformersTeacher("x", dtype="int3")
    assert TransformersTeacher("x", dtype="bf16").dtype == "bfloat16"
    assert TransformersTeacher("x", device="cpu").dtype == "float32"


# -- prompts ---------------------------------------------------------------------------------


def test_chat_template_applied(teacher: TransformersTeacher) -> None:
    request = ask()
    prompt = teacher.prompt_text(request)
    assert prompt == f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    [completion] = teacher.generate([request])
    expected = len(teacher._tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert completion.prompt_tokens == expected


def test_no_chat_template_is_a_clear_error_and_raw_mode_works(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "base", chat_template=None)
    with pytest.raises(TeacherError, match=r"no chat template.*raw_prompt=True"):
        list(TransformersTeacher(folder).generate([ask()]))
    raw = TransformersTeacher(folder, raw_prompt=True)
    request = Request((Message("system", "Be brief."), Message("user", "hi")))
    assert raw.prompt_text(request) == "System: Be brief.\n\nUser: hi\n\nAssistant:"
    [completion] = raw.generate([ask(max_new_tokens=5)])
    assert completion.ok and completion.completion_tokens >= 1


def test_raw_prompt_format_helpers() -> None:
    messages = [{"role": "user", "content": "Q?"}]
    assert format_raw_prompt(messages, "A:") == "User: Q?\n\nAssistant: A:"
    assert find_stop("abcXYdefXY", ["de", "XY"]) == 3
    assert apply_stop("abc\nUser: more", ["\nUser:"]) == ("abc", True)
    assert apply_stop("abc", ["z", ""]) == ("abc", False)


def test_prefill_included_and_respected(teacher: TransformersTeacher) -> None:
    prefill = "The capital is"
    request = ask(prefill=prefill, max_new_tokens=8)
    [completion] = teacher.generate([request])
    assert completion.text.startswith(prefill)
    prompt = teacher.prompt_text(request)
    assert prompt.endswith("<|im_start|>assistant\n" + prefill)
    tokens = reference_greedy(teacher, prompt, 8)
    continuation = teacher._tokenizer.decode(tokens, skip_special_tokens=True)
    assert completion.text == prefill + continuation
    [plain] = teacher.generate([ask(max_new_tokens=8)])
    assert plain.text != completion.text


# -- batching --------------------------------------------------------------------------------


def test_left_padded_batch_matches_alone_and_reference(cpu_teacher: TransformersTeacher) -> None:
    teacher = cpu_teacher
    short = ask("Hi", max_new_tokens=16)
    longer = [ask(QUESTION + " Explain step by step." * k, max_new_tokens=16) for k in (1, 3, 6)]
    [alone] = teacher.generate([short])
    batched = by_key(teacher.generate([*longer, short]))
    assert batched[short.key].text == alone.text
    assert batched[short.key].completion_tokens == alone.completion_tokens == 16
    tokens = reference_greedy(teacher, teacher.prompt_text(short), 16)
    assert alone.text == teacher._tokenizer.decode(tokens, skip_special_tokens=True)
    for request in longer:  # the longer ones too, each against its own unpadded run
        ref = reference_greedy(teacher, teacher.prompt_text(request), 16)
        assert batched[request.key].text == teacher._tokenizer.decode(ref, skip_special_tokens=True)


def test_every_request_gets_exactly_one_completion(teacher: TransformersTeacher) -> None:
    requests = [
        ask(f"Question number {i}? " * (1 + i % 4), max_new_tokens=4 + i % 3, temperature=i % 2)
        for i in range(11)
    ]
    requests.append(requests[0])  # a duplicate request still gets its own completion
    completions = list(teacher.generate(requests))
    assert collections.Counter(c.key for c in completions) == collections.Counter(
        r.key for r in requests
    )
    assert all(c.ok and c.teacher == teacher.fingerprint for c in completions)


def test_generate_is_lazy(model_dir: Path) -> None:
    teacher = TransformersTeacher(model_dir, batch_size=2, max_window=4)
    pulled = 0

    def endless() -> Iterator[Request]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield ask(f"Question {i}", max_new_tokens=2)

    stream = teacher.generate(endless())
    first = next(stream)
    assert first.ok
    assert pulled <= 5
    more = list(itertools.islice(stream, 5))
    assert len(more) == 5 and pulled <= 11
    stream.close()


def test_pick_batch_buckets_by_length_around_the_oldest(model_dir: Path) -> None:
    teacher = TransformersTeacher(model_dir, batch_size=3)
    lengths = [10, 50, 11, 49, 12, 48, 13]
    pool = [_Item(ask(f"q{i}"), [0] * n, (), i) for i, n in enumerate(lengths)]
    pool.append(_Item(ask("other", max_new_tokens=99), [0] * 10, (), 99))
    batch = teacher._pick_batch(pool)
    assert sorted(len(item.ids) for item in batch) == [10, 11, 12]
    assert len(pool) == 5 and all(item not in pool for item in batch)
    batch = teacher._pick_batch(pool)
    assert sorted(len(item.ids) for item in batch) == [48, 49, 50]
    batch = teacher._pick_batch(pool)
    assert [len(item.ids) for item in batch] == [13]  # the oldest's group: nothing else fits
    assert [item.order for item in teacher._pick_batch(pool)] == [99]
    assert pool == []


# -- sampling --------------------------------------------------------------------------------


def test_seeded_samples_are_reproducible_and_batch_independent(
    cpu_teacher: TransformersTeacher,
) -> None:
    teacher = cpu_teacher
    samples = [ask(temperature=1.0, top_p=0.9, seed=7, sample=i) for i in range(4)]
    first = by_key(teacher.generate(samples))
    second = by_key(teacher.generate(list(reversed(samples))))
    assert {k: c.text for k, c in first.items()} == {k: c.text for k, c in second.items()}
    assert len({c.text for c in first.values()}) > 1  # distinct samples
    [alone] = teacher.generate([samples[2]])
    assert alone.text == first[samples[2].key].text
    crowd = [ask("Something else entirely " * k, temperature=0.5) for k in range(1, 4)]
    mixed = by_key(teacher.generate([*crowd, samples[2]]))
    assert mixed[samples[2].key].text == alone.text
    other_seed = by_key(teacher.generate([ask(temperature=1.0, top_p=0.9, seed=8, sample=2)]))
    assert next(iter(other_seed.values())).text != alone.text


def test_greedy_is_deterministic_and_ignores_top_p(teacher: TransformersTeacher) -> None:
    [a] = teacher.generate([ask(temperature=0.0)])
    [b] = teacher.generate([ask(temperature=0.0, top_p=0.5)])
    assert a.text == b.text


# -- stopping and counting -------------------------------------------------------------------


def test_max_new_tokens_gives_length(teacher: TransformersTeacher) -> None:
    [completion] = teacher.generate([ask(max_new_tokens=7)])
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 7


def test_stop_string_cuts_text_and_stops_early(teacher: TransformersTeacher) -> None:
    [full] = teacher.generate([ask(max_new_tokens=30)])
    tokens = reference_greedy(teacher, teacher.prompt_text(ask()), 30)
    pieces = [teacher._tokenizer.decode([t]) for t in tokens]
    # a clean ASCII piece some way into the reply, whose first occurrence is that token
    index = next(
        i
        for i, piece in enumerate(pieces)
        if i >= 3
        and len(piece.strip()) >= 2
        and piece.isascii()
        and piece.isprintable()
        and full.text.find(piece) == len("".join(pieces[:i]))
    )
    stop = pieces[index]
    [cut] = teacher.generate([ask(max_new_tokens=30, stop=(stop,))])
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.completion_tokens == index + 1  # generation really stopped at the stop string
    assert full.completion_tokens == 30


def test_stop_strings_are_per_row_in_a_batch(cpu_teacher: TransformersTeacher) -> None:
    texts = [QUESTION, "Name a colour.", "Count to three, please."]
    fulls = [list(cpu_teacher.generate([ask(text, max_new_tokens=20)])) for text in texts]
    stopped = []
    for text, [full] in zip(texts, fulls, strict=True):
        stop = full.text[len(full.text) // 2 :][:2]  # two characters from the middle
        if not stop.strip():
            stop = full.text[len(full.text) // 2 :][:3]
        stopped.append(ask(text, max_new_tokens=20, stop=(stop,)))
    unwatched = ask("Hi", max_new_tokens=20)  # no stop strings: runs to max_new_tokens
    alone = [next(iter(cpu_teacher.generate([request]))) for request in stopped]
    batched = by_key(cpu_teacher.generate([*stopped, unwatched]))
    for request, single, [full] in zip(stopped, alone, fulls, strict=True):
        [stop] = request.params.stop
        got = batched[request.key]
        assert got.finish_reason == "stop" and got.text == full.text[: full.text.index(stop)]
        assert (got.text, got.completion_tokens) == (single.text, single.completion_tokens)
        assert got.completion_tokens < 20  # each row stopped early, at its own stop string
    assert batched[unwatched.key].completion_tokens == 20


def test_end_of_sequence_gives_stop(model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    teacher = TransformersTeacher(model, tokenizer=tokenizer)
    [first] = teacher.generate([ask(max_new_tokens=3)])
    token = tokenizer(first.text)["input_ids"][0]
    with torch.no_grad():  # make end-of-sequence beat the token greedy decoding picks first
        weight = model.lm_head.weight
        weight[tokenizer.eos_token_id] = 2.0 * weight[token]
    [done] = teacher.generate([ask(max_new_tokens=3)])
    assert done.finish_reason == "stop"
    assert done.text == ""
    assert done.completion_tokens == 1
    assert "PreTrainedModel" in repr(teacher) or "ForCausalLM" in repr(teacher)


def test_loaded_model_needs_tokenizer_object(model_dir: Path) -> None:
    with pytest.raises(TeacherError, match="tokenizer"):
        TransformersTeacher(object())
    with pytest.raises(TeacherError, match="tokenizer"):
        TransformersTeacher(object(), tokenizer=str(model_dir))


# -- failures ----------------------------------------------------------------------------------


def test_too_long_prompt_is_an_error_completion(teacher: TransformersTeacher) -> None:
    ok = ask(max_new_tokens=2)
    too_long = ask("word " * 2000, max_new_tokens=2)
    results = by_key(teacher.generate([too_long, ok]))
    assert results[ok.key].ok
    failed = results[too_long.key]
    assert failed.finish_reason == "error" and "context" in (failed.error or "")


def test_out_of_memory_halves_the_batch(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    teacher = TransformersTeacher(model_dir, batch_size=8)
    real = teacher._generate_batch
    sizes: list[int] = []

    def fake(batch: Any, name: str) -> list[Completion]:
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(batch, name)

    monkeypatch.setattr(teacher, "_generate_batch", fake)
    requests = [ask(f"q{i}", max_new_tokens=2) for i in range(8)]
    with caplog.at_level(logging.WARNING, logger="mstudy.teachers.transformers"):
        results = by_key(teacher.generate(requests))
    assert len(results) == 8 and all(c.ok for c in results.values())
    assert teacher.batch_size == 2
    assert sizes[:3] == [8, 4, 2]
    assert "out of memory" in caplog.text


def test_out_of_memory_at_batch_one_gives_up(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    teacher = TransformersTeacher(model_dir, batch_size=2)
    calls = 0

    def always(batch: Any, name: str) -> list[Completion]:
        nonlocal calls
        calls += 1
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(teacher, "_generate_batch", always)
    results = list(teacher.generate([ask("a"), ask("b")]))
    assert [c.finish_reason for c in results] == ["error", "error"]
    assert calls == 3


def test_failing_request_does_not_sink_its_batch(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher = TransformersTeacher(model_dir, batch_size=4)
    real = teacher._generate_batch
    bad = ask("poison", max_new_tokens=2)

    def fake(batch: Any, name: str) -> list[Completion]:
        if any(item.request.key == bad.key for item in batch):
            raise ValueError("boom")
        return real(batch, name)

    monkeypatch.setattr(teacher, "_generate_batch", fake)
    requests = [ask(f"q{i}", max_new_tokens=2) for i in range(3)] + [bad]
    results = by_key(teacher.generate(requests))
    assert len(results) == 4
    assert results[bad.key].finish_reason == "error"
    assert "ValueError: boom" in (results[bad.key].error or "")
    assert sum(c.ok for c in results.values()) == 3


def test_close_frees_and_reloads(model_dir: Path) -> None:
    teacher = TransformersTeacher(model_dir)
    with teacher:
        [a] = teacher.generate([ask(max_new_tokens=3)])
        assert "loaded=True" in repr(teacher)
    assert teacher._model is None and "loaded=False" in repr(teacher)
    [b] = teacher.generate([ask(max_new_tokens=3)])
    assert a.text == b.text


def test_tokenizer_without_pad_token_is_fine(model_dir: Path) -> None:
    assert build_tokenizer().pad_token is None
    teacher = TransformersTeacher(model_dir, batch_size=2)
    results = list(teacher.generate([ask("a", max_new_tokens=2), ask("b c d e", max_new_tokens=2)]))
    assert len(results) == 2 and all(c.ok for c in results)


def test_dry_run_counts_prompt_tokens_with_the_model_tokenizer(teacher: Any) -> None:
    from mstudy import Record, Reverse, Study

    record = {"id": "a", "text": "Ada wrote a program.", "subject": "Ada", "object": "a program"}
    study = Study(teacher, [Reverse()])
    estimate = study.estimate([record])
    request = Reverse().requests(Record.from_mapping(record))[0]
    assert estimate.prompt_tokens == teacher.count_prompt_tokens(request) > 0
    assert "tokenizer" in estimate.tokens_counted_by


def test_stop_tracker_when_every_watched_row_ended_by_end_of_sequence() -> None:
    """A step where the last watched rows all end with end-of-sequence leaves nothing to
    decode; older transformers (5.17) decode an empty batch as one empty text."""
    import torch

    class OldTokenizer:
        def batch_decode(self, batch: list[list[int]], **kwargs: Any) -> list[str]:
            return [" ".join(map(str, ids)) for ids in batch] or [""]

    tracker = _StopTracker(OldTokenizer(), 2, [("9",), ("9",), ()], frozenset({0}))
    done = tracker(torch.tensor([[5, 5, 1, 0], [5, 5, 2, 0], [5, 5, 3, 4]]), None)
    assert done.tolist() == [False, False, False]  # end-of-sequence is generate's to stop
    assert tracker.finished == [True, True, True] and tracker.ended_at == [None, None, None]
    tracker = _StopTracker(OldTokenizer(), 2, [("9",), ("3 9",)], frozenset({0}))
    done = tracker(torch.tensor([[5, 5, 1, 9], [5, 5, 3, 9]]), None)
    assert done.tolist() == [True, True] and tracker.ended_at == [2, 2]
