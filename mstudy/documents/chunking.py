"""Splitting extracted text into chunks of at most N tokens, with overlap.

A chunk is a slice ``text[start:end]`` of the document's extracted text: offsets map back
exactly, and a chunk never begins or ends with whitespace. The text is first cut into
*pieces*: sentences (a paragraph is text between blank lines; a sentence ends at ``.``,
``!``, ``?``, ``…`` before whitespace, or at ``。！？``), a sentence longer than the limit into
words (runs of non-whitespace), and a single word longer than the limit (a long URL, a
script written without spaces) between characters, never before a combining mark. Pieces
are packed greedily; a chunk ends at the last paragraph end that leaves it at least half
full, else at the last sentence end that does, else where the next piece would not fit.
The next chunk starts with the longest run of the previous chunk's last pieces that has at
most ``overlap`` tokens and still leaves room for the next piece.

Token counts come from a counter (:mod:`mstudy.documents.tokens`); each chunk's count is
checked on its exact text, so the bound holds for that counter even where a tokenizer
counts a joined text differently from its parts.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Chunk", "chunk_text"]

CountMany = Callable[[Sequence[str]], list[int]]
"""Counts the tokens of each text of a batch."""

_PARAGRAPH = 2
_SENTENCE = 1
_WORD = 0
_INSIDE_WORD = -1

_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
_SENTENCE_END = re.compile(
    r"[.!?…]+[\"'”’»)\]]*(?=\s)"  # Latin-script punctuation, then whitespace
    r"|[。！？]+[”’」』）)]*"  # CJK full stops need no space after them
)
_WORD_RUN = re.compile(r"\S+")
_NON_SPACE = re.compile(r"\S")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk: ``text == document[start:end]``, ``tokens`` its count, ``index`` its place."""

    index: int
    start: int
    end: int
    text: str
    tokens: int


@dataclass(slots=True)
class _Piece:
    start: int
    end: int
    level: int  # the kind of boundary after the piece
    alone: int = 0  # tokens of the piece's own text
    joined: int = 0  # tokens of the piece with the whitespace before it


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    """``(start, end)`` without leading and trailing whitespace; None when nothing is left."""
    match = _NON_SPACE.search(text, start, end)
    if match is None:
        return None
    first = match.start()
    last = end
    while last > first and text[last - 1].isspace():
        last -= 1
    return first, last


