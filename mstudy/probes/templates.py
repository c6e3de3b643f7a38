"""Template text of a world: placeholders, filling them, words, and the canonical form.

Pure text helpers shared by the world, its checks, its generator and the probe's filters.
"""

from __future__ import annotations

import re
from functools import lru_cache

from mstudy.text import normalize

__all__ = ["PLACEHOLDER", "canonical", "fill", "form_pattern", "words"]

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
"""A ``{name}`` placeholder in a template."""
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def words(template: str) -> set[str]:
    """Lower-case words of a template, placeholders removed."""
    return {w.casefold() for w in _WORD.findall(PLACEHOLDER.sub(" ", template))}


def fill(template: str, subject: str, obj: str) -> str:
    """``template`` with ``{subject}`` and ``{object}`` replaced."""
    return template.replace("{subject}", subject).replace("{object}", obj)


def canonical(text: str) -> str:
    """Normalised text without articles: the form reversals are compared in."""
    return " ".join(_ARTICLES.sub(" ", normalize(text)).split())


@lru_cache(maxsize=4096)
def form_pattern(form: str, subject: str, obj: str) -> re.Pattern[str]:
    """A regex over ``canonical(text) + " "`` for an inverse form; ``*`` is 0-4 words."""
    regex = ""
    for piece in re.split(r"(\{subject\}|\{object\}|\*)", form):
        if piece == "*":
            regex += r"(?:\S+ ){0,4}"
            continue
        text = canonical({"{subject}": subject, "{object}": obj}.get(piece, piece))
        if text:
            regex += re.escape(text + " ")
    return re.compile(regex)
