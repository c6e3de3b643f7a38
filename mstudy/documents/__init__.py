"""Documents as a source: ``.txt``, ``.md``, ``.html`` and ``.pdf`` files split into chunks.

::

    source = mstudy.Documents("docs/", max_tokens=512, overlap=64)
    study.run(source)

:mod:`~mstudy.documents.extract` reads each format, :mod:`~mstudy.documents.chunking`
splits the text, :mod:`~mstudy.documents.tokens` counts tokens and
:mod:`~mstudy.documents.source` walks the folder and makes the records. HTML and PDF need
the ``documents`` extra (``pip install "mstudy[documents]"``).
"""

from __future__ import annotations

from mstudy.documents.chunking import Chunk, chunk_text
from mstudy.documents.source import DEFAULT_SUFFIXES, DocumentFile, Documents
from mstudy.documents.tokens import APPROXIMATION, approx_tokens, token_counter

__all__ = [
    "APPROXIMATION",
    "DEFAULT_SUFFIXES",
    "Chunk",
    "DocumentFile",
    "Documents",
    "approx_tokens",
    "chunk_text",
    "token_counter",
]
