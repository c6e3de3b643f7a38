"""Reading source records: lists of dicts, ``datasets`` objects, JSON Lines and Parquet files.

:func:`iter_source` streams: files are read line by line (JSON Lines) or batch by batch
(Parquet), datasets row by row, so memory does not grow with the source. A row that cannot
become a record (not a mapping, undecodable line, bad id) is yielded as a
:class:`~mstudy.records.Rejection` at stage ``input`` and reading goes on; a source that
cannot be read at all raises :class:`~mstudy.errors.ConfigError` or
:class:`~mstudy.errors.RecordError` naming it.

Rejection reasons: ``not_a_mapping`` (an item of an iterable), ``invalid_utf8``,
``invalid_json``, ``not_an_object`` (a JSON line that is not ``{...}``), ``invalid_record``
(the row's id field is unusable), ``duplicate_id`` (an id field's value met before in the
same source: the later row is refused), and the field checks of :mod:`mstudy._fieldcheck`
(``invalid_unicode``, ``too_deeply_nested``, ``unsupported_value``), which name the field.
Ids are kept as given and converted to ``str``: ``7`` and ``"7"`` are the same id.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import os
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mstudy._fieldcheck import SeenIds, check_fields
from mstudy.errors import ConfigError, RecordError
from mstudy.records import Record, Rejection, id_problem

__all__ = [
    "JSONL_SUFFIXES",
    "PARQUET_SUFFIXES",
    "RecordSource",
    "iter_source",
    "source_length",
]

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
_PARQUET_BATCH = 1024
_PREVIEW = 80


# -- public API ---------------------------------------------------------------------------------


@runtime_checkable
class RecordSource(Protocol):
    """A source that makes its own records (and input rejections), such as
    :class:`mstudy.Documents`: ``records`` yields them in a stable order, each with a stable
    id, the id also under ``id_field`` in its fields."""

    def records(self, *, id_field: str = "id") -> Iterator[Record | Rejection]: ...


def iter_source(source: object, *, id_field: str = "id") -> Iterator[Record | Rejection]:
    """Yield a :class:`Record` (or an input :class:`Rejection`) for each row of ``source``.

    ``source`` is an iterable of mappings, a ``datasets.Dataset``/``IterableDataset``, or a
    path (``str``/``Path``) to a ``.jsonl``/``.json``/``.jsonl.gz`` file (JSON Lines; a
    ``.json`` file holding one JSON array is read whole), a ``.parquet`` file, or a folder
    written by ``Dataset.save_to_disk``, or a :class:`RecordSource` (:class:`mstudy.Documents`).
    The source is checked now (missing file, unknown extension: :class:`ConfigError`); rows
    are read lazily as the iterator is consumed.
    """
    if isinstance(source, RecordSource):
        return source.records(id_field=id_field)
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source))
        kind = _path_kind(path)
        if kind == "parquet":
            _import_pyarrow_parquet(path)
            return _iter_parquet(path, id_field)
        if kind == "saved_dataset":
            return _iter_rows(_rows_of_dataset(_load_from_disk(path)), id_field, path.name)
        return _iter_json(path, id_field)
    _refuse_non_row_sources(source)
    if _is_hf_dataset(source):
        return _iter_rows(_rows_of_dataset(source), id_field, None)
    if _is_dataframe(source):
        rows: Iterable[Any] = source.to_dict(orient="records")  # type: ignore[attr-defined]
        return _iter_rows(rows, id_field, None)
    if isinstance(source, Iterable):
        return _iter_rows(source, id_field, None)
    raise ConfigError(
        f"cannot read records from a {type(source).__name__}: pass an iterable of dicts, a "
        "datasets.Dataset or IterableDataset, or a path to a .jsonl or .parquet file"
    )


def source_length(source: object) -> int | None:
    """The number of rows of ``source`` when known without reading it, else None.

    Sized sources give ``len``; Parquet files their metadata row count; saved datasets their
    length; JSON Lines files, generators and iterable datasets None.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source))
        try:
            kind = _path_kind(path)
            if kind == "parquet":
                pq = _import_pyarrow_parquet(path)
                with pq.ParquetFile(path) as parquet:
                    return int(parquet.metadata.num_rows)
            if kind == "saved_dataset":
                return len(_load_from_disk(path))
        except Exception:  # a progress bar is not worth an error
            return None
        return None
    if isinstance(source, (bytes, bytearray, Mapping)):
        return None
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None


# -- kinds of source ----------------------------------------------------------------------------


