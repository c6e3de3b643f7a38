"""Parquet sink: buffered row groups through ``pq.ParquetWriter``, committed atomically.

The schema is fixed by the first row group: inferred from its rows (nested dicts become
structs, lists become lists), with every type that is still unknown (all values ``None``,
empty lists, empty dicts) stored as string. Later rows are cast to that schema; a column that
first appears later, or a value that cannot be cast, raises a :class:`SinkError` naming the
column. Pass ``schema=`` to fix the schema yourself. pyarrow is imported only when a sink is
built, and this module's arrow helpers are shared with :mod:`mstudy.sinks.hf`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mstudy.errors import SinkError
from mstudy.sinks.base import AtomicFile, BaseSink, import_optional, sink_error
from mstudy.sinks.jsonl import to_jsonable

__all__ = ["ParquetSink"]


def _pyarrow(purpose: str) -> Any:
    return import_optional("pyarrow", "parquet", purpose)


# -- arrow helpers (shared with mstudy.sinks.hf) ------------------------------------------------


def row_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Column names of ``rows`` in order of first appearance."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in seen:
                seen[key] = None
    return list(seen)


def _arrow_friendly(value: Any, depth: int = 0) -> Any:
    """Second chance for values pyarrow refuses: sets to lists, keys to str, odd objects to JSON."""
    if value is None or isinstance(value, (str, bool, int, float, bytes)):
        return value
    if depth > 100:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _arrow_friendly(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_arrow_friendly(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_arrow_friendly(v, depth + 1) for v in to_jsonable(value)]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _arrow_friendly(tolist(), depth + 1)
    return _arrow_friendly(to_jsonable(value), depth + 1)


def column_array(pa: Any, name: str, values: list[Any], where: str) -> Any:
    """An arrow array for one column, inferring its type; SinkError names the column."""
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    try:
        return pa.array([_arrow_friendly(v) for v in values])
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise SinkError(f"{where}: column {name!r} cannot be stored: {exc}") from exc


def rows_to_table(pa: Any, rows: Sequence[Mapping[str, Any]], where: str) -> Any:
    """A table of ``rows`` with one column per key seen; missing keys become null."""
    columns = row_columns(rows)
    arrays = [column_array(pa, c, [row.get(c) for row in rows], where) for c in columns]
    return pa.Table.from_arrays(arrays, names=columns) if columns else pa.table({})


def fill_null_types(pa: Any, dtype: Any) -> Any:
    """``dtype`` with every null type (and empty struct) replaced by string, recursively."""
    types = pa.types
    if types.is_null(dtype):
        return pa.string()
    if types.is_struct(dtype):
        if dtype.num_fields == 0:
            return pa.string()
        return pa.struct(
            [
                dtype.field(i).with_type(fill_null_types(pa, dtype.field(i).type))
                for i in range(dtype.num_fields)
            ]
        )
    if types.is_list(dtype):
        return pa.list_(fill_null_types(pa, dtype.value_type))
    if types.is_large_list(dtype):
        return pa.large_list(fill_null_types(pa, dtype.value_type))
    if types.is_map(dtype):
        return pa.map_(fill_null_types(pa, dtype.key_type), fill_null_types(pa, dtype.item_type))
    return dtype


def _is_string(pa: Any, dtype: Any) -> bool:
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype))


def _is_nested(pa: Any, dtype: Any) -> bool:
    t = pa.types
    return bool(t.is_struct(dtype) or t.is_list(dtype) or t.is_large_list(dtype) or t.is_map(dtype))


def conform_array(pa: Any, array: Any, dtype: Any, name: str, where: str) -> Any:
    """Cast ``array`` to ``dtype``: structs field by field (missing fields null), lists by value.

    Nested values stored into a string column become JSON text. A field ``dtype`` does not
    have, or a value that cannot be cast safely, raises a SinkError naming ``name``.
    """
    t = pa.types
    if array.type == dtype:
        return array
    if t.is_null(array.type):
        return pa.nulls(len(array), dtype)
    if _is_string(pa, dtype) and _is_nested(pa, array.type):
        texts = [
            None if v is None else json.dumps(to_jsonable(v), ensure_ascii=False)
            for v in array.to_pylist()
        ]
        return pa.array(texts, dtype)
    if t.is_struct(array.type) and t.is_struct(dtype):
        known = {dtype.field(i).name for i in range(dtype.num_fields)}
        for i in range(array.type.num_fields):
            extra = array.type.field(i).name
            if extra not in known:
                raise SinkError(
                    f"{where}: column {name + '.' + extra!r} is not in the schema "
                    f"(fields of {name!r}: {', '.join(sorted(known)) or 'none'}); it first "
                    "appears after the schema was fixed"
                )
        present = {array.type.field(i).name for i in range(array.type.num_fields)}
        children = []
        for i in range(dtype.num_fields):
            field = dtype.field(i)
            if field.name in present:
                child = conform_array(
                    pa, array.field(field.name), field.type, f"{name}.{field.name}", where
                )
            else:
                child = pa.nulls(len(array), field.type)
            children.append(child)
        mask = array.is_null() if array.null_count else None
        return pa.StructArray.from_arrays(children, fields=list(dtype), mask=mask)
    if (t.is_list(array.type) or t.is_large_list(array.type)) and (
        t.is_list(dtype) or t.is_large_list(dtype)
    ):
        if array.offset:
            array = pa.concat_arrays([array])  # normalise offsets
        values = conform_array(pa, array.values, dtype.value_type, f"{name}[]", where)
        mask = array.is_null() if array.null_count else None
        cls = pa.LargeListArray if t.is_large_list(dtype) else pa.ListArray
        offsets = array.offsets
        if t.is_large_list(dtype) != t.is_large_list(array.type):
            offsets = offsets.cast(pa.int64() if t.is_large_list(dtype) else pa.int32())
        return cls.from_arrays(offsets, values, type=dtype, mask=mask)
    try:
        return array.cast(dtype, safe=True)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise SinkError(
            f"{where}: column {name!r} has type {array.type}, which cannot be cast to the "
            f"schema's {dtype}: {exc}"
        ) from exc


def known_column_types(pa: Any) -> dict[str, Any]:
    """Arrow types of the columns mstudy itself writes, so a first batch of nulls cannot
    fix them to the wrong type (``provenance.params.seed`` is an integer even when unset)."""
    params = pa.struct(
        [
            ("max_new_tokens", pa.int64()),
            ("temperature", pa.float64()),
            ("top_p", pa.float64()),
            ("seed", pa.int64()),
            ("stop", pa.list_(pa.string())),
        ]
    )
    provenance = pa.struct(
        [
            ("source_id", pa.string()),
            ("source_ids", pa.list_(pa.string())),
            ("strategy", pa.string()),
            ("strategy_version", pa.string()),
            ("template_hash", pa.string()),
            ("teacher", pa.string()),
            ("params", params),
            ("sample", pa.int64()),
            ("finish_reason", pa.string()),
        ]
    )
    return {"provenance": provenance}


def conform_table(pa: Any, table: Any, schema: Any, where: str) -> Any:
    """``table`` with exactly ``schema``'s columns: cast, missing ones null, new ones an error."""
    names = set(schema.names)
    extra = [c for c in table.column_names if c not in names]
    if extra:
        raise SinkError(
            f"{where}: column {extra[0]!r} is not in the schema fixed by the first rows "
            f"(columns: {', '.join(schema.names) or 'none'}); a column must appear in the first "
            "batch, or pass an explicit schema"
        )
    arrays = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name).combine_chunks()
            arrays.append(conform_array(pa, column, field.type, field.name, where))
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# -- the sink -----------------------------------------------------------------------------------


