"""Helpers both probes use: spec and fact files, invented names, the run's environment, and
the per-seed statistics of a result table.

The reversal probe's world files and generator and the composition probe read specs and
facts, invent names and describe the environment through these, so a world generated or read
by either is the same.
"""

from __future__ import annotations

import json
import platform
import random
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from mstudy.probes.errors import WorldError
from mstudy.probes.world import Fact
from mstudy.probes.world_checks import check_name

__all__ = [
    "FACT_KEYS",
    "environment",
    "invented_name",
    "mean",
    "read_facts",
    "read_spec",
    "seed_range",
    "seed_stats",
]

FACT_KEYS = frozenset({"id", "subject", "relation", "object", "scored"})
"""The keys a line of ``facts.jsonl`` may have."""

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "kr", "tr", "th", "sh", "qu", "h")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o")
_CODAS = ("", "", "n", "r", "l", "s", "th", "v", "x", "nd", "rk")


def invented_name(rng: random.Random) -> str:
    """A pronounceable invented name of 2-3 syllables (``Zapoth``, ``Rigux``)."""
    syllables = rng.choice((2, 2, 3))
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def read_spec(path: Path) -> Any:
    """The parsed content of a ``.toml`` or ``.json`` relation spec (a WorldError otherwise)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorldError(f"{path}: cannot read the relation spec: {exc.strerror or exc}") from exc
    if path.suffix.lower() == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
        try:
            return tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise WorldError(f"{path}: not valid TOML: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WorldError(f"{path}: not valid JSON: {exc}") from exc
    raise WorldError(f"{path}: a relation spec must be a .toml or .json file")


def read_facts(facts_path: Path, relations: Collection[str]) -> list[tuple[Fact, bool | None]]:
    """The facts of a JSONL file, each with its ``scored`` flag if the line gives one;
    ``relations``: the relation names the spec defines."""
    try:
        lines = facts_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorldError(f"{facts_path}: cannot read the facts: {exc}") from exc
    parsed: list[tuple[Fact, bool | None]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{facts_path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorldError(f"{where}: not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise WorldError(f"{where}: a fact must be a JSON object")
        unknown = sorted(set(row) - FACT_KEYS)
        if unknown:
            raise WorldError(
                f"{where}: unknown key(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(FACT_KEYS))}"
            )
        for key in ("subject", "relation", "object"):
            if key not in row:
                raise WorldError(f"{where}: missing {key!r}")
            check_name(row[key], where, key)
        if row["relation"] not in relations:
            raise WorldError(
                f"{where}: unknown relation {row['relation']!r}; the spec defines "
                f"{', '.join(sorted(relations))}"
            )
        scored = row.get("scored")
        if scored is not None and not isinstance(scored, bool):
            raise WorldError(f"{where}: 'scored' must be true or false")
        fact_id = str(row.get("id", f"line{number}"))
        parsed.append((Fact(fact_id, row["subject"], row["relation"], row["object"]), scored))
    if not parsed:
        raise WorldError(f"{facts_path}: no facts")
    return parsed


def environment() -> dict[str, Any]:
    """Python, machine, CPU count, and the torch, transformers and mstudy versions."""
    import os

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch
        import transformers

        info["torch"] = torch.__version__
        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    from mstudy import __version__

    info["mstudy"] = __version__
    return info


def mean(values: Sequence[float]) -> float:
    """The mean, NaN when there is none."""
    return sum(values) / len(values) if values else float("nan")


def seed_stats(values: Sequence[float]) -> dict[str, Any]:
    """``per_seed``, ``mean``, ``min``, ``max`` (None when there are no values)."""
    if not values:
        return {"per_seed": [], "mean": None, "min": None, "max": None}
    return {"per_seed": list(values), "mean": mean(values), "min": min(values), "max": max(values)}


def seed_range(values: Sequence[float]) -> str:
    """``"42.5% [10%-75%]"``: the mean and the min-max over seeds (one value: just it)."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.1%}"
    return f"{mean(values):.1%} [{min(values):.0%}-{max(values):.0%}]"