def _paragraphs(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    position = 0
    for brk in _PARAGRAPH_BREAK.finditer(text):
        span = _trimmed(text, position, brk.start())
        if span is not None:
            spans.append(span)
        position = brk.end()
    span = _trimmed(text, position, len(text))
    if span is not None:
        spans.append(span)
    return spans


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    position = start
    for match in _SENTENCE_END.finditer(text, start, end):
        span = _trimmed(text, position, match.end())
        if span is not None:
            spans.append(span)
        position = match.end()
    span = _trimmed(text, position, end)
    if span is not None:
        spans.append(span)
    return spans


def _cut_word(
    text: str, start: int, end: int, max_tokens: int, count: CountMany
) -> list[tuple[int, int]]:
    """Cut one over-long word between characters into runs of at most ``max_tokens``."""
    spans: list[tuple[int, int]] = []
    position = start
    while position < end:
        low, high = position + 1, end  # the longest fitting run: binary search on its end
        while low < high:
            middle = (low + high + 1) // 2
            if count([text[position:middle]])[0] <= max_tokens:
                low = middle
            else:
                high = middle - 1
        cut = low
        while position + 1 < cut < end and unicodedata.combining(text[cut]):
            cut -= 1  # keep a base character with its combining marks
        spans.append((position, cut))
        position = cut
    return spans


def _pieces(text: str, max_tokens: int, count: CountMany) -> list[_Piece]:
    pieces: list[_Piece] = []
    for p_start, p_end in _paragraphs(text):
        sentences = _sentences(text, p_start, p_end)
        sentence_tokens = count([text[s:e] for s, e in sentences])
        for (s_start, s_end), tokens in zip(sentences, sentence_tokens, strict=True):
            if tokens <= max_tokens:
                pieces.append(_Piece(s_start, s_end, _SENTENCE))
                continue
            words = [(m.start(), m.end()) for m in _WORD_RUN.finditer(text, s_start, s_end)]
            word_tokens = count([text[s:e] for s, e in words])
            for (w_start, w_end), w_tokens in zip(words, word_tokens, strict=True):
                if w_tokens <= max_tokens:
                    pieces.append(_Piece(w_start, w_end, _WORD))
                    continue
                for c_start, c_end in _cut_word(text, w_start, w_end, max_tokens, count):
                    pieces.append(_Piece(c_start, c_end, _INSIDE_WORD))
                pieces[-1].level = _WORD
            pieces[-1].level = _SENTENCE
        pieces[-1].level = _PARAGRAPH
    alone = count([text[p.start : p.end] for p in pieces])
    joined = count(
        [text[(pieces[i - 1].end if i else p.start) : p.end] for i, p in enumerate(pieces)]
    )
    for piece, own, with_space in zip(pieces, alone, joined, strict=True):
        piece.alone, piece.joined = own, max(own, with_space)
    return pieces


class _Packer:
    """Greedy packing of pieces into chunks, as the module docstring describes."""

    def __init__(
        self, text: str, pieces: list[_Piece], max_tokens: int, overlap: int, count: CountMany
    ) -> None:
        self.text, self.pieces, self.count = text, pieces, count
        self.max_tokens, self.overlap = max_tokens, overlap
        self.prefix = [0]  # prefix sums of the joined counts
        for piece in pieces:
            self.prefix.append(self.prefix[-1] + piece.joined)

    def estimate(self, first: int, stop: int) -> int:
        """Estimated tokens of pieces ``first .. stop-1`` as one text."""
        return self.pieces[first].alone + self.prefix[stop] - self.prefix[first + 1]

    def exact(self, first: int, stop: int) -> int:
        return self.count([self.text[self.pieces[first].start : self.pieces[stop - 1].end]])[0]

    def end_of(self, first: int, low: int) -> int:
        """Where a chunk starting at piece ``first`` ends (exclusive; at least ``low``)."""
        n, limit = len(self.pieces), self.max_tokens
        # the furthest end that fits, by the estimate: prefix sums are sorted
        stop = (
            bisect.bisect_right(
                self.prefix, limit - self.pieces[first].alone + self.prefix[first + 1]
            )
            - 1
        )
        stop = max(min(stop, n), low)
        if stop == n:
            return stop
        half = limit // 2
        for level in (_PARAGRAPH, _SENTENCE):
            for end in range(stop, low - 1, -1):
                if self.estimate(first, end) < half:
                    break
                if self.pieces[end - 1].level >= level:
                    return end
        return stop

    def next_start(self, first: int, stop: int) -> int:
        """The first piece of the chunk after ``first .. stop-1``: its overlap."""
        if stop >= len(self.pieces) or self.overlap == 0:
            return stop
        room = self.max_tokens - self.pieces[stop].joined
        start = stop
        while start - 1 > first:
            candidate = self.estimate(start - 1, stop)
            if candidate > self.overlap or candidate > room:
                break
            start -= 1
        return start

    def chunks(self) -> list[Chunk]:
        out: list[Chunk] = []
        first, low = 0, 1
        while first < len(self.pieces):
            stop = self.end_of(first, low)
            tokens = self.exact(first, stop)
            while tokens > self.max_tokens and stop - first > 1:
                if stop - 1 >= low:
                    stop -= 1  # the tokenizer counts the joined text higher: give back a piece
                else:
                    first += 1  # ... or a piece of the overlap
                tokens = self.exact(first, stop)
            start, end = self.pieces[first].start, self.pieces[stop - 1].end
            out.append(Chunk(len(out), start, end, self.text[start:end], tokens))
            first, low = self.next_start(first, stop), stop + 1
        return out


def chunk_text(text: str, max_tokens: int, overlap: int, count: CountMany) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens (as ``count`` counts them),
    consecutive chunks sharing at most ``overlap`` tokens of whole pieces. Empty or
    whitespace-only text gives no chunk."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap must be >= 0 and < max_tokens ({max_tokens}), got {overlap}")
    pieces = _pieces(text, max_tokens, count)
    if not pieces:
        return []
    return _Packer(text, pieces, max_tokens, overlap, count).chunks()
