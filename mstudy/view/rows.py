"""Reading output rows lazily: JSON Lines through an index of line offsets, Parquet by row
groups. Both only ever open files for reading.

A :class:`Rows` indexes its file once (and extends the index as a running study appends to
it): where each row starts, and a small code per row for the columns the page filters on
(``strategy``, ``stage``, ``reason``). A page then reads just its own rows, and a filter on
those columns is an array comparison. A text or source-id search reads rows in order from a
cursor until the page is full. Lines that are not JSON objects, a last line without its
newline and rows of another shape are skipped, and each skip is recorded (:class:`Skip`).
"""

from __future__ import annotations

import json
import json.scanner
import os
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

_SCANNER: Callable[[Any, int], tuple[Any, int]] = cast(Any, json.scanner).make_scanner(
    json.JSONDecoder()
)
"""The json module's scanner: one value from a string, with where it ended."""

__all__ = ["CODED", "JsonlRows", "Page", "ParquetRows", "Query", "Rows", "Skip", "open_rows"]

CODED = ("strategy", "stage", "reason")
"""The columns kept as a code per row: filters on them need no reading."""
Kind = Literal["accepted", "rejects", "any", "other", "records"]
"""What a file holds: output rows, rejects rows, to be decided by its first row (``any``),
rows of neither shape (``other``), or any JSON objects (``records``: a source)."""
MAX_SKIPS = 50
"""Skips kept per file to show (all are counted)."""
_CHUNK = 8 << 20


@dataclass(frozen=True)
class Skip:
    """A part of a file that is not shown, and why (``line`` is 1-based, None for the file)."""

    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.path}" + (f" line {self.line}" if self.line else "") + f": {self.reason}"


@dataclass(frozen=True)
class Query:
    """What a page shows: equality on the coded columns, a source id, a text (any case)."""

    strategy: str | None = None
    stage: str | None = None
    reason: str | None = None
    source_id: str | None = None
    text: str | None = None

    @property
    def scans(self) -> bool:
        """Whether rows must be read to decide (a source id or a text)."""
        return bool(self.source_id or self.text)


@dataclass
class Page:
    """Rows of one page: ``(row number, row)`` pairs. ``total`` is the number of matching
    rows when known without reading them all; ``next`` the cursor of the next page."""

    rows: list[tuple[int, dict[str, Any]]]
    cursor: int
    next: int | None
    total: int | None


def row_kind(row: Mapping[str, Any]) -> Kind:
    """``rejects`` for a rejects-sink row, ``accepted`` for an output row, else ``other``."""
    if "stage" in row and "reason" in row and "source_id" in row:
        return "rejects"
    if "strategy" in row and "source_id" in row:
        return "accepted"
    return "other"


def _contains(value: Any, needle: str) -> bool:
    if isinstance(value, str):
        return needle in value.casefold()
    if isinstance(value, Mapping):
        return any(_contains(v, needle) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains(v, needle) for v in value)
    return value is not None and needle in str(value).casefold()


def row_source_ids(row: Mapping[str, Any]) -> list[str]:
    """The source ids a row names: its own, its provenance's, its parents'."""
    ids = [str(row.get("source_id", ""))]
    provenance = row.get("provenance")
    if isinstance(provenance, Mapping):
        extra = provenance.get("source_ids")
        if isinstance(extra, list):
            ids.extend(str(i) for i in extra)
    parents = row.get("parents")
    if isinstance(parents, list):
        ids.extend(str(p.get("id", p)) if isinstance(p, Mapping) else str(p) for p in parents)
    return ids


def matches(row: Mapping[str, Any], query: Query) -> bool:
    """Whether ``row`` satisfies every part of ``query``."""
    for key in CODED:
        wanted = getattr(query, key)
        if wanted is not None and _label(row.get(key)) != wanted:
            return False
    if query.source_id and query.source_id not in row_source_ids(row):
        return False
    return not query.text or _contains(row, query.text.casefold())


def _label(value: Any) -> str:
    return "" if value is None else str(value)


