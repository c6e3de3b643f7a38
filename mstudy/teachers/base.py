"""Helpers for writing teachers: stop strings, raw prompts, fingerprints, cache folders.

The built-in teachers use them and so may teacher plugins: everything in ``__all__`` is
public API. Nothing here imports a heavy library.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mstudy._hashing import stable_hash

#: Stop strings a raw (template-free) prompt adds, so a base model does not write both sides.
RAW_PROMPT_STOPS: tuple[str, ...] = ("\nUser:", "\nSystem:")

_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def find_stop(text: str, stops: Iterable[str]) -> int | None:
    """Index of the earliest occurrence of any stop string in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def apply_stop(text: str, stops: Iterable[str]) -> tuple[str, bool]:
    """Cut ``text`` before its first stop string; also say whether one was found."""
    index = find_stop(text, stops)
    if index is None:
        return text, False
    return text[:index], True


def format_raw_prompt(messages: Sequence[Mapping[str, str]], prefill: str | None = None) -> str:
    """Messages as plain text for models without a chat template.

    ``System: ...``, ``User: ...`` blocks separated by blank lines, ending with ``Assistant:``
    (followed by a space and the prefill when there is one).
    """
    parts = [
        f"{_ROLE_NAMES.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in messages
    ]
    parts.append(f"Assistant: {prefill}" if prefill else "Assistant:")
    return "\n\n".join(parts)


def quick_file_digest(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """A cheap content digest of a (possibly huge) file: its size, first and last ``chunk`` bytes.

    Good enough to tell two weight files apart (retrained weights differ everywhere) without
    reading gigabytes.
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            digest.update(f.read(chunk))
    return digest.hexdigest()[:16]


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
SMALL_FILE_NAMES = ("config.json", "generation_config.json")


def folder_digest(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Per-file digests of a local model folder: configs in full, weight files quickly."""
    folder = Path(folder)
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        if rel.startswith("."):
            continue
        if path.name in SMALL_FILE_NAMES:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        elif path.name.endswith(WEIGHT_SUFFIXES):
            out[rel] = quick_file_digest(path)
    return out


def fingerprint(name: str, parts: Mapping[str, Any]) -> str:
    """The fingerprint of a teacher: a stable hash of its name and the given parts."""
    return stable_hash({"teacher": name, **parts}, 24)


def cache_root() -> Path:
    """mstudy's cache folder: ``$MSTUDY_CACHE_DIR``, else ``$XDG_CACHE_HOME/mstudy``, else
    ``~/.cache/mstudy``."""
    explicit = os.environ.get("MSTUDY_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mstudy"


__all__ = [
    "RAW_PROMPT_STOPS",
    "apply_stop",
    "cache_root",
    "find_stop",
    "fingerprint",
    "folder_digest",
    "format_raw_prompt",
    "quick_file_digest",
]
