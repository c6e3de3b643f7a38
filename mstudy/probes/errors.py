"""The probe's errors, as the probe's modules import them (they live in :mod:`mstudy.errors`,
with every other exception of mstudy)."""

from __future__ import annotations

from mstudy.errors import LeakError, ProbeError, WorldError

__all__ = ["LeakError", "ProbeError", "WorldError"]