def _path_kind(path: Path) -> str:
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return "saved_dataset"
        raise ConfigError(
            f"source {path} is a folder but not a dataset saved with Dataset.save_to_disk "
            "(no state.json)"
        )
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        kind = "parquet"
    elif name.endswith(JSONL_SUFFIXES):
        kind = "json"
    else:
        raise ConfigError(
            f"source {path}: unknown file type; expected one of "
            f"{', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)}"
        )
    if not path.exists():
        raise ConfigError(f"source file not found: {path}")
    return kind  # a regular file, or a named pipe / device streaming the same format


def _refuse_non_row_sources(source: object) -> None:
    if isinstance(source, (bytes, bytearray, memoryview)):
        raise ConfigError("cannot read records from bytes: pass a path or an iterable of dicts")
    if isinstance(source, Mapping):
        splits = ", ".join(repr(str(k)) for k in list(source)[:10])
        if _type_names(source) & {"DatasetDict", "IterableDatasetDict"}:
            raise ConfigError(f"source is a {type(source).__name__}: pick a split ({splits})")
        raise ConfigError(
            "source is a single mapping; pass an iterable of row mappings (e.g. a list of dicts)"
        )


def _type_names(obj: object) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__}


def _is_hf_dataset(source: object) -> bool:
    """True for ``datasets.Dataset``/``IterableDataset``, without importing ``datasets``."""
    module = sys.modules.get("datasets")
    if module is None:
        return False
    kinds = tuple(getattr(module, n, None) for n in ("Dataset", "IterableDataset"))
    return isinstance(source, tuple(k for k in kinds if isinstance(k, type)))


def _is_dataframe(source: object) -> bool:
    return "DataFrame" in _type_names(source) and callable(getattr(source, "to_dict", None))


def _rows_of_dataset(dataset: Any) -> Iterator[Any]:
    """Rows of a datasets object as plain Python values (any tensor format is dropped)."""
    fmt = getattr(dataset, "format", None)  # Dataset: a dict; IterableDataset: _formatting
    if isinstance(fmt, Mapping):
        kind, options = fmt.get("type"), {"columns": fmt.get("columns")}
    else:
        kind = getattr(getattr(dataset, "_formatting", None), "format_type", None)
        options = {}
    if kind not in (None, "python") and callable(getattr(dataset, "with_format", None)):
        dataset = dataset.with_format(None, **options)
    yield from dataset


def _load_from_disk(path: Path) -> Any:
    from mstudy.sinks.base import import_optional

    datasets = import_optional("datasets", "datasets", f"reading the saved dataset {path}")
    loaded = datasets.load_from_disk(str(path))
    if not _is_hf_dataset(loaded):
        splits = ", ".join(str(k) for k in loaded)
        raise ConfigError(
            f"source {path} holds several splits ({splits}); pass one split's folder, "
            f"e.g. {path / next(iter(loaded), 'train')}"
        )
    return loaded


def _import_pyarrow_parquet(path: Path) -> Any:
    from mstudy.sinks.base import import_optional

    return import_optional("pyarrow.parquet", "parquet", f"reading {path.name}")


# -- readers ------------------------------------------------------------------------------------


def _input_rejection(
    source_id: str, reason: str, detail: str, field: str | None = None
) -> Rejection:
    return Rejection(source_id=source_id, stage="input", reason=reason, detail=detail, field=field)


class _Rows:
    """Turns one source's rows into records: checks their fields, derives ids, and refuses an
    id read from the id field that an earlier row of the same source had (``duplicate_id``;
    rows without an id get a content hash, and identical ones are left to the dedup filter)."""

    def __init__(self, id_field: str) -> None:
        self.id_field = id_field
        self.seen = SeenIds()

    def __call__(self, row: object, index: int, source_id: str) -> Record | Rejection:
        if isinstance(row, Record):  # already a record: kept as it is, once checked
            fields: Mapping[Any, Any] = row.fields
        elif isinstance(row, Mapping):
            fields = row
        else:
            return _input_rejection(
                source_id,
                "not_a_mapping",
                f"{source_id}: expected a mapping of fields, got {type(row).__name__}",
            )
        problem = check_fields(fields)
        if problem is not None:
            return _input_rejection(
                source_id, problem.reason, f"{source_id}: {problem.detail}", problem.field
            )
        if isinstance(row, Record):
            record = row
        else:
            bad_id = id_problem(fields, self.id_field)
            if bad_id is not None:
                return _input_rejection(
                    source_id, "invalid_record", f"{source_id}: {bad_id}", self.id_field
                )
            record = Record.from_mapping(fields, index, self.id_field)
        if fields.get(self.id_field) is not None and not self.seen.add(record.id):
            return _input_rejection(
                source_id,
                "duplicate_id",
                f"{source_id}: id {_preview(record.id)} (field {self.id_field!r}) was already "
                "given to an earlier record of this source",
                self.id_field,
            )
        return record


