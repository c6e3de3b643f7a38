"""The public surface is pinned: ``mstudy.__all__`` and the documented modules. A change here
is a change users see, so it is a deliberate edit of this list (and the changelog)."""

from __future__ import annotations

import importlib
import pkgutil

import mstudy

EXPORTED = [
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


def test_exported_names_are_pinned() -> None:
    assert sorted(mstudy.__all__) == EXPORTED


def test_every_exported_name_imports() -> None:
    for name in mstudy.__all__:
        assert getattr(mstudy, name) is not None, name


def test_internal_modules_are_marked_and_public_ones_declare_their_names() -> None:
    """A module is internal when its name (or a package above it) starts with ``_``; every
    other module is public and says what it exports in ``__all__``."""
    public = []
    for info in pkgutil.walk_packages(mstudy.__path__, "mstudy."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts[1:]):
            continue
        public.append(info.name)
    missing = []
    for name in public:
        module = importlib.import_module(name)
        if not isinstance(getattr(module, "__all__", None), list | tuple):
            missing.append(name)
    assert missing == []
