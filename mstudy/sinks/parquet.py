"""Parquet sink: buffered row groups through ``pq.ParquetWriter``, committed atomically.

The schema is inferred from the rows (nested dicts become structs, lists become lists) and
covers every column that any row group has: it widens as row groups come (see
:class:`ParquetSink`; values of conflicting types in one column become JSON text), and every
type still unknown at the end (all values ``None``, empty lists, empty dicts) is stored as
string. Pass ``schema=`` to fix the schema yourself: a column it lacks, or a value that cannot
be cast to it, then raises a :class:`SinkError` naming the column. pyarrow is imported only
when a sink is built, and this module's arrow helpers are shared with :mod:`mstudy.sinks.hf`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mstudy.errors import SinkError
from mstudy.sinks.base import AtomicFile, BaseSink, import_optional, sink_error
from mstudy.sinks.jsonl import to_jsonable
from mstudy.sinks.sharded import ShardWriter

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
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    try:  # values of several kinds in one column (an int and a str): JSON text of each
        return pa.array(_texts(values), pa.string())
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise SinkError(f"{where}: column {name!r} cannot be stored: {exc}") from exc


def _texts(values: list[Any]) -> list[str | None]:
    """Strings as they are, other values as JSON text, None as null."""
    return [
        v if v is None or isinstance(v, str) else json.dumps(to_jsonable(v), ensure_ascii=False)
        for v in values
    ]


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
    if t.is_null(array.type) or array.null_count == len(array):
        return pa.nulls(len(array), dtype)
    if _is_string(pa, array.type) and _is_nested(pa, dtype):
        # stored as JSON text while the type was unknown (``{}`` rows): read it back
        try:
            return pa.array(
                [None if v is None else json.loads(v) for v in array.to_pylist()], dtype
            )
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise SinkError(f"{where}: column {name!r} cannot be stored as {dtype}: {exc}") from exc
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
                    f"(fields of {name!r}: {', '.join(sorted(known)) or 'none'})"
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
        failure: Exception = exc
    try:
        if t.is_integer(array.type) and t.is_floating(dtype):  # as pa.array([1, 0.5]) does
            return array.cast(dtype, safe=False)
        if _is_string(pa, dtype):
            return pa.array(_texts(array.to_pylist()), dtype)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        failure = exc
    raise SinkError(
        f"{where}: column {name!r} has type {array.type}, which cannot be cast to the "
        f"schema's {dtype}: {failure}"
    ) from failure


_TIME_UNITS = ("s", "ms", "us", "ns")


def widen_type(pa: Any, a: Any, b: Any) -> Any:
    """The narrowest arrow type holding values of both ``a`` and ``b``; never fails.

    Null fits any type and an empty struct any struct; structs merge their fields, lists their
    values; integers widen to int64, integers and floats to float64; any other pair of
    different types becomes string (values as JSON text).
    """
    t = pa.types
    if a == b:
        return a
    if t.is_null(a):
        return b
    if t.is_null(b):
        return a
    if t.is_struct(a) and t.is_struct(b):
        fields = {a.field(i).name: a.field(i).type for i in range(a.num_fields)}
        for i in range(b.num_fields):
            f = b.field(i)
            fields[f.name] = widen_type(pa, fields[f.name], f.type) if f.name in fields else f.type
        return pa.struct(list(fields.items()))
    if (t.is_list(a) or t.is_large_list(a)) and (t.is_list(b) or t.is_large_list(b)):
        value = widen_type(pa, a.value_type, b.value_type)
        return pa.large_list(value) if t.is_large_list(a) or t.is_large_list(b) else pa.list_(value)
    if t.is_integer(a) and t.is_integer(b):
        if t.is_signed_integer(a) and t.is_signed_integer(b):
            return a if a.bit_width >= b.bit_width else b
        return pa.float64()
    if (t.is_integer(a) or t.is_floating(a)) and (t.is_integer(b) or t.is_floating(b)):
        return pa.float64()
    if _is_string(pa, a) and _is_string(pa, b):
        return pa.large_string()
    if t.is_timestamp(a) and t.is_timestamp(b) and a.tz == b.tz:
        return pa.timestamp(max(a.unit, b.unit, key=_TIME_UNITS.index), a.tz)
    if t.is_large_string(a) or t.is_large_string(b):
        return pa.large_string()
    return pa.string()


def widen_schema(pa: Any, a: Any, b: Any, pinned: Mapping[str, Any] | None = None) -> Any:
    """``a`` and ``b`` merged column by column (in order of first appearance) by
    :func:`widen_type`; ``pinned`` columns keep their given type."""
    pinned = pinned or {}
    fields = {f.name: f.type for f in a}
    for f in b:
        if f.name in pinned:
            fields[f.name] = pinned[f.name]
        elif f.name in fields:
            fields[f.name] = widen_type(pa, fields[f.name], f.type)
        else:
            fields[f.name] = f.type
    return pa.schema(list(fields.items()))


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
            ("generation", pa.int64()),
            ("parents", pa.list_(pa.string())),
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
            f"{where}: column {extra[0]!r} is not in the given schema "
            f"(columns: {', '.join(schema.names) or 'none'})"
        )
    arrays = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name).combine_chunks()
            arrays.append(conform_array(pa, column, field.type, field.name, where))
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _shard_schemas(sink: BaseSink) -> tuple[Any, Any]:
    """A written shard's inferred schema (nulls kept) and the schema it was written with."""
    assert isinstance(sink, ParquetSink)
    return sink._merged, sink.schema


