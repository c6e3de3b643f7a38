"""Fixtures and helpers shared by the test modules (instead of a copy in each)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai_stub import StubServer


@pytest.fixture
def stub() -> Iterator[StubServer]:
    """A fresh OpenAI-compatible stub server on 127.0.0.1 per test: requests a test abandons
    cannot leak into the next one."""
    with StubServer() as server:
        yield server


@pytest.fixture
def no_ambient_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key from the environment reaches a teacher built by the test."""
    for name in ("MSTUDY_API_KEY", "OPENAI_API_KEY", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON Lines file, split on newlines only (U+0085 and U+2028 are text)."""
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]
