"""Length and exact-dedup filters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mstudy import (
    Completion,
    ExactDedup,
    Example,
    GenerationParams,
    LengthFilter,
    Message,
    Rejection,
    Request,
)


def example(text: str, strategy: str = "paraphrase", sample: int = 0) -> Example:
    request = Request(
        (Message("user", text),),
        GenerationParams(),
        sample=sample,
        source_id="s",
        strategy=strategy,
    )
    return Example.from_completion(request, Completion(request.key, text), {"text": text})


def test_length_bounds_in_chars_and_words() -> None:
    f = LengthFilter(min_chars=5, max_words=3)
    assert isinstance(f.check(example("hello there")), Example)
    short = f.check(example("hey"))
    assert (
        isinstance(short, Rejection)
        and short.stage == "filter:length"
        and short.reason == "too short"
    )
    long = f.check(example("one two three four"))
    assert isinstance(long, Rejection) and long.reason == "too long" and "4 words" in long.detail
    assert long.row is not None and long.row["text"] == "one two three four"


def test_dedup_normalises_case_spacing_and_punctuation() -> None:
    f = ExactDedup()
    assert isinstance(f.check(example("Lena's father is Olaf.")), Example)
    dup = f.check(example("  lena s FATHER is olaf ", sample=1))
    assert isinstance(dup, Rejection) and dup.reason == "duplicate"


def test_dedup_scope() -> None:
    per_strategy = ExactDedup()
    assert isinstance(per_strategy.check(example("same", "a")), Example)
    assert isinstance(per_strategy.check(example("same", "b")), Example)
    everywhere = ExactDedup(scope="global")
    assert isinstance(everywhere.check(example("same", "a")), Example)
    assert isinstance(everywhere.check(example("same", "b")), Rejection)


@given(st.lists(st.text(max_size=20), max_size=30))
def test_dedup_keeps_exactly_one_per_normalised_text(texts: list[str]) -> None:
    from mstudy.text import normalize

    f = ExactDedup()
    kept = [t for i, t in enumerate(texts) if isinstance(f.check(example(t, sample=i)), Example)]
    assert len(kept) == len({normalize(t) for t in texts})
    assert len({normalize(t) for t in kept}) == len(kept)
