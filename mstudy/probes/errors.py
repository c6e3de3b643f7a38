"""The probe's errors: a malformed world, a run that cannot give an honest result, a leak."""

from __future__ import annotations

from mstudy.errors import MstudyError

__all__ = ["LeakError", "ProbeError", "WorldError"]


class WorldError(MstudyError, ValueError):
    """A world (generated or loaded from files) is malformed; the message says where."""


class ProbeError(MstudyError, RuntimeError):
    """The probe cannot produce an honest result (bad settings, a leak, a failed stage)."""


class LeakError(ProbeError):
    """A scored question (or its answer pair) appears verbatim in the student's training data."""
