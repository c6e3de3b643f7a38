"""mstudy: machine studying.

A teacher model studies a training set before a student is trained on it: it writes
explanations, reversed statements, paraphrases and step-by-step solutions, which are
validated, filtered and stored with provenance::

    import mstudy

    study = mstudy.Study("default", ["reverse", "paraphrase"], sinks=["out/enriched.jsonl"])
    report = study.run("facts.jsonl")

Importing this package is cheap: torch, transformers and datasets load only when a feature
needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mstudy._version import __version__
from mstudy.budget import Budget, Estimate
from mstudy.chain import Chain
from mstudy.errors import (
    AmbiguousPluginError,
    CapabilityError,
    ConfigError,
    FingerprintError,
    LockedError,
    MstudyError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
    RecordError,
    SinkError,
    TeacherError,
    TemplateError,
)
from mstudy.filters import ExactDedup, LengthFilter, RowFilter
from mstudy.interfaces import Filter, Sink, Strategy, Teacher
from mstudy.records import (
    Completion,
    Example,
    GenerationParams,
    Message,
    Provenance,
    Record,
    Rejection,
    Request,
)
from mstudy.report import Report
from mstudy.rounds import Rounds
from mstudy.strategies import (
    ChainOfThought,
    Explain,
    Paraphrase,
    Reject,
    Reverse,
    TemplateStrategy,
)
from mstudy.study import Study, StudyRun
from mstudy.teachers.scripted import ScriptedTeacher

if TYPE_CHECKING:
    from mstudy.documents import Documents
    from mstudy.sinks.hf import DatasetSink, SaveToDiskSink
    from mstudy.sinks.jsonl import JSONLSink
    from mstudy.sinks.parquet import ParquetSink

_LAZY = {
    "Documents": "mstudy.documents",
    "JSONLSink": "mstudy.sinks.jsonl",
    "ParquetSink": "mstudy.sinks.parquet",
    "DatasetSink": "mstudy.sinks.hf",
    "SaveToDiskSink": "mstudy.sinks.hf",
    "TransformersTeacher": "mstudy.teachers.transformers",
    "RemoteTeacher": "mstudy.teachers.remote",
    "BatchTeacher": "mstudy.teachers.batch",
    "RayTeacher": "mstudy.teachers.ray_pool",
    "VLLMTeacher": "mstudy.teachers.vllm",
    "default_teacher": "mstudy.teachers.default",
}


def __getattr__(name: str) -> Any:
    """Import the heavier public names on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mstudy' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "AmbiguousPluginError",
    "BatchTeacher",
    "Budget",
    "CapabilityError",
    "Chain",
    "ChainOfThought",
    "Completion",
    "ConfigError",
    "DatasetSink",
    "Documents",
    "Estimate",
    "ExactDedup",
    "Example",
    "Explain",
    "Filter",
    "FingerprintError",
    "GenerationParams",
    "JSONLSink",
    "LengthFilter",
    "LockedError",
    "Message",
    "MstudyError",
    "Paraphrase",
    "ParquetSink",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "Provenance",
    "RayTeacher",
    "Record",
    "RecordError",
    "Reject",
    "Rejection",
    "RemoteTeacher",
    "Report",
    "Request",
    "Reverse",
    "Rounds",
    "RowFilter",
    "SaveToDiskSink",
    "ScriptedTeacher",
    "Sink",
    "SinkError",
    "Strategy",
    "Study",
    "StudyRun",
    "Teacher",
    "TeacherError",
    "TemplateError",
    "TemplateStrategy",
    "TransformersTeacher",
    "VLLMTeacher",
    "__version__",
    "default_teacher",
]
