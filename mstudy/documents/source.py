"""``Documents``: a file or a folder of documents as a source of chunk records."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mstudy._hashing import stable_hash
from mstudy.documents.chunking import chunk_text
from mstudy.documents.extract import READERS, DocumentProblem, extract
from mstudy.documents.tokens import token_counter
from mstudy.errors import ConfigError
from mstudy.records import Record, Rejection

__all__ = ["DEFAULT_SUFFIXES", "DocumentFile", "Documents"]

DEFAULT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
"""The files a folder source reads (by suffix, in any case)."""
_ID_VERSION = "mstudy.documents.chunk.v1"


@dataclass(frozen=True, slots=True)
class DocumentFile:
    """A file of the source: ``path`` relative to the folder given (``/``-separated)."""

    path: str
    location: Path


class Documents:
    """Documents (``.txt``, ``.md``, ``.html``, ``.pdf``) split into chunks, one record each.

    ``path`` is one file or a folder, read recursively: files in sorted order of their
    relative paths, hidden files and folders (``.name``) skipped, symbolic links followed
    but each folder read once (a link loop ends there). Only files whose suffix is in
    ``suffixes`` are read.

    Each chunk is a record with the fields ``text`` (the chunk), ``path`` (relative to the
    folder given; a file given alone is its own name), ``title`` (the HTML ``<title>``, the
    first Markdown heading, the PDF's metadata title, else the file's stem), ``chunk`` (its
    index in the document), ``start`` and ``end`` (character offsets into the document's
    extracted text: ``text == extracted[start:end]``), ``tokens`` (its token count) and the
    id field. The id is a hash of the path, the offsets and the text: the same for the same
    document on every run, whatever else the folder holds.

    Chunks hold at most ``max_tokens`` tokens, counted by ``tokenizer`` (see
    :func:`mstudy.documents.tokens.token_counter`: a teacher with a tokenizer, a
    ``transformers`` tokenizer or its name, a function, or ``None`` for the approximation
    of 4 bytes of UTF-8 a token); consecutive chunks share at most ``overlap`` tokens.

    A document that gives no text is one rejection at stage ``input`` naming its path, and
    the others go on: ``unreadable`` (the OS refused it), ``too_large`` (over ``max_bytes``),
    ``not_text`` (a binary file), ``invalid_utf8``, ``empty`` (no text at all: an empty file,
    a page that is all script), ``unreadable_html``, ``unreadable_pdf``, ``encrypted``;
    ``extraction_failed`` and ``tokenizer_failed`` when a library fails on the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_tokens: int = 512,
        overlap: int = 64,
        tokenizer: object = None,
        suffixes: Sequence[str] = DEFAULT_SUFFIXES,
        max_bytes: int = 64 * 2**20,
    ) -> None:
        for name, value, low in (("max_tokens", max_tokens, 1), ("max_bytes", max_bytes, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"{name} must be an integer >= {low}, got {value!r}", parameter=name
                )
        if (
            isinstance(overlap, bool)
            or not isinstance(overlap, int)
            or not 0 <= overlap < max_tokens
        ):
            raise ConfigError(
                f"overlap must be an integer >= 0 and < max_tokens ({max_tokens}), got {overlap!r}",
                parameter="overlap",
            )
        if isinstance(suffixes, str):
            suffixes = [suffixes]
        chosen = tuple(s.lower() if s.startswith(".") else f".{s.lower()}" for s in suffixes)
        unknown = [s for s in chosen if s not in READERS]
        if unknown or not chosen:
            raise ConfigError(
                f"suffixes: cannot read {', '.join(unknown) or 'nothing'}; "
                f"readable: {', '.join(READERS)}",
                parameter="suffixes",
            )
        self.path = Path(os.fspath(path))
        if not self.path.exists():
            raise ConfigError(f"documents not found: {self.path}", parameter="path")
        if self.path.is_file() and self.path.suffix.lower() not in READERS:
            raise ConfigError(
                f"{self.path}: cannot read {self.path.suffix or 'a file without suffix'} files; "
                f"readable: {', '.join(READERS)}",
                parameter="path",
            )
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.suffixes = chosen
        self.max_bytes = max_bytes
        self.counter = token_counter(tokenizer)

    def __repr__(self) -> str:
        return (
            f"Documents({os.fspath(self.path)!r}, max_tokens={self.max_tokens}, "
            f"overlap={self.overlap}, tokens={self.counter.name!r})"
        )

    @property
    def tokens_counted_by(self) -> str:
        """How chunk sizes are counted (a tokenizer's name, or the approximation)."""
        return self.counter.name

    # -- files ---------------------------------------------------------------------------

    def files(self) -> list[DocumentFile]:
        """The files this source reads, in the order it reads them."""
        if not self.path.is_dir():
            return [DocumentFile(self.path.name, self.path)]
        found: list[DocumentFile] = []
        seen: set[tuple[int, int]] = set()
        self._collect(self.path, "", seen, found)
        found.sort(key=lambda f: f.path)
        return found

    def _collect(
        self, folder: Path, prefix: str, seen: set[tuple[int, int]], found: list[DocumentFile]
    ) -> None:
        try:
            info = folder.stat()
        except OSError:
            return
        if (info.st_dev, info.st_ino) in seen:
            return  # a link back to a folder already read
        seen.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = f"{prefix}{entry.name}"
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                self._collect(Path(entry.path), f"{relative}/", seen, found)
            elif Path(entry.name).suffix.lower() in self.suffixes:
                found.append(DocumentFile(relative, Path(entry.path)))

    # -- records -------------------------------------------------------------------------

    def records(self, *, id_field: str = "id") -> Iterator[Record | Rejection]:
        """A record per chunk, or a rejection per document that gives none, file by file."""
        index = 0
        for document in self.files():
            for item in self._document(document, id_field, index):
                yield item
                index += 1

    def _document(
        self, document: DocumentFile, id_field: str, index: int
    ) -> Iterator[Record | Rejection]:
        def reject(reason: str, detail: str) -> Rejection:
            return Rejection(
                source_id=document.path,
                stage="input",
                reason=reason,
                detail=f"{document.path}: {detail}",
            )

        try:
            data = self._read(document)
            extracted = extract(document.location.suffix, data)
        except DocumentProblem as problem:
            yield reject(problem.reason, problem.detail)
            return
        except (ImportError, ConfigError):
            raise  # a missing extra: every document of the kind would fail alike
        except Exception as exc:  # a reader's own failure on this one file
            yield reject("extraction_failed", f"{type(exc).__name__}: {exc}")
            return
        if not extracted.text.strip():
            yield reject("empty", "no text in it" if data.strip() else "the file is empty")
            return
        title = extracted.title or document.location.stem
        try:
            chunks = chunk_text(extracted.text, self.max_tokens, self.overlap, self.counter)
        except (ImportError, ConfigError):
            raise  # the tokenizer cannot be loaded, or the function counts wrongly
        except Exception as exc:
            yield reject("tokenizer_failed", f"counting its tokens failed: {exc}")
            return
        for chunk in chunks:
            chunk_id = stable_hash([_ID_VERSION, document.path, chunk.start, chunk.end, chunk.text])
            fields = {
                id_field: chunk_id,
                "text": chunk.text,
                "path": document.path,
                "title": title,
                "chunk": chunk.index,
                "start": chunk.start,
                "end": chunk.end,
                "tokens": chunk.tokens,
            }
            yield Record(id=chunk_id, fields=fields, index=index + chunk.index)

    def _read(self, document: DocumentFile) -> bytes:
        try:
            info = os.stat(document.location)  # before opening: a FIFO would block
            if not stat.S_ISREG(info.st_mode):
                raise DocumentProblem("unreadable", "not a regular file")
            if info.st_size > self.max_bytes:
                raise DocumentProblem(
                    "too_large",
                    f"{info.st_size} bytes, over max_bytes={self.max_bytes} "
                    "(raise it to read this file)",
                )
            with open(document.location, "rb") as handle:
                return handle.read(self.max_bytes + 1)
        except OSError as exc:
            raise DocumentProblem("unreadable", exc.strerror or str(exc)) from None
