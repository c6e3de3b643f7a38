"""The ``llamacpp`` teacher, with the real llama.cpp and the embedded SmolLM2 GGUF."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import mstudy
import pytest
from mstudy import (
    ConfigError,
    GenerationParams,
    Message,
    Request,
    Reverse,
    TeacherError,
)
from mstudy import plugins as registry

from mstudy_llamacpp import LlamaCppTeacher
from mstudy_llamacpp.teacher import built_with_amx

FACTS = [
    {
        "id": "brandt",
        "text": "Olaf Brandt is the father of Lena Brandt.",
        "subject": "Olaf Brandt",
        "object": "Lena Brandt",
    },
    {
        "id": "tower",
        "text": "The Zorvath Tower stands in the city of Meridia.",
        "subject": "The Zorvath Tower",
        "object": "Meridia",
    },
    {
        "id": "curie",
        "text": "Marie Curie discovered polonium.",
        "subject": "Marie Curie",
        "object": "polonium",
    },
]


def ask(
    text: str,
    *,
    sample: int = 0,
    prefill: str | None = None,
    source_id: str = "r1",
    **params: Any,
) -> Request:
    return Request(
        messages=(Message("user", text),),
        params=GenerationParams(**{"max_new_tokens": 24, "temperature": 0.0, **params}),
        sample=sample,
        prefill=prefill,
        source_id=source_id,
        strategy="test",
    )


def run(teacher: LlamaCppTeacher, *requests: Request) -> dict[str, mstudy.Completion]:
    completions = list(teacher.generate(requests))
    assert len(completions) == len(requests)
    return {c.key: c for c in completions}


# -- without llama.cpp ------------------------------------------------------------------------


def test_importing_and_creating_does_not_import_llama_cpp(gguf: Path) -> None:
    code = (
        "import sys\n"
        "import mstudy_llamacpp\n"
        "teacher = mstudy_llamacpp.LlamaCppTeacher()\n"
        "print(repr(teacher))\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in done.stdout
    assert "loaded=False" in done.stdout


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "absent.gguf"
    with pytest.raises(TeacherError, match=r"model file not found: '.*models/absent\.gguf'"):
        LlamaCppTeacher(missing)
    with pytest.raises(TeacherError, match="model file not found"):
        registry.create("teachers", "llamacpp", model=str(missing))


def test_a_hub_repository_needs_a_filename() -> None:
    with pytest.raises(TeacherError, match="pass the GGUF file to use as filename="):
        LlamaCppTeacher("someone/some-model-GGUF")
    teacher = LlamaCppTeacher("someone/some-model-GGUF", filename="*Q4_K_M.gguf")
    assert teacher.source.origin == "hub"
    assert repr(teacher).startswith("LlamaCppTeacher('someone/some-model-GGUF/*Q4_K_M.gguf'")


def test_a_folder_must_hold_one_gguf_file(tmp_path: Path, gguf: Path) -> None:
    (tmp_path / "a.gguf").symlink_to(gguf)
    assert LlamaCppTeacher(tmp_path).source.path == tmp_path / "a.gguf"
    (tmp_path / "b.gguf").symlink_to(gguf)
    with pytest.raises(TeacherError, match=r"exactly one \.gguf file.*found: a\.gguf, b\.gguf"):
        LlamaCppTeacher(tmp_path)
    assert LlamaCppTeacher(tmp_path, filename="b.gguf").source.path == tmp_path / "b.gguf"


def test_a_hub_model_is_fetched_with_llama_from_pretrained(llama_cpp: None) -> None:
    # no network here: offline, the hub client refuses at once, and the error names the model
    code = (
        "from mstudy import TeacherError\n"
        "from mstudy_llamacpp import LlamaCppTeacher\n"
        "teacher = LlamaCppTeacher('someone/some-model-GGUF', filename='*Q4_K_M.gguf')\n"
        "try:\n"
        "    teacher.load()\n"
        "except TeacherError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "cannot load model 'someone/some-model-GGUF/*Q4_K_M.gguf'" in done.stdout
    assert "offline" in done.stdout.lower()  # it did ask the hub


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_ctx": 8}, "n_ctx must be >= 16"),
        ({"min_p": 1.5}, r"min_p must be in \[0, 1\)"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"raw_prompt": True, "chat_template": "{{ x }}"}, "give chat_template or raw_prompt"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_teacher(
    gguf: Path, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"teacher 'llamacpp': {message}"):
        registry.create("teachers", "llamacpp", **params)


def test_without_llama_cpp_the_error_says_what_to_install(gguf: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['llama_cpp'] = None  # as if llama-cpp-python were not installed\n"
        "from mstudy import TeacherError\n"
        "from mstudy_llamacpp import LlamaCppTeacher\n"
        "try:\n"
        "    LlamaCppTeacher().fingerprint\n"
        "except TeacherError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install 'mstudy-llamacpp[llama]'" in done.stdout


def test_mstudy_plugins_lists_the_installed_distribution() -> None:
    try:
        version = metadata.version("mstudy-llamacpp")
    except metadata.PackageNotFoundError:
        pytest.skip("mstudy-llamacpp is not installed (pip install -e plugins/mstudy-llamacpp)")
    done = subprocess.run(
        [sys.executable, "-m", "mstudy", "plugins", "--json", "--kind", "teachers"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [r for r in json.loads(done.stdout) if r["name"] == "llamacpp"]
    assert [(r["distribution"], r["version"]) for r in rows] == [("mstudy-llamacpp", version)]


# -- generation with the real model -----------------------------------------------------------


def test_generates_with_usage_counts(teacher: LlamaCppTeacher) -> None:
    short = ask("Name one colour.", max_new_tokens=16)
    long = ask("Write a long story about a lighthouse keeper.", max_new_tokens=5)
    done = run(teacher, short, long)
    reply = done[short.key]
    assert reply.ok and reply.text.strip()
    assert reply.teacher == teacher.fingerprint
    assert reply.prompt_tokens == teacher.count_prompt_tokens(short) > 0
    assert 0 < reply.completion_tokens <= 16
    cut = done[long.key]
    assert (cut.finish_reason, cut.completion_tokens) == ("length", 5)


def test_the_chat_template_comes_from_the_gguf_file(teacher: LlamaCppTeacher) -> None:
    request = Request(
        messages=(Message("system", "Be brief."), Message("user", "Hi.")), prefill="Hello"
    )
    prompt = teacher.prompt_text(request)
    # SmolLM2's template (ChatML), from the file's metadata, then the prefill
    assert prompt.index("Be brief.") < prompt.index("Hi.")
    assert prompt.endswith("<|im_start|>assistant\nHello")


def test_a_chat_template_can_be_given(teacher: LlamaCppTeacher) -> None:
    template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] "
    custom = LlamaCppTeacher(n_ctx=1024, chat_template=template)
    request = ask("Say yes.")
    assert custom.prompt_text(request) == "[user] Say yes.\n[assistant] "
    assert custom.fingerprint != teacher.fingerprint
    custom.close()


def test_seeded_samples_are_reproducible_in_any_order(teacher: LlamaCppTeacher) -> None:
    requests = [
        ask("Invent a name for a cat.", sample=i, temperature=1.0, seed=7, max_new_tokens=12)
        for i in range(4)
    ]
    forward = run(teacher, *requests)
    backward = run(teacher, *reversed(requests))
    assert {k: c.text for k, c in forward.items()} == {k: c.text for k, c in backward.items()}
    with LlamaCppTeacher(n_ctx=1024) as fresh:
        again = run(fresh, requests[2])
    assert again[requests[2].key].text == forward[requests[2].key].text
    assert len({c.text for c in forward.values()}) > 1  # each sample has its own seed


def test_stop_strings_cut_at_the_earliest(teacher: LlamaCppTeacher) -> None:
    prompt = "List five fruits, separated by commas."
    free = run(teacher, ask(prompt, max_new_tokens=32))
    text = next(iter(free.values())).text
    words = [w for w in text.split() if len(w) > 3]
    assert len(words) >= 3, text
    early, late = words[1], words[-1]
    stopped = run(teacher, ask(prompt, max_new_tokens=32, stop=(late, early)))
    reply = next(iter(stopped.values()))
    assert reply.text == text[: text.index(early)]
    assert reply.finish_reason == "stop"


def test_the_reply_begins_with_the_prefill(teacher: LlamaCppTeacher) -> None:
    plain = ask("Restate: Olaf Brandt is the father of Lena Brandt.", max_new_tokens=16)
    prefilled = ask(
        "Restate: Olaf Brandt is the father of Lena Brandt.", max_new_tokens=16, prefill="Lena"
    )
    done = run(teacher, plain, prefilled)
    reply = done[prefilled.key]
    assert reply.text.startswith("Lena") and len(reply.text) > len("Lena")
    assert reply.prompt_tokens > done[plain.key].prompt_tokens


def test_raw_prompt_for_models_without_a_template(llama_cpp: None) -> None:
    with LlamaCppTeacher(n_ctx=1024, raw_prompt=True) as raw:
        request = ask("Name one colour.", max_new_tokens=24)
        assert raw.prompt_text(request) == "User: Name one colour.\n\nAssistant:"
        (reply,) = raw.generate([request])
    assert reply.ok and "\nUser:" not in reply.text


AMX_HOST_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
    "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)


def test_an_amx_build_is_recognised_from_the_system_info() -> None:
    assert built_with_amx(AMX_HOST_INFO)
    assert not built_with_amx(AMX_HOST_INFO.replace("AMX_INT8 = 1", "AMX_INT8 = 0"))
    assert not built_with_amx(AMX_HOST_INFO.replace("AMX_INT8 = 1 | ", ""))
    assert not built_with_amx("")


def test_loading_warns_exactly_when_llama_cpp_has_amx_kernels(
    llama_cpp: None, caplog: pytest.LogCaptureFixture
) -> None:
    import llama_cpp as bindings

    amx = built_with_amx(bindings.llama_print_system_info().decode())
    with caplog.at_level("WARNING", logger="mstudy_llamacpp"), LlamaCppTeacher(n_ctx=256) as t:
        t.load()
    warned = [r for r in caplog.records if "AMX" in r.getMessage()]
    assert len(warned) == int(amx)
    if warned:
        assert "-DGGML_NATIVE=OFF" in warned[0].getMessage()


def test_a_prompt_too_long_fails_alone_naming_the_request(llama_cpp: None) -> None:
    with LlamaCppTeacher(n_ctx=64) as small:
        long = ask("Tell me about this: " + "words and more words " * 40, source_id="big")
        short = ask("Hi.", max_new_tokens=4)
        done = run(small, long, short)
    failed = done[long.key]
    assert failed.finish_reason == "error" and failed.error is not None
    assert f"request {long.key} (test sample 0 of record 'big')" in failed.error
    assert "the context is n_ctx=64" in failed.error
    assert done[short.key].ok


def test_fingerprint_follows_the_settings_and_the_file_content(
    teacher: LlamaCppTeacher, gguf: Path, tmp_path: Path
) -> None:
    assert LlamaCppTeacher(n_ctx=1024).fingerprint == teacher.fingerprint
    assert LlamaCppTeacher(n_ctx=1024, n_threads=1).fingerprint == teacher.fingerprint
    others = [
        LlamaCppTeacher(n_ctx=512),
        LlamaCppTeacher(n_ctx=1024, top_k=40),
        LlamaCppTeacher(n_ctx=1024, min_p=0.05),
        LlamaCppTeacher(n_ctx=1024, repeat_penalty=1.1),
        LlamaCppTeacher(n_ctx=1024, raw_prompt=True),
    ]
    prints = {t.fingerprint for t in others}
    assert len(prints) == len(others) and teacher.fingerprint not in prints
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(gguf, copy)
    assert LlamaCppTeacher(copy, n_ctx=1024).fingerprint == teacher.fingerprint  # not the path
    with copy.open("r+b") as f:  # change one weight byte near the end
        f.seek(-1000, 2)
        byte = f.read(1)
        f.seek(-1000, 2)
        f.write(bytes([byte[0] ^ 0x01]))
    assert LlamaCppTeacher(copy, n_ctx=1024).fingerprint != teacher.fingerprint
    for other in others:
        other.close()


# -- whole studies ----------------------------------------------------------------------------


def test_study_end_to_end_with_a_built_in_strategy(
    teacher: LlamaCppTeacher, tmp_path: Path
) -> None:
    out, rejects = tmp_path / "reversed.jsonl", tmp_path / "rejects.jsonl"
    strategy = Reverse(n=2, params={"seed": 0, "max_new_tokens": 32})
    report = mstudy.Study(teacher, [strategy], sinks=[out], rejects=rejects).run(FACTS)
    assert report.requests == 6
    assert report.accepted + report.rejected == 6
    assert report.accepted >= 1, report.rejections()
    assert report.prompt_tokens > 0 and report.completion_tokens > 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == report.accepted
    objects = {f["id"]: f["object"] for f in FACTS}
    for row in rows:
        assert row["provenance"]["teacher"] == teacher.fingerprint
        assert row["text"].startswith(objects[row["source_id"]])  # the prefill, then the model
    assert len(rejects.read_text().splitlines()) == report.rejected


def test_study_by_plugin_name_from_a_toml_config(llama_cpp: None, tmp_path: Path) -> None:
    try:
        metadata.version("mstudy-llamacpp")
    except metadata.PackageNotFoundError:
        pytest.skip("mstudy-llamacpp is not installed (pip install -e plugins/mstudy-llamacpp)")
    (tmp_path / "facts.jsonl").write_text("\n".join(json.dumps(f) for f in FACTS[:2]) + "\n")
    (tmp_path / "study.toml").write_text(
        "[source]\npath = 'facts.jsonl'\n\n"
        "[teacher]\nname = 'llamacpp'\nmodel = 'smollm2'\nn_ctx = 1024\n\n"
        "[[strategies]]\nname = 'explain'\nparams = { max_new_tokens = 48, seed = 1 }\n\n"
        "[[sinks]]\nname = 'jsonl'\npath = 'out/explained.jsonl'\n\n"
        "[rejects]\nname = 'jsonl'\npath = 'out/rejects.jsonl'\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mstudy", "run", str(tmp_path / "study.toml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    kept = (tmp_path / "out" / "explained.jsonl").read_text().splitlines()
    turned_down = (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()
    assert len(kept) + len(turned_down) == 2
    assert all(json.loads(r)["provenance"]["teacher"] for r in kept)


# -- structured output ------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 40},
        "born": {"type": "integer"},  # llama-cpp-python's converter ignores minimum/maximum
        "field": {"type": "string", "enum": ["physics", "chemistry", "music"]},
    },
    "required": ["name", "born", "field"],
    "additionalProperties": False,
}


def test_declares_schema_constraint_truthfully(gguf: Path) -> None:
    from mstudy.interfaces import SchemaConstrained

    assert isinstance(LlamaCppTeacher(gguf), SchemaConstrained)
    assert LlamaCppTeacher(gguf).constrains_schema
    assert not LlamaCppTeacher(gguf, structured_output=False).constrains_schema


def test_schema_requests_are_decoded_under_the_json_schema_grammar(
    teacher: LlamaCppTeacher,
) -> None:
    from mstudy._schema import check_reply

    prompts = ["Tell me about Marie Curie.", "Who was Mozart?", "Describe a chemist, briefly."]
    requests = [
        # as JSON text: a mapping would be stored with sorted keys, losing the property order
        ask(p, max_new_tokens=80, temperature=0.8, seed=i, response_schema=json.dumps(PERSON))
        for i, p in enumerate(prompts)
    ]
    completions = run(teacher, *requests)
    for request in requests:
        completion = completions[request.key]
        assert completion.finish_reason == "stop", completion.text
        verdict = check_reply(request.params.response_schema or "", completion.text)
        assert verdict.ok, (completion.text, verdict.problem)
        assert list(verdict.value) == ["name", "born", "field"]  # in the schema's order


def test_without_the_constraint_the_same_requests_are_free_text(llama_cpp: None) -> None:
    with LlamaCppTeacher(n_ctx=1024, structured_output=False) as free:
        request = ask("Who was Mozart?", max_new_tokens=24, response_schema=PERSON)
        text = run(free, request)[request.key].text
    assert not text.lstrip().startswith("{"), text


def test_facts_study_on_llama_cpp_keeps_only_checked_facts(
    teacher: LlamaCppTeacher, tmp_path: Path
) -> None:
    from mstudy import Study
    from mstudy.strategies.facts import Facts

    records = [
        {"id": "curie", "text": "Marie Curie discovered polonium in Paris."},
        {"id": "tower", "text": "The Zorvath Tower stands in the city of Meridia."},
    ]
    out, rejects = tmp_path / "facts.jsonl", tmp_path / "rejects.jsonl"
    report = Study(teacher, [Facts()], sinks=[out], rejects=rejects).run(records)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rejected = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert report.accepted == len(rows) and report.rejected == len(rejected)
    # the grammar holds: a schema rejection can only be a reply that ran out of tokens
    assert all("cut off" in r["detail"] for r in rejected if r["reason"] == "schema"), rejected
    for row in rows:
        source = next(r["text"] for r in records if r["id"] == row["source_id"]).casefold()
        assert row["subject"].casefold() in source and row["object"].casefold() in source
