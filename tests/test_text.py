"""Phrase search on normalised text: the checks of reverse and reverse_check rely on it."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from mstudy.text import Normalized, contains, is_refusal, normalize, position

words = st.lists(st.sampled_from(["Ada", "quill", "Founded", "the", "QUILLWORKS", "co."]))


@given(words, words)
def test_a_phrase_is_found_as_whole_words_ignoring_case_and_punctuation(
    text: list[str], needle: list[str]
) -> None:
    haystack, phrase = " ".join(text), ", ".join(needle)
    said = Normalized(haystack)
    norm_words, needle_words = normalize(haystack).split(), normalize(phrase).split()
    whole = any(
        norm_words[i : i + len(needle_words)] == needle_words for i in range(len(norm_words))
    )
    assert said.contains(phrase) == contains(haystack, phrase) == (bool(needle_words) and whole)
    assert said.position(phrase) == position(haystack, phrase)


def _normalize_by_pattern(text: str) -> str:
    """The definition: NFKC, case fold, punctuation to space, runs of space to one."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", folded).split())


@given(st.text(st.characters(max_codepoint=127)) | st.text())
def test_normalize_follows_its_definition(text: str) -> None:
    """ASCII text takes a table lookup instead of the pattern: the result is the same."""
    assert normalize(text) == _normalize_by_pattern(text)


def test_normalize_every_ascii_character() -> None:
    every, letters = "".join(map(chr, range(128))), "abcdefghijklmnopqrstuvwxyz"
    assert normalize(every) == _normalize_by_pattern(every) == f"0123456789 {letters} _ {letters}"


def test_positions_order_the_phrases() -> None:
    said = Normalized("Quillworks was founded by Ada Quill.")
    assert said.text == "quillworks was founded by ada quill"
    assert 0 <= said.position("QUILLWORKS") < said.position("Ada Quill")
    assert said.position("Quill") > said.position("ada")  # whole words: not inside Quillworks
    assert said.position("") == -1 and not said.contains("  ")


# The single pattern is_refusal used to search with: the two it uses now must agree with it.
_ONE_PATTERN = re.compile(
    r"^\s*(?:i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i can not|i'?m unable|i am unable|"
    r"i won'?t|i will not|unfortunately,? i)|\bas an ai\b|\bas a language model\b",
    re.IGNORECASE,
)
_PIECES = st.sampled_from(
    ["I'm sorry", "i cannot", "Sorry,", "UNFORTUNATELY I", "as an AI", "As a language model",
     "as an aide", "sorry", " ", "\n", "x", "As", "an", "ai", "ſorry", "K", "é", ".", "I won't"]
)  # fmt: skip


@given(st.lists(_PIECES | st.text(max_size=5), max_size=12).map("".join))
def test_is_refusal_agrees_with_one_pattern(text: str) -> None:
    assert is_refusal(text) == bool(_ONE_PATTERN.search(text[:400]))


def test_is_refusal_examples() -> None:
    assert is_refusal("  I'm sorry, but I can't help with that.")
    assert is_refusal("Here it is. As an AI, I have no opinions.")
    assert not is_refusal("Paris is the capital of France; sorry is a word.")
    assert not is_refusal("He was as an aide to the king.")
