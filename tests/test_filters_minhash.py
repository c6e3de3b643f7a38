"""``near_dedup``: MinHash signatures, banded LSH, streaming verdicts."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mstudy import Completion, Example, Message, Rejection, Request, ScriptedTeacher, Study
from mstudy.config import parse_config
from mstudy.filters import minhash
from mstudy.filters.minhash import MinHasher, NearDedup, optimal_bands, token_hashes
from mstudy.plugins import create
from mstudy.text import normalize


def example(text: str, strategy: str = "paraphrase", sample: int = 0) -> Example:
    request = Request(
        (Message("user", text),), sample=sample, source_id=f"s{sample}", strategy=strategy
    )
    return Example.from_completion(request, Completion(request.key, text), {"text": text})


WORDS = [f"w{i}" for i in range(5000)]


def doc(rng: random.Random, n: int = 60) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def edit(rng: random.Random, text: str, rate: float) -> str:
    words = text.split()
    for i in range(len(words)):
        if rng.random() < rate:
            words[i] = rng.choice(WORDS)
    return " ".join(words)


def jaccard(a: str, b: str, n: int = 3) -> float:
    def shingles(t: str) -> set[tuple[str, ...]]:
        w = normalize(t).split()
        return {tuple(w[i : i + n]) for i in range(max(len(w) - n + 1, 1))}

    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


# -- hashing ------------------------------------------------------------------------------------

ODD_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Z", "M", "Cc"]),
    max_size=60,
)


@given(ODD_TEXT)
def test_tokens_are_the_words_of_normalize(text: str) -> None:
    hashes, offsets = token_hashes([text])
    words = normalize(text).split()
    assert offsets[1] == max(len(words), 1)
    if words:
        same, _ = token_hashes([" ".join(words)])
        assert np.array_equal(hashes, same)


@given(st.lists(st.text(alphabet="abc xyz", max_size=12), min_size=1, max_size=6))
def test_equal_words_hash_equal(texts: list[str]) -> None:
    hashes, offsets = token_hashes(texts)
    seen: dict[str, int] = {}
    for t, lo, hi in zip(texts, offsets[:-1], offsets[1:], strict=True):
        for word, h in zip(normalize(t).split(), hashes[lo:hi].tolist(), strict=False):
            assert seen.setdefault(word, h) == h


@given(
    st.lists(
        st.sampled_from(["Olaf", "brandt", "lena", "Ünïcödé", "日本", "42", "x_y"]), max_size=12
    ),
    st.sampled_from([" ", "  ", ", ", "! ", " - ", "\n", "\t"]),
)
def test_signature_ignores_case_punctuation_and_spacing(words: list[str], sep: str) -> None:
    hasher = MinHasher(64)
    plain = " ".join(w.casefold() for w in words)
    noisy = sep.join(w.upper() for w in words) + "."
    assert np.array_equal(hasher.signatures([plain]), hasher.signatures([noisy]))


@settings(max_examples=50)
@given(st.lists(ODD_TEXT, min_size=1, max_size=8))
def test_batch_signatures_equal_one_by_one(texts: list[str]) -> None:
    hasher = MinHasher(32, ngram=2)
    batch = hasher.signatures(texts)
    for i, text in enumerate(texts):
        assert np.array_equal(batch[i], hasher.signatures([text])[0])


def test_deterministic_for_a_seed() -> None:
    texts = ["the quick brown fox", "jumps over the lazy dog", ""]
    a = MinHasher(64, seed=7).signatures(texts)
    assert np.array_equal(a, MinHasher(64, seed=7).signatures(texts))
    assert not np.array_equal(a, MinHasher(64, seed=8).signatures(texts))
    assert a.dtype == np.uint32 and a.shape == (3, 64)


def test_signature_agreement_estimates_jaccard() -> None:
    rng = random.Random(0)
    hasher = MinHasher(256)
    errors = []
    for _ in range(30):
        a = doc(rng, 80)
        b = edit(rng, a, rng.uniform(0.02, 0.3))
        sig = hasher.signatures([a, b])
        errors.append(float((sig[0] == sig[1]).mean()) - jaccard(a, b))
    assert abs(float(np.mean(errors))) < 0.03 and float(np.std(errors)) < 0.06


def test_optimal_bands_match_datasketch() -> None:
    # values of datasketch.lsh._optimal_param(threshold, 128, 0.5, 0.5)
    assert optimal_bands(0.8, 128) == (9, 13)
    assert optimal_bands(0.5, 128) == (25, 5)
    assert optimal_bands(0.9, 128) == (5, 25)


# -- the filter ---------------------------------------------------------------------------------


def test_near_duplicates_are_rejected_and_others_kept() -> None:
    rng = random.Random(1)
    originals = [doc(rng, 60) for _ in range(150)]
    near = [edit(rng, originals[i], 0.03) for i in range(0, 150, 3)]
    f = NearDedup(threshold=0.7)
    kept = [t for t in originals if isinstance(f.check(example(t)), Example)]
    assert len(kept) == len(originals)  # random documents share nothing
    verdicts = [f.check(example(t)) for t in near]
    close = [
        v
        for v, t, i in zip(verdicts, near, range(0, 150, 3), strict=True)
        if jaccard(t, originals[i]) >= 0.85
    ]
    recall = sum(isinstance(v, Rejection) for v in close) / len(close)
    assert len(close) > 20 and recall >= 0.9  # LSH finds a J=0.85 pair with p ~ 0.97
    rejection = next(v for v in verdicts if isinstance(v, Rejection))
    assert rejection.stage == "filter:near_dedup" and rejection.reason == "near duplicate"
    assert "estimated Jaccard" in rejection.detail and "with kept example" in rejection.detail
    assert len(f) == len(originals) + sum(isinstance(v, Example) for v in verdicts)


def test_verify_keeps_candidates_below_the_threshold() -> None:
    rng = random.Random(2)
    base = doc(rng, 40)
    far = edit(rng, base, 0.5)
    f = NearDedup(threshold=0.9, bands=64, rows=1)  # every shared row makes a candidate
    assert isinstance(f.check(example(base)), Example)
    assert isinstance(f.check(example(far)), Example)
    loose = NearDedup(threshold=0.9, bands=64, rows=1, verify=False)
    loose.check(example(base))
    assert isinstance(loose.check(example(far)), Rejection)


@settings(max_examples=40)
@given(st.lists(st.sampled_from(["a b c d", "a b c e", "x y z", "", "a b c d!", "q"]), max_size=12))
def test_check_many_equals_check_one_by_one(texts: list[str]) -> None:
    one, many = NearDedup(threshold=0.5, num_perm=32), NearDedup(threshold=0.5, num_perm=32)
    singles = [type(one.check(example(t, sample=i))) for i, t in enumerate(texts)]
    batch = [type(v) for v in many.check_many([example(t, sample=i) for i, t in enumerate(texts)])]
    assert singles == batch
    assert sum(v is Example for v in singles) <= len({normalize(t) for t in texts})


def test_scope() -> None:
    per_strategy, everywhere = NearDedup(), NearDedup(scope="global")
    for f in (per_strategy, everywhere):
        f.check(example("Lena Brandt's father is Olaf Brandt.", "reverse"))
    assert isinstance(per_strategy.check(example("Lena Brandt's father is Olaf Brandt.")), Example)
    assert isinstance(everywhere.check(example("Lena Brandt's father is Olaf Brandt.")), Rejection)


def test_max_docs_forgets_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(minhash._Index, "CHUNK", 4)
    f = NearDedup(max_docs=4)
    rng = random.Random(3)
    texts = [doc(rng, 30) for _ in range(20)]
    for t in texts:
        f.check(example(t))
    assert len(f) <= 4 + 2 * 4
    assert isinstance(f.check(example(texts[0])), Example)  # forgotten
    assert isinstance(f.check(example(texts[-1])), Rejection)  # remembered


def test_char_shingles_for_scripts_without_spaces() -> None:
    a = "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。"
    b = "東京は日本の首都であり、世界で最も人口の多い都市圏のひとつです。"
    words, chars = NearDedup(threshold=0.6), NearDedup(threshold=0.6, unit="char", ngram=3)
    for f in (words, chars):
        f.check(example(a))
    assert isinstance(words.check(example(b)), Example)
    assert isinstance(chars.check(example(b)), Rejection)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "word",
        "  ",
        "!!!",
        "x" * 1_000_000,
        "数据 " * 200_000,
        ("mixed Текст 混合 عربى " * 60_000),
    ],
    ids=["empty", "one-token", "spaces", "punctuation", "1MB-token", "1MB-cjk", "1MB-mixed"],
)
def test_odd_texts(text: str) -> None:
    f = NearDedup()
    assert isinstance(f.check(example(text)), Example)
    again = f.check(example(text, sample=1))
    assert isinstance(again, Rejection)


def test_invalid_settings() -> None:
    for kwargs in ({"threshold": 0}, {"scope": "run"}, {"bands": 3}, {"bands": 20, "rows": 20}):
        with pytest.raises(ValueError):
            NearDedup(**kwargs)  # type: ignore[arg-type]


def test_by_name_and_from_toml(tmp_path: Path) -> None:
    assert isinstance(create("filters", "near_dedup", threshold=0.6), NearDedup)
    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(["A cat sat on the mat today."] * 3)]
    (tmp_path / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = parse_config(
        textwrap.dedent(
            """
            [source]
            path = "facts.jsonl"

            [teacher]
            name = "scripted"
            reply = "In other words, {{ text }}"

            [[strategies]]
            name = "paraphrase"
            max_ratio = 3.0

            [[filters]]
            name = "near_dedup"
            threshold = 0.7
            num_perm = 64
            ngram = 2
            """
        ),
        tmp_path / "study.toml",
    )
    study, source = config.build()
    report = study.run(source)
    assert report.accepted == 1
    assert report.strategies["paraphrase"].rejected == {("filter:near_dedup", "near duplicate"): 2}
    assert report.filters["near_dedup"].checked == 3


def test_in_a_study_with_scripted_teacher() -> None:
    teacher = ScriptedTeacher({"paraphrase": "Put another way, {{ text }}"})
    study = Study(teacher, ["paraphrase"], [NearDedup(threshold=0.6)])
    rows = [
        {"text": "Olaf Brandt is the father of Lena Brandt."},
        {"text": "Olaf Brandt is the father of Lena Brandt!"},
    ]
    kept = list(study.iter(rows))
    assert len(kept) == 1
