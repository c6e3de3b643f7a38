"""Text normalisation and the small checks that parsers and filters share."""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_LABEL = re.compile(
    r"^\s*(?:reversed(?: fact| statement)?|paraphrase|rewritten(?: fact)?|answer|output|"
    r"explanation|response|solution)\s*:\s*",
    re.IGNORECASE,
)
# A refusal opens the reply; AI boilerplate may stand anywhere. Two patterns, so that the
# search through the text does not try the opening alternatives at every position.
_REFUSAL_OPENING = re.compile(
    r"\s*(?:i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i can not|i'?m unable|i am unable|"
    r"i won'?t|i will not|unfortunately,? i)",
    re.IGNORECASE,
)
_AI_BOILERPLATE = re.compile(r"\bas an ai\b|\bas a language model\b", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b", re.IGNORECASE)
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:,\d{3})*|\d*)(?:\.\d+)?(?:/\d+)?%?$")


# ASCII text is normalised bytewise: lower case (which is its case fold), punctuation to space
_ASCII_FOLD = bytes(
    32 if _PUNCT.match(chr(i)) else ord(chr(i).lower()) if i < 128 else i for i in range(256)
)


def normalize(text: str) -> str:
    """Case-folded, NFKC, punctuation-free, single-spaced text: the key for "same text"."""
    if text.isascii():  # already in NFKC form; one table lookup a character
        return " ".join(text.encode("ascii").translate(_ASCII_FOLD).decode("ascii").split())
    text = unicodedata.normalize("NFKC", text)
    return " ".join(_PUNCT.sub(" ", text.casefold()).split())


def collapse_space(text: str) -> str:
    """Text with runs of white space folded to one space."""
    return _SPACE.sub(" ", text).strip()


class Normalized:
    """Text normalised once, then searched for whole normalised phrases many times."""

    __slots__ = ("_padded", "text")

    def __init__(self, text: str) -> None:
        self.text = normalize(text)
        self._padded = f" {self.text} "

    def position(self, needle: str) -> int:
        """Index of the first occurrence of normalised ``needle`` (-1 if absent or empty)."""
        n = normalize(needle)
        return self._padded.find(f" {n} ") if n else -1

    def contains(self, needle: str) -> bool:
        """Whether normalised ``needle`` occurs as whole words."""
        return self.position(needle) >= 0


def contains(haystack: str, needle: str) -> bool:
    """Whether ``needle`` occurs in ``haystack``, ignoring case, punctuation and spacing."""
    return Normalized(haystack).contains(needle)


def position(haystack: str, needle: str) -> int:
    """Index of the first occurrence of ``needle`` in normalised ``haystack`` (-1 if absent)."""
    return Normalized(haystack).position(needle)


def strip_label(text: str) -> str:
    """Remove a leading label such as ``Answer:`` and the quotes small models wrap replies in."""
    text = _LABEL.sub("", text.strip(), count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    if len(text) >= 2 and text[0] == "“" and text[-1] == "”":
        text = text[1:-1].strip()
    return text


def first_line(text: str) -> str:
    """The first non-empty line of ``text``, stripped."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def is_refusal(text: str) -> bool:
    """Whether the text reads like a refusal or AI boilerplate."""
    head = text[:400]
    return bool(_REFUSAL_OPENING.match(head) or _AI_BOILERPLATE.search(head))


def _as_number(text: str) -> Fraction | None:
    cleaned = text.strip().rstrip(".").replace("$", "").replace(" ", "")
    if not cleaned or not _NUMBER.match(cleaned):
        return None
    percent = cleaned.endswith("%")
    cleaned = cleaned.rstrip("%").replace(",", "")
    try:
        value = Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100 if percent else value


def normalize_answer(text: str) -> str:
    """Canonical form of a short answer: numbers as exact fractions, words normalised."""
    number = _as_number(text)
    if number is not None:
        return str(number)
    words = _ARTICLES.sub(" ", normalize(text))
    return _SPACE.sub(" ", words).strip()


def answers_match(got: str, gold: str) -> bool:
    """Whether two final answers agree after normalisation (``1,000`` == ``1000.0``)."""
    a, b = _as_number(got), _as_number(gold)
    if a is not None and b is not None:
        return a == b
    return normalize_answer(got) == normalize_answer(gold) != ""


__all__ = [
    "Normalized",
    "answers_match",
    "collapse_space",
    "common_prefix_length",
    "contains",
    "first_line",
    "is_refusal",
    "normalize",
    "normalize_answer",
    "position",
    "strip_label",
]


def common_prefix_length(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` share (``"founder"``, ``"founded"``: 6)."""
    shared = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        shared += 1
    return shared
