"""Text and title of one document file: ``.txt``, ``.md``, ``.html`` and ``.pdf``.

Each reader takes the file's bytes and returns an :class:`Extracted`, or raises
:class:`DocumentProblem` with a stable ``reason`` and a ``detail`` (the source turns it into
a rejection naming the file). Line ends become ``\\n`` in every format.

- Text and Markdown: UTF-8 (a byte-order mark is dropped; UTF-16 with its mark is read
  too). A NUL byte or many control characters mean a binary file (``not_text``); bytes that
  are not UTF-8 give ``invalid_utf8`` with their offset. Markdown is kept as written; its
  title is the first heading outside code fences.
- HTML, with ``lxml`` (libxml2's forgiving parser: real pages are rarely valid): the
  ``<main>`` element (or ``role="main"``, or ``<article>``, else ``<body>``) without scripts,
  styles, navigation, headers, footers and asides; each block (paragraph, heading, list
  item, table row, ...) becomes a paragraph, and ``<pre>`` keeps its lines. Pages built for
  reading (documentation, articles) mark their main content, so no content-guessing
  heuristic is needed, and code blocks survive (main-text extractors built for news pages,
  such as trafilatura, flatten them into one line).
- PDF, with ``pypdf`` (pure Python, BSD-licensed, maintained): the text of each page, pages
  separated by a blank line; the title from the document's metadata. An encrypted file
  that opens with the empty password is read; otherwise ``encrypted``. A file pypdf cannot
  parse gives ``unreadable_pdf``.
"""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["READERS", "DocumentProblem", "Extracted", "extract"]


@dataclass(frozen=True, slots=True)
class Extracted:
    """A document's text (what chunks' offsets point into) and its title (``None``: none)."""

    text: str
    title: str | None


class DocumentProblem(Exception):
    """Why a document gives no text: ``reason`` (stable, for reports) and ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


_CONTROL_SHARE = 0.01  # more control characters than this: not text


def _decode_text(data: bytes) -> str:
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32")):
        if data.startswith(bom):
            return _decode(data, codec)
    for bom, codec in ((codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return _decode(data, codec)
    if b"\x00" in data:
        at = data.index(b"\x00")
        raise DocumentProblem("not_text", f"a NUL byte at offset {at}: a binary file")
    text = _decode(data, "utf-8-sig")
    controls = sum(1 for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n\r\f\v")
    if controls > _CONTROL_SHARE * max(len(text), 1):
        raise DocumentProblem(
            "not_text", f"{controls} control characters in {len(text)}: a binary file"
        )
    return text


def _decode(data: bytes, codec: str) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 4]
        raise DocumentProblem(
            "invalid_utf8" if codec.startswith("utf-8") else "invalid_encoding",
            f"not {codec.removesuffix('-sig').upper()} text: {exc.reason} at byte "
            f"{exc.start} ({bad!r})",
        ) from None


def read_text(data: bytes) -> Extracted:
    return Extracted(_newlines(_decode_text(data)), None)


_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_ATX = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")


def markdown_title(text: str) -> str | None:
    """The first heading of a Markdown text (ATX ``# T`` or setext), outside code fences."""
    fence: str | None = None
    previous = ""
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if match:
            fence = None if fence == match.group(1) else (fence or match.group(1))
            previous = ""
            continue
        if fence is not None:
            continue
        atx = _ATX.match(line)
        if atx and atx.group(1).strip():
            return atx.group(1).strip()
        if previous.strip() and _SETEXT.match(line) and not previous.lstrip().startswith("#"):
            return previous.strip()
        previous = line
    return None


def read_markdown(data: bytes) -> Extracted:
    text = _newlines(_decode_text(data))
    return Extracted(text, markdown_title(text))


# -- HTML -------------------------------------------------------------------------------------

_DROP = frozenset(
    {
        "script", "style", "noscript", "template", "svg", "math", "canvas", "iframe",
        "object", "embed", "form", "button", "select", "input", "textarea", "nav", "aside",
        "head", "title", "meta", "link",
    }
)  # fmt: skip
_DROP_OUTSIDE_MAIN = frozenset({"header", "footer"})
_DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "search", "complementary"})
_DROP_CLASSES = frozenset({"headerlink"})  # Sphinx's and MkDocs' "¶" anchors
_BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "h1", "h2", "h3", "h4",
        "h5", "h6", "ul", "ol", "li", "dl", "dt", "dd", "blockquote", "pre", "table", "tr",
        "thead", "tbody", "tfoot", "caption", "figure", "figcaption", "hr", "address",
        "details", "summary", "body", "html",
    }
)  # fmt: skip
_CELLS = frozenset({"td", "th"})
_SPACES = re.compile(r"\s+")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


