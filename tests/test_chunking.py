"""The chunker: size bound, overlap, exact offsets, full coverage, boundaries (hypothesis)."""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mstudy.documents import approx_tokens, chunk_text, token_counter
from mstudy.documents.chunking import Chunk, CountMany


def words(texts: Sequence[str]) -> list[int]:
    """A counter for which a joined text counts as the sum of its parts."""
    return [len(t.split()) for t in texts]


def check(
    text: str, chunks: list[Chunk], max_tokens: int, overlap: int, counter: CountMany
) -> None:
    for chunk in chunks:
        assert chunk.text == text[chunk.start : chunk.end]  # offsets map back exactly
        assert chunk.text == chunk.text.strip() and chunk.text
        assert counter([chunk.text])[0] == chunk.tokens <= max_tokens
    assert [c.index for c in chunks] == list(range(len(chunks)))
    covered = [False] * len(text)
    for chunk in chunks:
        covered[chunk.start : chunk.end] = [True] * (chunk.end - chunk.start)
    assert all(covered[i] for i, c in enumerate(text) if not c.isspace())  # nothing lost
    for before, after in itertools.pairwise(chunks):
        assert before.start < after.start and before.end < after.end  # progress, in order
        if after.start < before.end:
            shared = text[after.start : before.end]
            assert counter([shared])[0] <= overlap
        if overlap == 0:
            assert after.start >= before.end


# Scripts: Latin (with accents), Cyrillic, Greek, CJK (no spaces, own full stop), Arabic.
LETTERS = st.sampled_from(
    ["abcdefghij", "éàüøñç", "абвгдежз", "αβγδεζ", "漢字文章日本語", "مرحبا"]
).flatmap(lambda alphabet: st.text(alphabet, min_size=1, max_size=12))
SENTENCE = (
    st.lists(LETTERS, min_size=1, max_size=15)
    .map(" ".join)
    .flatmap(
        lambda body: st.sampled_from([".", "!", "?", "。", "", "…"]).map(lambda end: body + end)
    )
)
PARAGRAPH = st.lists(SENTENCE, min_size=1, max_size=8).flatmap(
    lambda sentences: st.sampled_from([" ", "  ", "\n", " \t"]).map(lambda s: s.join(sentences))
)
DOCUMENT = st.lists(PARAGRAPH, min_size=0, max_size=8).flatmap(
    lambda paragraphs: st.sampled_from(["\n\n", "\n \n", "\n\n\n"]).map(
        lambda s: s.join(paragraphs)
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=DOCUMENT,
    max_tokens=st.integers(1, 60),
    overlap_share=st.floats(0, 0.9),
    approximate=st.booleans(),
)
def test_chunks_respect_the_bound_overlap_offsets_and_cover_everything(
    text: str, max_tokens: int, overlap_share: float, approximate: bool
) -> None:
    overlap = min(int(max_tokens * overlap_share), max_tokens - 1)
    count: CountMany = token_counter(None) if approximate else words
    chunks = chunk_text(text, max_tokens, overlap, count)
    check(text, chunks, max_tokens, overlap, count)
    assert chunk_text(text, max_tokens, overlap, count) == chunks  # the same every time


@settings(max_examples=80, deadline=None)
@given(text=DOCUMENT, max_tokens=st.integers(4, 40))
def test_chunks_never_cut_inside_a_word_that_fits(text: str, max_tokens: int) -> None:
    chunks = chunk_text(text, max_tokens, max_tokens // 4, words)
    for chunk in chunks:  # with a word counter every word fits: cuts are at whitespace
        assert chunk.start == 0 or text[chunk.start - 1].isspace()
        assert (
            chunk.end == len(text) or text[chunk.end].isspace() or _after_cjk_stop(text, chunk.end)
        )


def _after_cjk_stop(text: str, end: int) -> bool:
    return text[end - 1] in "。！？"


@settings(max_examples=60, deadline=None)
@given(
    paragraphs=st.lists(
        st.lists(st.text("abcdefg", min_size=1, max_size=6), min_size=1, max_size=5).map(
            lambda ws: " ".join(ws) + "."
        ),
        min_size=2,
        max_size=12,
    )
)
def test_a_chunk_ends_at_a_paragraph_end_when_one_leaves_it_half_full(
    paragraphs: list[str],
) -> None:
    text = "\n\n".join(paragraphs)
    max_tokens = 12
    for chunk in chunk_text(text, max_tokens, 0, words):
        if chunk.end == len(text):
            continue
        at_paragraph_end = text[chunk.end : chunk.end + 2] == "\n\n"
        other_ends = [
            i
            for i in range(chunk.start + 1, len(text))
            if text[i : i + 2] == "\n\n"
            and len(text[chunk.start : i].split()) <= max_tokens
            and len(text[chunk.start : i].split()) >= max_tokens // 2
        ]
        assert at_paragraph_end or not other_ends


def test_overlap_repeats_whole_sentences_of_the_previous_chunk() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    chunks = chunk_text(text, 20, 5, words)
    assert len(chunks) > 2
    for before, after in itertools.pairwise(chunks):
        shared = text[after.start : before.end]
        assert shared and len(shared.split()) == 5  # one whole sentence of 5 words
        assert shared.startswith("Sentence") and shared.endswith(".")


def test_an_over_long_sentence_is_split_at_spaces_and_an_over_long_word_between_characters() -> (
    None
):
    long_sentence = " ".join(["word"] * 50) + "."
    chunks = chunk_text(long_sentence, 10, 0, words)
    assert all(len(c.text.split()) <= 10 for c in chunks)
    assert " ".join(c.text for c in chunks) == long_sentence
    url = "https://example.org/" + "x" * 400 + "\u0301"  # ends with a combining mark
    text = f"See {url} now."
    chunks = chunk_text(text, 16, 0, token_counter(None))
    assert len(chunks) > 5 and all(approx_tokens(c.text) <= 16 for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")
    assert not any(unicodedata.combining(text[c.start]) for c in chunks)


def test_empty_and_whitespace_give_no_chunk_and_bad_settings_are_refused() -> None:
    assert chunk_text("", 10, 0, words) == []
    assert chunk_text(" \n\n\t ", 10, 0, words) == []
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("a b", 10, 10, words)
    with pytest.raises(ValueError, match="max_tokens"):
        chunk_text("a b", 0, 0, words)


@settings(max_examples=15, deadline=None)
@given(text=DOCUMENT.filter(str.strip), other=DOCUMENT, max_tokens=st.integers(4, 40))
def test_chunk_ids_depend_on_the_document_alone(text: str, other: str, max_tokens: int) -> None:
    import tempfile
    from pathlib import Path

    from mstudy.documents import Documents

    def ids(folder: Path) -> list[str]:
        source = Documents(folder, max_tokens=max_tokens, overlap=max_tokens // 4)
        return [r.id for r in source.records() if r.fields["path"] == "d/doc.md"]

    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        for root in (Path(one), Path(two)):
            (root / "d").mkdir()
            (root / "d" / "doc.md").write_text(text, encoding="utf-8")
        (Path(two) / "a.txt").write_text(other or "x", encoding="utf-8")  # read before it
        first = ids(Path(one))
        assert first and len(set(first)) == len(first)
        assert ids(Path(one)) == first == ids(Path(two))
