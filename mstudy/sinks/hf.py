"""Hugging Face ``datasets`` sinks: an in-memory :class:`DatasetSink` and :class:`SaveToDiskSink`.

Both build the same Arrow table: one column per key seen in any row (missing values null),
each column's type unified over all rows (``None`` fits any type, ints widen to floats,
nested dicts merge their keys, values of conflicting types become JSON text), so that a
commit never fails on a type: see :func:`mstudy.sinks.parquet.widen_type`. ``datasets`` is
imported only when a sink is built.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from mstudy.errors import SinkError
from mstudy.sinks.base import BaseSink, ensure_parent, fsync_dir, import_optional, sink_error
from mstudy.sinks.jsonl import to_jsonable
from mstudy.sinks.parquet import conform_table, rows_to_table, widen_schema

__all__ = ["DatasetSink", "SaveToDiskSink"]

_CHUNK_ROWS = 10_000


def _datasets(purpose: str) -> Any:
    import_optional("pyarrow", "datasets", purpose)
    return import_optional("datasets", "datasets", purpose)


# -- schema unification ---------------------------------------------------------------------------


def unify_schemas(pa: Any, a: Any, b: Any, where: str) -> Any:
    """Merge two schemas column by column (in order of first appearance); never fails: values
    of conflicting types in one column are stored as JSON text (see :func:`widen_type`)."""
    del where  # kept for callers: widening cannot fail
    return widen_schema(pa, a, b)


def _chunks(
    rows: Iterable[dict[str, Any]], size: int = _CHUNK_ROWS
) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _schema_of(pa: Any, chunks: Iterable[Sequence[Mapping[str, Any]]], where: str) -> Any:
    schema = pa.schema([])
    for chunk in chunks:
        schema = unify_schemas(pa, schema, rows_to_table(pa, chunk, where).schema, where)
    return schema


# -- sinks --------------------------------------------------------------------------------


class DatasetSink(BaseSink):
    """Collects rows in memory; after ``close()``, :attr:`dataset` is a ``datasets.Dataset``."""

    def __init__(self) -> None:
        super().__init__()
        self._ds = _datasets("DatasetSink")
        self._rows: list[dict[str, Any]] = []
        self._dataset: Any = None

    def _describe(self) -> str:
        return "DatasetSink"

    @property
    def dataset(self) -> Any:
        """The collected rows as a ``datasets.Dataset`` (available once closed)."""
        if self._dataset is None:
            state = "was aborted" if self._state == "aborted" else "is not closed yet"
            raise SinkError(f"DatasetSink {state}: its dataset exists only after close()")
        return self._dataset

    def _write(self, rows: list[dict[str, Any]]) -> None:
        self._rows.extend(rows)

    def _commit(self) -> None:
        import pyarrow as pa

        where = "DatasetSink"
        tables = [rows_to_table(pa, chunk, where) for chunk in _chunks(self._rows)]
        schema = pa.schema([])
        for table in tables:
            schema = unify_schemas(pa, schema, table.schema, where)
        table = (
            pa.concat_tables([conform_table(pa, t, schema, where) for t in tables])
            if tables
            else pa.table({})
        )
        self._dataset = self._ds.Dataset(table)
        self._rows = []

    def _discard(self) -> None:
        self._rows = []


class SaveToDiskSink(BaseSink):
    """Writes rows as a ``datasets`` folder (``Dataset.save_to_disk``) at ``path``.

    Rows are spooled to a temporary folder beside the target (``.<name>.*.tmp``), not kept in
    memory. ``close()`` builds the dataset from the spool as a memory-mapped Arrow file, saves
    it into the temporary folder, and then swaps it in: an existing target is moved aside only
    once the new folder is complete, and deleted after the new one is in place (a crash between
    the two renames leaves the old copy inside the temporary folder). An existing target must
    be a saved dataset (or an empty folder): any other folder is refused, never deleted.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self._ds = _datasets("SaveToDiskSink")
        self.path: Path = ensure_parent(path, directory=True)
        if self.path.is_dir() and any(self.path.iterdir()) and not _is_saved_dataset(self.path):
            raise SinkError(
                f"cannot write {self.path}: it is a non-empty folder that does not hold a saved "
                "dataset (no state.json or dataset_dict.json); refusing to replace it"
            )
        self._lock_target(self.path)
        try:
            self._tmp = Path(
                tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            )
            self._spool: BinaryIO = open(self._tmp / "spool.pickle", "wb")  # noqa: SIM115
        except OSError as exc:
            self._release_target()
            raise sink_error("create a temporary folder beside", self.path, exc) from exc

    def _describe(self) -> str:
        return str(self.path)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            data = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
            data = pickle.dumps([to_jsonable(row) for row in rows], pickle.HIGHEST_PROTOCOL)
        try:
            self._spool.write(data)
        except OSError as exc:
            raise sink_error("write the spool for", self.path, exc) from exc

    def _spooled_rows(self) -> Iterator[dict[str, Any]]:
        with open(self._tmp / "spool.pickle", "rb") as spool:
            while True:
                try:
                    batch = pickle.load(spool)  # our own file, written above
                except EOFError:
                    return
                yield from batch

    def _commit(self) -> None:
        import pyarrow as pa

        where = str(self.path)
        self._spool.close()
        schema = _schema_of(pa, _chunks(self._spooled_rows()), where)
        arrow_path = self._tmp / "data.arrow"
        with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_stream(sink, schema) as out:
            for chunk in _chunks(self._spooled_rows()):
                out.write_table(conform_table(pa, rows_to_table(pa, chunk, where), schema, where))
        (self._tmp / "spool.pickle").unlink()
        dataset = self._ds.Dataset.from_file(str(arrow_path), in_memory=False)
        built = self._tmp / "dataset"
        # zero rows: one (empty) shard, or load_from_disk fails; zero columns: patched below
        empty_with_columns = len(dataset) == 0 and len(schema) > 0
        dataset.save_to_disk(str(built), num_shards=1 if empty_with_columns else None)
        if not any(built.glob("*.arrow")):
            _add_empty_shard(pa, built, schema)
        del dataset
        _fsync_tree(built)
        self._swap_in(built)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _swap_in(self, built: Path) -> None:
        old = self._tmp / "old"
        had_old = os.path.lexists(self.path)
        try:
            if had_old:
                os.replace(self.path, old)
            try:
                os.replace(built, self.path)
            except OSError:
                if had_old:
                    os.replace(old, self.path)
                raise
            fsync_dir(self.path.parent)
        except OSError as exc:
            raise sink_error("move the saved dataset onto", self.path, exc) from exc

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            self._spool.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def _add_empty_shard(pa: Any, folder: Path, schema: Any) -> None:
    """Give a zero-column, zero-row saved dataset the one shard ``load_from_disk`` needs.

    ``datasets`` saves such a dataset with no data file and then cannot load it back.
    """
    name = "data-00000-of-00001.arrow"
    with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, schema):
        pass
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text(encoding="utf-8"))
    state["_data_files"] = [{"filename": name}]
    state_path.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")


def _fsync_tree(folder: Path) -> None:
    """fsync every file in ``folder`` and the folder itself, before it is renamed into place."""
    for item in folder.iterdir():
        if item.is_file():
            fd = os.open(item, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(folder)
