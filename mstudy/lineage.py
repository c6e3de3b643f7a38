"""Lineage: which rows an example came from, and how many studies away from original data.

A row of original data (a source record no study wrote) is generation 0. An example made
from a record of generation ``g`` is generation ``g + 1``, and its ``parents`` are the
record's own parents, then the record's id, then any other rows the strategy combined
(``source_ids``): the ids of the rows it came from, oldest first, back to the source record.

A record's lineage is read from the row: an mstudy output row carries it in
``provenance.generation`` and ``provenance.parents`` (a row written before lineage existed,
with ``provenance.source_id``, counts as generation 1 with its source ids as parents); other
rows may give top-level ``generation`` (an integer >= 0) and ``parents`` (a list of ids)
columns. So a dataset written by mstudy and studied again continues the count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from mstudy.records import Example, Record

__all__ = ["ORIGINAL", "Lineage", "lineage_of", "lineage_problem", "read_lineage"]


class Lineage(NamedTuple):
    """A record's place in the generations: its ``generation`` and ``parents`` (oldest first)."""

    generation: int = 0
    parents: tuple[str, ...] = ()

    def child(self, record_id: str, example: Example) -> Example:
        """``example`` (made from the record ``record_id``) with its lineage set."""
        prov = example.provenance
        parents = (*self.parents, record_id)
        others = [s for s in prov.source_ids if s != record_id and s not in parents]
        example.provenance = prov._replace(
            generation=self.generation + 1, parents=(*parents, *others)
        )
        return example


ORIGINAL = Lineage()


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _ids(value: object) -> tuple[str, ...] | None:
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
    ):
        return tuple(str(v) for v in value)
    return None


def read_lineage(record: Record) -> tuple[Lineage | None, str | None, str]:
    """(lineage, field at fault, problem): lineage None and a problem when ``record``'s
    ``provenance`` holds a malformed one."""
    return _read(record.fields)


def _read(fields: Mapping[str, Any]) -> tuple[Lineage | None, str | None, str]:
    prov = fields.get("provenance")
    if isinstance(prov, Mapping) and ("generation" in prov or "source_id" in prov):
        if "generation" not in prov:  # an mstudy row from before lineage: one study away
            ids = _ids(prov.get("source_ids") or [prov.get("source_id")])
            return Lineage(1, ids or ()), None, ""
        generation, parents = prov.get("generation"), _ids(prov.get("parents", []))
        if not isinstance(generation, int) or not _is_count(generation):
            return None, "provenance.generation", f"must be an integer >= 0, got {generation!r}"
        if parents is None:
            return None, "provenance.parents", "must be a list of ids"
        return Lineage(generation, parents), None, ""
    if "generation" in fields and "parents" in fields:
        generation, parents = fields["generation"], _ids(fields["parents"])
        if isinstance(generation, int) and _is_count(generation) and parents is not None:
            return Lineage(generation, parents), None, ""
    return ORIGINAL, None, ""


def lineage_of(record: Record) -> Lineage:
    """``record``'s lineage (:data:`ORIGINAL`, generation 0, when the row carries none; a
    malformed one, which :func:`lineage_problem` names, counts as none)."""
    lineage, _, _ = _read(record.fields)
    return lineage or ORIGINAL


def lineage_problem(record: Record) -> tuple[str, str] | None:
    """(field, problem) when ``record``'s ``provenance`` holds a lineage that is malformed."""
    lineage, field, problem = _read(record.fields)
    return None if lineage is not None else (field or "provenance", problem)