# -- the sink -----------------------------------------------------------------------------------


class ParquetSink(BaseSink):
    """Writes rows to a Parquet file at ``path``, atomically replacing it on ``close()``.

    Rows are buffered and written in row groups of ``row_group_size``. The schema covers every
    column any row has, whenever it first appears: each row group's inferred schema is merged
    into the schema so far (:func:`widen_type`). While it stays the same, row groups go straight
    into the output; when it changes (a new column, a new nested field, a null column that gets
    values, an int column that gets strings), the following row groups go to a new segment
    file beside the output, and ``close()`` rewrites the segments, one row group at a time,
    into one file with the final schema. Columns whose type is still unknown at the end (only
    nulls, empty lists or dicts) are stored as string. ``schema`` (a ``pyarrow.Schema``) fixes
    the columns instead: a column it lacks, or a value it cannot hold, raises SinkError.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        row_group_size: int = 10_000,
        *,
        schema: Any = None,
        compression: str = "zstd",
        rows_per_shard: int | None = None,
        workers: int | None = None,
        executor: str = "thread",
    ) -> None:
        super().__init__()
        if row_group_size < 1:
            raise ValueError(f"row_group_size must be >= 1, got {row_group_size}")
        self._pa = _pyarrow("ParquetSink")
        self._pq = import_optional("pyarrow.parquet", "parquet", "ParquetSink")
        self.row_group_size = row_group_size
        self.compression = compression
        self.schema: Any = schema
        """The schema written so far (the given one, or the one inferred from the rows)."""
        self._fixed = schema is not None
        self._merged: Any = None  # the inferred schema, unknown types kept as null
        self._shards: ShardWriter | None = None
        if rows_per_shard is not None:
            self._shards = ShardWriter(
                path,
                suffix=".parquet",
                make=functools.partial(
                    ParquetSink,
                    row_group_size=row_group_size,
                    schema=schema,
                    compression=compression,
                ),
                rows_per_shard=rows_per_shard,
                workers=workers,
                executor=executor,
                summarize=_shard_schemas,
                unify=None if self._fixed else self._unify,
            )
            self.path: Path = self._shards.path
            return
        if workers is not None or executor != "thread":
            raise ValueError("workers and executor need rows_per_shard (a sharded output)")
        self._file = AtomicFile(path)
        self.path = self._file.target
        self._buffer: list[dict[str, Any]] = []
        self._writer: Any = None
        self._segments: list[Path] = []  # files of the row groups written under older schemas
        self._rows_flushed = 0

    def _describe(self) -> str:
        return str(self.path)

    def label_study(self, study: str) -> None:
        """Record the study (the sha256 of its fingerprint) in a sharded output's manifest."""
        if self._shards is not None:
            self._shards.study = study

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if self._shards is not None:
            self._shards.add(rows)
            return
        self._buffer.extend(rows)
        while len(self._buffer) >= self.row_group_size:
            chunk = self._buffer[: self.row_group_size]
            del self._buffer[: self.row_group_size]
            self._flush(chunk)

    def _segment_path(self, number: int) -> Path:
        partial = self._file.partial
        return partial.with_name(f"{partial.name}.{number}")

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        pa = self._pa
        first, last = self._rows_flushed + 1, self._rows_flushed + len(rows)
        where = f"{self.path} (rows {first}-{last})"
        table = rows_to_table(pa, rows, where)
        if not self._fixed:
            known = known_column_types(pa)
            merged = widen_schema(pa, self._merged or pa.schema([]), table.schema, known)
            schema = pa.schema([f.with_type(fill_null_types(pa, f.type)) for f in merged])
            self._merged = merged
            if self._writer is not None and schema != self.schema:
                self._close_writer()
                self._segments.append(self._current_path())
            self.schema = schema
        table = conform_table(pa, table, self.schema, where)
        try:
            if self._writer is None:
                sink = self._file.handle if not self._segments else str(self._current_path())
                self._writer = self._pq.ParquetWriter(
                    sink, self.schema, compression=self.compression
                )
            self._writer.write_table(table, row_group_size=self.row_group_size)
        except OSError as exc:
            raise sink_error("write", self._file.partial, exc) from exc
        except pa.ArrowException as exc:
            raise SinkError(f"cannot write {where}: {exc}") from exc
        self._rows_flushed = last

    def _current_path(self) -> Path:
        """The file the current writer writes: the partial output, or the latest segment."""
        return self._segment_path(len(self._segments)) if self._segments else self._file.partial

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        try:
            writer.close()
            self._file.handle.flush()
        except OSError as exc:
            raise sink_error("write", self._file.partial, exc) from exc

    def _prepare(self) -> None:
        """Write what is buffered, close the writer and, when the schema grew, rewrite the
        row groups to the final schema: all that can fail before the file is published."""
        if self._shards is not None:
            self._shards.prepare()
            return
        if self._buffer:
            rows, self._buffer = self._buffer, []
            self._flush(rows)
        if self._writer is None:  # no rows: an empty file with the schema (or none)
            schema = self.schema if self.schema is not None else self._pa.schema([])
            self._writer = self._pq.ParquetWriter(
                self._file.handle, schema, compression=self.compression
            )
        if self._segments:
            self._segments.append(self._current_path())
        self._close_writer()
        if self._segments:
            self._rewrite()

    def _commit(self) -> None:
        if self._shards is not None:
            self._shards.commit()
        else:
            self._file.commit()

    def _unify(self, schemas: list[Any], files: list[Path], pmap: Any) -> list[int]:
        """Give every shard the schema of all rows (as one file would have), rewriting the
        shards whose own schema differs (in threads, one shard at a time each)."""
        pa = self._pa
        known = known_column_types(pa)
        merged = pa.schema([])
        for shard_merged, _ in schemas:
            if shard_merged is not None:
                merged = widen_schema(pa, merged, shard_merged, known)
        self.schema = pa.schema([f.with_type(fill_null_types(pa, f.type)) for f in merged])
        stale = [i for i, (_, written) in enumerate(schemas) if written != self.schema]
        pmap(self._conform_file, [files[i] for i in stale])
        return stale

    def _conform_file(self, path: Path) -> None:
        pa, pq = self._pa, self._pq
        where = f"{self.path}/{path.name}"
        merged = path.with_name(path.name + ".conformed")
        try:
            table = conform_table(pa, pq.read_table(path), self.schema, where)
            with open(merged, "wb") as handle:
                writer = pq.ParquetWriter(handle, self.schema, compression=self.compression)
                writer.write_table(table, row_group_size=self.row_group_size)
                writer.close()
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(merged, path)
        except OSError as exc:
            raise sink_error("write", merged, exc) from exc
        except pa.ArrowException as exc:
            raise SinkError(f"cannot rewrite {where} with the schema of all rows: {exc}") from exc

    def _rewrite(self) -> None:
        """Copy every segment's row groups, cast to the final schema, into one file that
        replaces the partial output (memory: one row group)."""
        pa, pq = self._pa, self._pq
        merged = self._segment_path(0).with_suffix(".merged")
        done = 0
        try:
            with open(merged, "wb") as handle:
                writer = pq.ParquetWriter(handle, self.schema, compression=self.compression)
                for segment in self._segments:
                    with pq.ParquetFile(segment) as parquet:
                        for group in range(parquet.num_row_groups):
                            table = parquet.read_row_group(group)
                            where = f"{self.path} (rows {done + 1}-{done + table.num_rows})"
                            table = conform_table(pa, table, self.schema, where)
                            writer.write_table(table, row_group_size=self.row_group_size)
                            done += table.num_rows
                writer.close()
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(merged, self._file.partial)
        except OSError as exc:
            raise sink_error("write", merged, exc) from exc
        except pa.ArrowException as exc:
            raise SinkError(f"cannot rewrite {self.path} with its final schema: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                merged.unlink()
            self._remove_segments()

    def _remove_segments(self) -> None:
        for segment in self._segments:
            if segment != self._file.partial:
                with contextlib.suppress(FileNotFoundError):
                    segment.unlink()
        self._segments = []

    def _discard(self) -> None:
        if self._shards is not None:
            self._shards.discard()
            return
        self._buffer = []
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with contextlib.suppress(Exception):  # the partial is removed anyway
                writer.close()
        leftovers = [self._segment_path(n) for n in range(1, len(self._segments) + 2)]
        for path in [*leftovers, self._segment_path(0).with_suffix(".merged")]:
            with contextlib.suppress(OSError):
                path.unlink()
        self._segments = []
        self._file.discard()
