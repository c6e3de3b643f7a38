"""Sinks of mstudy: where accepted rows (and rejects) are stored.

The classes are imported lazily, on first attribute access, so ``import mstudy.sinks`` never
imports pyarrow or datasets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mstudy.sinks.base import AtomicFile, BaseSink
    from mstudy.sinks.hf import DatasetSink, SaveToDiskSink
    from mstudy.sinks.jsonl import JSONLSink
    from mstudy.sinks.parquet import ParquetSink
    from mstudy.sinks.sharded import ManifestError, Part, read_manifest, read_sharded
    from mstudy.sinks.training import (
        AlpacaSink,
        MessagesSink,
        PromptCompletionSink,
        ShareGPTSink,
        TextSink,
        TrainingFormatSink,
    )

__all__ = [
    "AlpacaSink",
    "AtomicFile",
    "BaseSink",
    "DatasetSink",
    "JSONLSink",
    "ManifestError",
    "MessagesSink",
    "ParquetSink",
    "Part",
    "PromptCompletionSink",
    "SaveToDiskSink",
    "ShareGPTSink",
    "TextSink",
    "TrainingFormatSink",
    "read_manifest",
    "read_sharded",
]

_MODULES = {
    "AtomicFile": "mstudy.sinks.base",
    "BaseSink": "mstudy.sinks.base",
    "DatasetSink": "mstudy.sinks.hf",
    "JSONLSink": "mstudy.sinks.jsonl",
    "ParquetSink": "mstudy.sinks.parquet",
    "SaveToDiskSink": "mstudy.sinks.hf",
    **{
        name: "mstudy.sinks.sharded"
        for name in ("ManifestError", "Part", "read_manifest", "read_sharded")
    },
    **{
        name: "mstudy.sinks.training"
        for name in (
            "AlpacaSink",
            "MessagesSink",
            "PromptCompletionSink",
            "ShareGPTSink",
            "TextSink",
            "TrainingFormatSink",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
