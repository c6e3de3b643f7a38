"""Where a GGUF model comes from: a local file, a hub repository, or the embedded SmolLM2.

Nothing here imports ``llama_cpp``: resolving a model spec only looks at the file system.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mstudy import TeacherError
from mstudy.teachers.default import DISTRIBUTION, GGUF_FILE, embedded_gguf

__all__ = [
    "EMBEDDED",
    "EMBEDDED_DISTRIBUTION",
    "EMBEDDED_FILE",
    "ModelSource",
    "embedded_gguf",
    "resolve",
]

EMBEDDED = "smollm2"
EMBEDDED_DISTRIBUTION = DISTRIBUTION
EMBEDDED_FILE = GGUF_FILE
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved model spec: a local ``path``, or a hub ``repo_id`` with a ``filename``.

    ``label`` names the model in messages and reprs; ``origin`` says where it came from
    (``"file"``, ``"embedded"`` or ``"hub"``).
    """

    origin: str
    label: str
    path: Path | None = None
    repo_id: str | None = None
    filename: str | None = None


def resolve(model: str | os.PathLike[str] | None, filename: str | None = None) -> ModelSource:
    """Turn a model spec into a :class:`ModelSource`; TeacherError when a local file is missing.

    ``model`` is ``"smollm2"`` (or None) for the embedded model, a ``.gguf`` file, a folder
    (with ``filename``, or holding exactly one ``.gguf`` file), or a hub repository id
    ``owner/name`` with ``filename`` (a name or glob pattern, as ``Llama.from_pretrained``
    takes).
    """
    if model is None or (isinstance(model, str) and model.strip().lower() == EMBEDDED):
        if filename is not None:
            raise ValueError(f"model {EMBEDDED!r} is one file; do not pass filename={filename!r}")
        path, version = embedded_gguf()
        return ModelSource("embedded", f"{EMBEDDED_DISTRIBUTION}=={version}/{EMBEDDED_FILE}", path)
    spec = os.fspath(model)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _in_folder(path, filename)
    if path.is_file():
        if filename is not None:
            raise ValueError(f"model {spec!r} is a file; do not pass filename={filename!r}")
        return ModelSource("file", path.name, path)
    if filename is not None and _REPO_ID.match(spec) and not spec.startswith("."):
        return ModelSource("hub", f"{spec}/{filename}", repo_id=spec, filename=filename)
    if _REPO_ID.match(spec) and not spec.endswith(".gguf") and not spec.startswith("."):
        raise TeacherError(
            f"model {spec!r} is neither a local file nor a folder; for a hub repository, pass "
            "the GGUF file to use as filename=, e.g. filename='*Q4_K_M.gguf'"
        )
    raise TeacherError(f"model file not found: {spec!r} (resolved to {path.resolve()})")


def _in_folder(folder: Path, filename: str | None) -> ModelSource:
    if filename is not None:
        matches = sorted(p for p in folder.glob(filename) if p.is_file())
    else:
        matches = sorted(folder.glob("*.gguf"))
    if len(matches) != 1:
        found = ", ".join(p.name for p in matches) or "none"
        if filename is not None:
            rule = f": filename {filename!r} must match exactly one file (matched: {found})"
        else:
            rule = f" must hold exactly one .gguf file, or pass filename= (found: {found})"
        raise TeacherError(f"model folder {str(folder)!r}{rule}")
    return ModelSource("file", matches[0].name, matches[0])