class ParquetSink(BaseSink):
    """Writes rows to a Parquet file at ``path``, atomically replacing it on ``close()``.

    Rows are buffered and written in row groups of ``row_group_size``. ``schema`` (a
    ``pyarrow.Schema``) fixes the columns instead of inferring them from the first row group.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        row_group_size: int = 10_000,
        *,
        schema: Any = None,
        compression: str = "zstd",
    ) -> None:
        super().__init__()
        if row_group_size < 1:
            raise ValueError(f"row_group_size must be >= 1, got {row_group_size}")
        self._pa = _pyarrow("ParquetSink")
        self._pq = import_optional("pyarrow.parquet", "parquet", "ParquetSink")
        self.row_group_size = row_group_size
        self.compression = compression
        self.schema: Any = schema
        self._file = AtomicFile(path)
        self.path: Path = self._file.target
        self._buffer: list[dict[str, Any]] = []
        self._writer: Any = None
        self._rows_flushed = 0

    def _describe(self) -> str:
        return str(self.path)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        self._buffer.extend(rows)
        while len(self._buffer) >= self.row_group_size:
            chunk = self._buffer[: self.row_group_size]
            del self._buffer[: self.row_group_size]
            self._flush(chunk)

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        pa = self._pa
        first, last = self._rows_flushed + 1, self._rows_flushed + len(rows)
        where = f"{self.path} (rows {first}-{last})"
        table = rows_to_table(pa, rows, where)
        if self.schema is None:
            known = known_column_types(pa)
            self.schema = pa.schema(
                [
                    field.with_type(known.get(field.name) or fill_null_types(pa, field.type))
                    for field in table.schema
                ]
            )
        table = conform_table(pa, table, self.schema, where)
        try:
            if self._writer is None:
                self._writer = self._pq.ParquetWriter(
                    self._file.handle, self.schema, compression=self.compression
                )
            self._writer.write_table(table, row_group_size=self.row_group_size)
        except OSError as exc:
            raise sink_error("write", self._file.partial, exc) from exc
        except pa.ArrowException as exc:
            raise SinkError(f"cannot write {where}: {exc}") from exc
        self._rows_flushed = last

    def _commit(self) -> None:
        if self._buffer:
            rows, self._buffer = self._buffer, []
            self._flush(rows)
        if self._writer is None:  # no rows: an empty file with the schema (or none)
            schema = self.schema if self.schema is not None else self._pa.schema([])
            self._writer = self._pq.ParquetWriter(
                self._file.handle, schema, compression=self.compression
            )
        try:
            self._writer.close()
        except OSError as exc:
            raise sink_error("write", self._file.partial, exc) from exc
        self._file.commit()

    def _discard(self) -> None:
        self._buffer = []
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with contextlib.suppress(Exception):  # the partial is removed anyway
                writer.close()
        self._file.discard()
