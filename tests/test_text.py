"""Phrase search on normalised text: the checks of reverse and reverse_check rely on it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mstudy.text import Normalized, contains, normalize, position

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


def test_positions_order_the_phrases() -> None:
    said = Normalized("Quillworks was founded by Ada Quill.")
    assert said.text == "quillworks was founded by ada quill"
    assert 0 <= said.position("QUILLWORKS") < said.position("Ada Quill")
    assert said.position("Quill") > said.position("ada")  # whole words: not inside Quillworks
    assert said.position("") == -1 and not said.contains("  ")