class Rows:
    """Rows of one file, indexed once and read a page at a time (see the module's doc)."""

    def __init__(self, path: str | os.PathLike[str], kind: Kind = "any") -> None:
        self.path = Path(path)
        self.kind: Kind = kind
        """See :data:`Kind`; ``any`` becomes the kind of the first row."""
        self.skips: list[Skip] = []
        self.skipped = 0
        self.error: str | None = None
        """Why the file cannot be read at all (then it shows no rows)."""
        self.bytes_read = 0
        """Bytes read so far, the index included (a page's cost shows in its growth)."""
        self._codes = {key: array("i") for key in CODED}
        self._vocab: dict[str, dict[Any, int]] = {key: {} for key in CODED}
        self._labels: dict[str, list[str]] = {key: [] for key in CODED}

    # -- the index ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the index up to date with the file (cheap when nothing changed)."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def _reset(self) -> None:
        self.skips, self.skipped = [], 0
        self._codes = {key: array("i") for key in CODED}
        self._vocab = {key: {} for key in CODED}
        self._labels = {key: [] for key in CODED}

    def _skip(self, line: int | None, reason: str) -> None:
        self.skipped += 1
        if len(self.skips) < MAX_SKIPS:
            self.skips.append(Skip(str(self.path), line, reason))

    def _accept(self, row: Any, line: int | None) -> bool:
        """Record ``row``'s codes if it belongs in this file; else record why not."""
        if not isinstance(row, dict):
            self._skip(line, f"not a JSON object ({type(row).__name__})")
            return False
        if self.kind == "any":
            self.kind = row_kind(row)
        if self.kind in ("accepted", "rejects") and row_kind(row) != self.kind:
            need = "source_id, stage, reason" if self.kind == "rejects" else "source_id, strategy"
            self._skip(line, f"not a {self.kind} row (it lacks one of: {need})")
            return False
        for key, code in zip(CODED, self._code_of(row), strict=True):
            self._codes[key].append(code)
        return True

    def _code_of(self, row: Mapping[str, Any]) -> tuple[int, int, int]:
        """The codes of ``row``'s coded columns, adding new values to the vocabularies.

        A vocabulary maps both a value and its label (``str``; ``""`` for None) to one code,
        so that the indexing loop can look plain values up directly.
        """
        out = [self._code(key, row.get(key)) for key in CODED]
        return out[0], out[1], out[2]

    def _code(self, key: str, value: Any) -> int:
        label = _label(value)
        vocab = self._vocab[key]
        code = vocab.get(label)
        if code is None:
            code = vocab[label] = len(self._labels[key])
            self._labels[key].append(label)
        if value is None or type(value) is str or type(value) is int:
            vocab.setdefault(value, code)
        return code

    def values(self, key: str) -> dict[str, int]:
        """The values of a coded column (as text; ``""`` for none) with their row counts."""
        labels = self._labels[key]
        codes = np.frombuffer(self._codes[key], dtype=np.int32)
        counts = np.bincount(codes, minlength=len(labels)) if len(codes) else [0] * len(labels)
        return {label: int(counts[code]) for code, label in enumerate(labels)}

    def counts(self, *keys: str) -> dict[tuple[str, ...], int]:
        """Row counts per combination of coded columns (``counts("strategy", "reason")``)."""
        if not len(self):
            return {}
        combined = np.zeros(len(self), dtype=np.int64)
        sizes = [max(1, len(self._labels[k])) for k in keys]
        for key, size in zip(keys, sizes, strict=True):
            combined = combined * size + np.frombuffer(self._codes[key], dtype=np.int32)
        found = np.bincount(combined)
        out: dict[tuple[str, ...], int] = {}
        for value in np.flatnonzero(found).tolist():
            count, parts = int(found[value]), []
            for key, size in zip(reversed(keys), reversed(sizes), strict=True):
                value, code = divmod(value, size)
                parts.append(self._labels[key][code])
            out[tuple(reversed(parts))] = count
        return out

    def select(self, query: Query) -> np.ndarray:
        """Row numbers whose coded columns match ``query``."""
        mask = np.ones(len(self), dtype=bool)
        for key in CODED:
            wanted = getattr(query, key)
            if wanted is None:
                continue
            if wanted not in self._labels[key]:
                return np.zeros(0, dtype=np.int64)
            code = self._vocab[key][wanted]
            mask &= np.frombuffer(self._codes[key], dtype=np.int32) == code
        return np.flatnonzero(mask)

    # -- reading ------------------------------------------------------------------------------

    def read(self, numbers: Sequence[int]) -> list[dict[str, Any]]:
        """The rows with these (ascending) row numbers."""
        raise NotImplementedError

    def _prefilter(self, numbers: Sequence[int], query: Query) -> Sequence[int]:
        """Row numbers that may match ``query`` (subclasses drop sure misses cheaply)."""
        return numbers

    def page(self, query: Query, cursor: int = 0, size: int = 50) -> Page:
        """Up to ``size`` rows matching ``query``, from position ``cursor`` of the candidates."""
        self.refresh()
        candidates = self.select(query)
        cursor = max(0, min(cursor, len(candidates)))
        if not query.scans:
            numbers = candidates[cursor : cursor + size].tolist()
            end = cursor + len(numbers)
            found = list(zip(numbers, self.read(numbers), strict=True))
            return Page(found, cursor, end if end < len(candidates) else None, len(candidates))
        found = []
        position = cursor
        block = max(size, 512)
        while position < len(candidates) and len(found) < size:
            chunk = candidates[position : position + block].tolist()
            maybe = self._prefilter(chunk, query)
            for number, row in zip(maybe, self.read(maybe), strict=True):
                if matches(row, query):
                    found.append((number, row))
                    if len(found) == size:
                        position = chunk.index(number) + position + 1
                        break
            else:
                position += len(chunk)
        return Page(found, cursor, position if position < len(candidates) else None, None)

    def iter_rows(self) -> Iterable[tuple[int, dict[str, Any]]]:
        """Every row, in order, a block at a time."""
        self.refresh()
        for start in range(0, len(self), 4096):
            numbers = list(range(start, min(start + 4096, len(self))))
            yield from zip(numbers, self.read(numbers), strict=True)


