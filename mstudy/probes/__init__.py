"""Probes: train a tiny student on studied data and measure what the studying did.

The reversal probe (``mstudy probe reversal``) builds a world of invented facts, has a teacher
reverse and paraphrase its statements through a real :class:`~mstudy.Study`, trains a small
transformer from scratch on each version of the data and reports how well it answers
questions in the direction it was never told::

    from mstudy.probes import run_probe

    result = run_probe(teacher="default")   # or "rules", any teacher name, a Teacher object
    print(result)                           # the table; result.to_dict() for JSON

Importing this package is cheap; torch and transformers load when a student is trained.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mstudy.probes.errors import WorldError
    from mstudy.probes.outputs import write_outputs
    from mstudy.probes.result import ProbeResult
    from mstudy.probes.reversal import run_probe
    from mstudy.probes.student import StudentConfig
    from mstudy.probes.world import World
    from mstudy.probes.world_files import load_world
    from mstudy.probes.world_generator import generate_world

_LAZY = {
    "ProbeResult": "mstudy.probes.result",
    "run_probe": "mstudy.probes.reversal",
    "write_outputs": "mstudy.probes.outputs",
    "StudentConfig": "mstudy.probes.student",
    "World": "mstudy.probes.world",
    "WorldError": "mstudy.probes.errors",
    "generate_world": "mstudy.probes.world_generator",
    "load_world": "mstudy.probes.world_files",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mstudy.probes' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ProbeResult",
    "StudentConfig",
    "World",
    "WorldError",
    "generate_world",
    "load_world",
    "run_probe",
    "write_outputs",
]