def _iter_rows(
    rows: Iterable[Any], id_field: str, label: str | None
) -> Iterator[Record | Rejection]:
    prefix = f"{label}#" if label else "#"
    make = _Rows(id_field)
    for index, row in enumerate(rows):
        yield make(row, index, f"{prefix}{index}")


def _iter_parquet(path: Path, id_field: str) -> Iterator[Record | Rejection]:
    pq = _import_pyarrow_parquet(path)
    import pyarrow as pa

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"cannot read Parquet file {path}: {exc}") from exc
    index = 0
    make = _Rows(id_field)
    with parquet:
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH):
            for row in batch.to_pylist():
                yield make(row, index, f"{path.name}#{index}")
                index += 1


def _open_json(path: Path) -> io.BufferedIOBase:
    try:
        if path.name.lower().endswith(".gz"):
            return gzip.open(path, "rb")
        return open(path, "rb")
    except OSError as exc:
        raise ConfigError(f"cannot open source {path}: {exc.strerror or exc}") from exc


def _starts_with_array(handle: io.BufferedIOBase) -> bool:
    """True when the first non-whitespace byte is ``[`` (rewinds the handle)."""
    first = b""
    while True:
        chunk = handle.read(4096)
        if not chunk:
            break
        stripped = chunk.lstrip()
        if stripped.startswith(codecs.BOM_UTF8):
            stripped = stripped[len(codecs.BOM_UTF8) :].lstrip()
        if stripped:
            first = stripped[:1]
            break
    handle.seek(0)
    return first == b"["


def _iter_json(path: Path, id_field: str) -> Iterator[Record | Rejection]:
    lineno = 0
    try:
        with _open_json(path) as handle:
            if path.name.lower().endswith((".json", ".json.gz")) and _starts_with_array(handle):
                yield from _iter_json_array(path, handle, id_field)
                return
            index = 0
            make = _Rows(id_field)
            for lineno, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                yield _parse_line(path, lineno, raw, index, make)
                index += 1
    except (OSError, EOFError, zlib.error) as exc:
        raise RecordError(
            f"source {path}: reading failed after line {lineno}: {exc}",
            record_id=f"{path.name}:{lineno + 1}",
        ) from exc


def _preview(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= _PREVIEW else text[:_PREVIEW] + "…")


def _parse_line(path: Path, lineno: int, raw: bytes, index: int, make: _Rows) -> Record | Rejection:
    source_id = f"{path.name}:{lineno}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _input_rejection(
            source_id,
            "invalid_utf8",
            f"{source_id}: line {lineno} is not valid UTF-8 (byte {exc.start + 1}: {exc.reason}); "
            f"line starts {_preview(raw.decode('utf-8', 'replace'))}",
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return _input_rejection(
            source_id,
            "invalid_json",
            f"{source_id}: line {lineno} is not valid JSON ({exc.msg} at column {exc.colno}); "
            f"line starts {_preview(text)}",
        )
    except (ValueError, RecursionError) as exc:
        return _input_rejection(
            source_id, "invalid_json", f"{source_id}: line {lineno} is not valid JSON ({exc})"
        )
    if not isinstance(value, dict):
        return _input_rejection(
            source_id,
            "not_an_object",
            f"{source_id}: line {lineno} holds a JSON {_json_type(value)}, not an object",
        )
    return make(value, index, source_id)


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _iter_json_array(
    path: Path, handle: io.BufferedIOBase, id_field: str
) -> Iterator[Record | Rejection]:
    """A ``.json`` file holding one array of objects (read whole: JSON arrays do not stream)."""
    try:
        items = json.loads(handle.read().decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RecordError(f"source {path}: not valid JSON: {exc}", record_id=path.name) from exc
    make = _Rows(id_field)
    for index, item in enumerate(items):
        source_id = f"{path.name}[{index}]"
        if isinstance(item, dict):
            yield make(item, index, source_id)
        else:
            yield _input_rejection(
                source_id,
                "not_an_object",
                f"{source_id}: item {index} is a JSON {_json_type(item)}, not an object",
            )