class JsonlRows(Rows):
    """A JSON Lines file. ``limit`` gives how many bytes to read (a journal spool is read up
    to its last checkpoint); by default the whole file, growing as it is appended to."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        kind: Kind = "any",
        limit: Callable[[], int | None] | None = None,
    ) -> None:
        super().__init__(path, kind)
        self._limit = limit
        self._starts = array("q")
        self._lengths = array("q")
        self._end = 0  # bytes indexed (always just after a newline)
        self._lines = 0
        self._identity: tuple[int, int] | None = None
        self.tail: Skip | None = None
        """The last line when it has no newline yet (being written, or cut off)."""
        self.unread = 0
        """Bytes after ``limit`` (written after the last checkpoint): not shown yet."""

    def __len__(self) -> int:
        return len(self._starts)

    def refresh(self) -> None:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            self.error = f"cannot read {self.path}: {exc.strerror or exc}"
            return
        self.error = None
        identity = (stat.st_dev, stat.st_ino)
        limit = self._limit() if self._limit is not None else None
        end = stat.st_size if limit is None else min(limit, stat.st_size)
        self.unread = stat.st_size - end
        if identity != self._identity or end < self._end:  # replaced or cut back: start over
            self._identity = identity
            self._starts, self._lengths = array("q"), array("q")
            self._end = self._lines = 0
            self.kind = "any" if self.kind == "other" else self.kind
            self._reset()
        if end > self._end:
            self._index(end)
        tail = end - self._end
        self.tail = (
            Skip(str(self.path), self._lines + 1, f"the last line has no newline ({tail} bytes)")
            if tail
            else None
        )

    def _index(self, end: int) -> None:
        with open(self.path, "rb") as handle:
            handle.seek(self._end)
            while self._end < end:
                data = handle.read(min(_CHUNK, end - self._end))
                if not data:
                    break
                self.bytes_read += len(data)
                cut = data.rfind(b"\n")
                if cut < 0:
                    if len(data) == _CHUNK:  # one line longer than a chunk
                        data += handle.readline()
                        cut = data.rfind(b"\n")
                    if cut < 0:
                        break
                self._index_block(data[: cut + 1], self._end)
                self._end += cut + 1
                handle.seek(self._end)

    def _index_block(self, block: bytes, offset: int) -> None:
        # The hot loop of indexing (a million rows take seconds): the C scanner of the json
        # module on each line of the block decoded at once, and names bound locally.
        raw_lines = block.split(b"\n")[:-1]
        try:
            texts: Sequence[Any] = block.decode("utf-8").split("\n")[:-1]
        except UnicodeDecodeError:
            texts = raw_lines  # some line is not UTF-8: each line on its own says which
        scan = _SCANNER
        starts, lengths = self._starts, self._lengths
        vocab_s, vocab_t, vocab_r = (self._vocab[k] for k in CODED)
        codes_s, codes_t, codes_r = (self._codes[k] for k in CODED)
        fast = self.kind == "accepted"
        position, line_no = offset, self._lines
        for raw, text in zip(raw_lines, texts, strict=True):
            line_no += 1
            start = position
            position += len(raw) + 1
            try:
                row, end = scan(text, 0)
                if end != len(text):
                    raise StopIteration
            except (StopIteration, TypeError):  # not one bare JSON value: ask json.loads
                try:
                    row = json.loads(raw)
                except ValueError as exc:
                    why = "empty line" if not raw.strip() else f"not JSON ({exc})"
                    self._skip(line_no, why)
                    continue
            if fast and type(row) is dict and "strategy" in row and "source_id" in row:
                try:
                    s, t, r = row["strategy"], row.get("stage"), row.get("reason")
                    cs, ct, cr = vocab_s.get(s), vocab_t.get(t), vocab_r.get(r)
                except TypeError:  # an unhashable value: the slow path labels it
                    cs = ct = cr = None
                if cs is None or ct is None or cr is None:
                    cs, ct, cr = self._code_of(row)
                codes_s.append(cs)
                codes_t.append(ct)
                codes_r.append(cr)
            elif not self._accept(row, line_no):
                continue
            starts.append(start)
            lengths.append(len(raw))
        self._lines = line_no

    def _raw(self, numbers: Sequence[int]) -> list[bytes]:
        if not numbers:
            return []
        first, last = numbers[0], numbers[-1]
        base = self._starts[first]
        size = self._starts[last] + self._lengths[last] - base
        with open(self.path, "rb") as handle:
            handle.seek(base)
            data = handle.read(size)
        self.bytes_read += len(data)
        out = []
        for n in numbers:
            start = self._starts[n] - base
            out.append(data[start : start + self._lengths[n]])
        return out

    def read(self, numbers: Sequence[int]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for raw in self._raw(numbers):
            try:
                row = json.loads(raw)
            except ValueError:  # the file was changed under us: show that, do not fail
                row = {"error": "this line changed since it was indexed; reload the page"}
            rows.append(row if isinstance(row, dict) else {"value": row})
        return rows

    def _prefilter(self, numbers: Sequence[int], query: Query) -> Sequence[int]:
        needles = []
        if query.source_id:
            needles.append(json.dumps(query.source_id, ensure_ascii=False)[1:-1].encode())
        if query.text and query.text.isascii() and query.text.isprintable():
            escaped = json.dumps(query.text, ensure_ascii=False)[1:-1]
            if escaped == query.text:  # no quote or backslash: the text is as in the file
                needles.append(query.text.lower().encode())
        if not needles:
            return numbers
        kept = []
        for number, raw in zip(numbers, self._raw(numbers), strict=True):
            low = raw.lower()
            if all(n.lower() in low for n in needles):
                kept.append(number)
        return kept


class ParquetRows(Rows):
    """A Parquet file, read a row group at a time (the coded columns once, at indexing)."""

    def __init__(self, path: str | os.PathLike[str], kind: Kind = "any") -> None:
        super().__init__(path, kind)
        self._file: Any = None
        self._bounds: list[int] = [0]
        self._identity: tuple[int, int, int] | None = None
        self.tail = None
        self.unread = 0
        self._cache: tuple[int, list[dict[str, Any]]] | None = None

    def __len__(self) -> int:
        return self._bounds[-1] if self._file is not None else 0

    def refresh(self) -> None:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            self.error, self._file = f"cannot read {self.path}: {exc.strerror or exc}", None
            return
        identity = (stat.st_dev, stat.st_ino, stat.st_mtime_ns)
        if identity == self._identity:
            return
        self._identity, self._file, self._cache, self._bounds = identity, None, None, [0]
        self.kind = "any" if self.kind == "other" else self.kind
        self._reset()
        try:
            import pyarrow.parquet as pq
        except ImportError:
            self.error = 'reading Parquet needs pyarrow: pip install "mstudy[parquet]"'
            return
        try:
            parquet = pq.ParquetFile(self.path)
            names = set(parquet.schema_arrow.names)
            columns = [c for c in CODED if c in names]
            table = parquet.read(columns=columns)
        except Exception as exc:  # pyarrow raises several kinds for a damaged file
            self.error = f"cannot read {self.path} as Parquet: {exc}"
            return
        self.bytes_read += stat.st_size
        shape = row_kind(dict.fromkeys(names))
        if self.kind == "any":
            self.kind = shape
        if self.kind in ("accepted", "rejects") and shape != self.kind:
            self.error = f"{self.path}: not {self.kind} rows (columns: {', '.join(sorted(names))})"
            return
        if self.kind == "other":
            self.error = (
                f"{self.path}: not mstudy output rows: another schema "
                f"(columns: {', '.join(sorted(names)) or 'none'})"
            )
            return
        for key in CODED:
            values = table.column(key).to_pylist() if key in names else [None] * table.num_rows
            codes = self._codes[key]
            for value in values:
                codes.append(self._code(key, value))
        self._file = parquet
        self._bounds = [0]
        for i in range(parquet.num_row_groups):
            self._bounds.append(self._bounds[-1] + parquet.metadata.row_group(i).num_rows)

    def _group(self, index: int) -> list[dict[str, Any]]:
        if self._cache is None or self._cache[0] != index:
            rows = self._file.read_row_group(index).to_pylist()
            self.bytes_read += self._file.metadata.row_group(index).total_byte_size
            self._cache = (index, rows)
        return self._cache[1]

    def read(self, numbers: Sequence[int]) -> list[dict[str, Any]]:
        import bisect

        out = []
        for n in numbers:
            group = bisect.bisect_right(self._bounds, n) - 1
            out.append(self._group(group)[n - self._bounds[group]])
        return out


def open_rows(path: str | os.PathLike[str], kind: Kind = "any") -> Rows:
    """The reader for ``path`` by its suffix: ``.parquet`` or JSON Lines."""
    if Path(path).suffix == ".parquet":
        return ParquetRows(path, kind)
    return JsonlRows(path, kind)