def _decode_html(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", "replace")
    for bom in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        if data.startswith(bom):
            return data.decode("utf-16", "replace")
    declared = _META_CHARSET.search(data[:4096])
    if declared:
        try:
            return data.decode(declared.group(1).decode("ascii"), "replace")
        except LookupError:
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")  # what browsers assume for undeclared pages


class _Blocks:
    """Collects an HTML tree's text as paragraphs."""

    def __init__(self) -> None:
        self.paragraphs: list[str] = []
        self.line: list[str] = []

    def flush(self) -> None:
        text = _SPACES.sub(" ", "".join(self.line)).strip()
        if text:
            self.paragraphs.append(text)
        self.line = []

    def add(self, text: str | None) -> None:
        if text:
            self.line.append(text)

    def walk(self, element: Any, inside_main: bool) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        tag = tag.lower().rpartition("}")[2]
        if not tag or _dropped(element, tag, inside_main):
            return  # a comment or processing instruction, or left out (its tail is not)
        inside_main = inside_main or tag in ("main", "article") or element.get("role") == "main"
        if tag == "pre":
            self.flush()
            code = "".join(element.itertext()).strip("\n")
            lines = [line.rstrip() for line in code.split("\n")]
            if any(lines):
                self.paragraphs.append("\n".join(lines))
            return
        if tag == "br":
            self.add("\n")  # collapsed like other whitespace: a line break within a block
        block = tag in _BLOCKS
        if block:
            self.flush()
        if tag == "li":
            self.add("- ")
        self.add(element.text)
        for child in element:
            self.walk(child, inside_main)
            self.add(child.tail)
            if isinstance(child.tag, str) and child.tag.lower() in _CELLS:
                self.add(" | ")
        if block:
            if tag == "tr":
                self.line = ["".join(self.line).rstrip().removesuffix("|")]
            self.flush()


def _dropped(element: Any, tag: str, inside_main: bool) -> bool:
    if tag in _DROP or (tag in _DROP_OUTSIDE_MAIN and not inside_main):
        return True
    if element.get("role") in _DROP_ROLES or element.get("hidden") is not None:
        return True
    if element.get("aria-hidden") == "true":
        return True
    classes = set((element.get("class") or "").split())
    return not classes.isdisjoint(_DROP_CLASSES)


def read_html(data: bytes) -> Extracted:
    from mstudy.sinks.base import import_optional

    html = import_optional("lxml.html", "documents", "reading HTML documents")
    text = _XML_DECLARATION.sub("", _decode_html(data), count=1)  # XHTML: decoded already
    if not text.strip():
        return Extracted("", None)
    try:
        root = html.document_fromstring(text)
    except Exception as exc:  # lxml's ParserError and friends: nothing parseable
        raise DocumentProblem("unreadable_html", f"cannot parse the HTML: {exc}") from None
    title_element = root.find(".//title")
    title = None
    if title_element is not None:
        title = _SPACES.sub(" ", title_element.text_content()).strip() or None
    main = None
    for path in (".//main", ".//*[@role='main']", ".//article", ".//body"):
        main = root.find(path)
        if main is not None:
            break
    blocks = _Blocks()
    blocks.walk(main if main is not None else root, inside_main=main is not None)
    blocks.flush()
    return Extracted("\n\n".join(blocks.paragraphs), title)


# -- PDF --------------------------------------------------------------------------------------


def read_pdf(data: bytes) -> Extracted:
    from mstudy.sinks.base import import_optional

    pypdf = import_optional("pypdf", "documents", "reading PDF documents")
    errors = pypdf.errors
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except (errors.DependencyError, NotImplementedError) as exc:
                raise DocumentProblem("encrypted", f"an encrypted PDF ({exc})") from None
            if not opened:
                raise DocumentProblem("encrypted", "an encrypted PDF that needs a password")
        pages = [_newlines(page.extract_text() or "").strip() for page in reader.pages]
        metadata = reader.metadata
        title = metadata.title if metadata is not None else None
    except DocumentProblem:
        raise
    except (errors.PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise DocumentProblem("unreadable_pdf", f"pypdf cannot read it: {exc}") from None
    except RecursionError:
        raise DocumentProblem("unreadable_pdf", "pypdf cannot read it: nested too deeply") from None
    text = "\n\n".join(page for page in pages if page)
    title = title.strip() if isinstance(title, str) else None
    return Extracted(text, title or None)


READERS: dict[str, Callable[[bytes], Extracted]] = {
    ".txt": read_text,
    ".text": read_text,
    ".md": read_markdown,
    ".markdown": read_markdown,
    ".html": read_html,
    ".htm": read_html,
    ".xhtml": read_html,
    ".pdf": read_pdf,
}
"""The reader of each file suffix (lower case)."""


def extract(suffix: str, data: bytes) -> Extracted:
    """The text and title of a document with this suffix and content."""
    return READERS[suffix.lower()](data)
