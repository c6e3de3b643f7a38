"""``connect`` and the retrieval it stands on (BM25, TF-IDF, embeddings)."""

from __future__ import annotations

import itertools
import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mstudy import (
    Completion,
    Example,
    Record,
    RecordError,
    Rejection,
    Request,
    ScriptedTeacher,
    Study,
)
from mstudy._retrieval import BM25Index, EmbeddingIndex, TfidfIndex, build_index, tokenize
from mstudy.config import parse_config
from mstudy.plugins import create
from mstudy.strategies.connect import Connect

FACTS = [
    {"id": "f1", "text": "Olaf Brandt is the father of Lena Brandt."},
    {"id": "f2", "text": "Lena Brandt lives in Meridia."},
    {"id": "f3", "text": "The Zorvath Tower stands in Meridia."},
    {"id": "f4", "text": "Water boils at 100 degrees at sea level."},
    {"id": "f5", "text": "Olaf Brandt was born in Tarvel in 1950."},
    {"id": "f6", "text": "Tarvel is a fishing town on the coast."},
]
TEXTS = [f["text"] for f in FACTS]


def linker(request: Request) -> str:
    """Joins the record with its best related fact (what a good teacher would say)."""
    first = str(request.variables["related_texts"][0]).rstrip(".")
    return f"{str(request.variables['text']).rstrip('.')}; also, {first}."


# -- retrieval ------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [BM25Index(TEXTS), TfidfIndex(TEXTS)], ids=["bm25", "tfidf"])
def test_sparse_ranking(index: Any) -> None:
    hits = index.search("Where does Lena Brandt live?", 3)
    assert hits[0][0] == 1
    assert [d for d, _ in index.search("Olaf Brandt", 6, exclude=[0])][:1] == [4]
    assert index.search("nothing matches these words", 3) == []
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(hits))


def test_tfidf_scores_are_cosines() -> None:
    index = TfidfIndex(TEXTS)
    assert index.search(TEXTS[3], 1)[0] == (3, pytest.approx(1.0, abs=1e-5))


def test_embedding_backend() -> None:
    def embed(texts: list[str]) -> np.ndarray:
        return np.array([[t.count("Brandt"), t.count("Meridia"), 0.1] for t in texts])

    index = EmbeddingIndex(TEXTS, embed)
    assert index.search("Brandt", 2)[0][0] in (0, 1, 4)
    assert index.search("Meridia Meridia", 1, exclude=[1])[0][0] == 2
    with pytest.raises(ValueError, match="needs embed"):
        build_index(TEXTS, "embedding")


def test_char_analyzer_for_scripts_without_spaces() -> None:
    texts = ["東京は日本の首都です", "大阪は日本の都市です", "パリはフランスの首都です"]
    assert BM25Index(texts).search("東京は日本の首都", 1) == []  # one "word" per text
    assert BM25Index(texts, analyzer="char", ngram=2).search("東京は日本の首都", 1)[0][0] == 0
    assert tokenize("ab c", "char", 2) == ["ab", "b_", "_c"]


@settings(max_examples=50)
@given(
    st.lists(st.text(alphabet="abcde fgh", max_size=20), min_size=1, max_size=12),
    st.text(alphabet="abcde fgh", max_size=12),
    st.integers(1, 5),
    st.sets(st.integers(0, 11), max_size=4),
)
def test_search_contract(texts: list[str], query: str, k: int, exclude: set[int]) -> None:
    for index in (BM25Index(texts), TfidfIndex(texts)):
        hits = index.search(query, k, exclude=exclude)
        assert len(hits) <= k
        assert not {d for d, _ in hits} & exclude
        assert all(s > 0 for _, s in hits)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


# -- the strategy ---------------------------------------------------------------------------------


def test_related_records_exclude_the_record_and_its_copies() -> None:
    corpus = [*FACTS, {"id": "f1-copy", "text": "olaf brandt is the father of LENA BRANDT"}]
    connect = Connect(corpus=corpus, k=2)
    related = connect.related("f1", FACTS[0]["text"])
    ids = [rid for rid, _, _ in related]
    assert len(ids) == 2 and "f1" not in ids and "f1-copy" not in ids
    assert set(ids) <= {"f2", "f5"}


def test_provenance_lists_every_source_id() -> None:
    study = Study(ScriptedTeacher(linker), [Connect(corpus=FACTS, k=2)])
    items = list(study.stream(FACTS))
    kept = [i for i in items if isinstance(i, Example)]
    assert kept
    for item in kept:
        ids = item.provenance.to_dict()["source_ids"]
        assert ids[0] == item.source_id and len(ids) == 3 and len(set(ids)) == 3
        assert item.fields["related"] == ids[1:]
        assert item.to_row()["provenance"]["source_ids"] == ids
    first = next(i for i in kept if i.source_id == "f1")
    assert first.fields["input"] == FACTS[0]["text"] and "also" in first.fields["text"]


def test_prompt_holds_the_related_texts() -> None:
    connect = Connect(corpus=FACTS, k=2, max_related_chars=20)
    request = connect.requests(Record.from_mapping(FACTS[1]))[0]
    prompt = request.messages[-1].content
    assert prompt.startswith("Fact: Lena Brandt lives in Meridia.")
    assert prompt.count("\n- ") == 2 and "..." in prompt
    assert request.variables["related_ids"][0] in {"f1", "f3"}


def test_prefill_reaches_the_request_and_may_use_the_related_records() -> None:
    record = Record.from_mapping(FACTS[1])
    plain = Connect(corpus=FACTS, k=2).requests(record)[0]
    assert plain.prefill is None
    fixed = Connect(corpus=FACTS, k=2, prefill="In short,").requests(record)[0]
    assert fixed.prefill == "In short," and fixed.key != plain.key
    counted = Connect(corpus=FACTS, k=2, prefill="Linking {{ related_ids | length }} facts:")
    assert counted.requests(record)[0].prefill == "Linking 2 facts:"
    assert counted.fingerprint != Connect(corpus=FACTS, k=2).fingerprint


# Request keys (a hash of messages, prefill, params and sample) computed with the code before
# Connect left request building to TemplateStrategy: the same corpus gives the same requests.
OLD_KEYS = {
    "default": [
        ["60d6f10fbc39290ac94f2644c4d06328"],
        ["8bb19f6a6c296821e84d4169f27c07a3"],
        ["39e2cb221958ece6ce6c8613a9485b91"],
        None,
        ["83468f87b035dd5892f31682e88290cf"],
        ["6f00285c1f485c5d3eaffb5822f3104e"],
    ],
    "k2-n2-seeded": [
        ["cb03438714b2baf368d964239028fd09", "3e9ccbf4f3b57857f92dc7c455c98515"],
        ["e7f5a65b6a9aa33f4427d85d73cf7b53", "97ad9c3baeaacde612b5956ded0290bf"],
        ["f76a8f07be9ce4dcb3ecee2314618b15", "e2ee6d8f985a0f7b40abf1264b4bc8ae"],
        None,
        ["ca2bae59b27c2977213e3a03fb40618c", "d792b5b64bdcf6ff3a4b0f58cf25aab1"],
        ["68a009a3f325c660584d7c18d64d10a7", "83b986372e3864aa607f8e7c377ecb95"],
    ],
    "tfidf-k1": [
        ["01855d073adfb5a1e53ff3205b629423"],
        ["eab6fc7a26bf541cafd41198f0e3d5a5"],
        ["1c61e7804aad7542ae621c9a1ee9975a"],
        None,
        ["6c4f7fad668744bc5c904b7ff0af56fa"],
        ["5348c2e34491e5687a24536b36b9c8fb"],
    ],
}
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "k2-n2-seeded": {"k": 2, "n": 2, "params": {"seed": 3}},
    "tfidf-k1": {"backend": "tfidf", "k": 1},
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_requests_are_the_same_as_before_the_template_vars_hook(name: str) -> None:
    connect = Connect(corpus=FACTS, **SETTINGS[name])
    got: list[list[str] | None] = []
    for fact in FACTS:
        try:
            requests = connect.requests(Record.from_mapping(fact))
        except RecordError:
            got.append(None)  # f4 (water) shares no word with any other fact
            continue
        got.append([r.key for r in requests])
        for request in requests:
            assert request.prefill is None and request.source_id == fact["id"]
            assert set(request.variables) == {"text", "related", "related_ids", "related_texts"}
    assert got == OLD_KEYS[name]


def test_replies_that_do_not_connect_are_rejected() -> None:
    connect = Connect(corpus=FACTS, k=2)
    record = Record.from_mapping(FACTS[1])
    request = connect.requests(record)[0]

    def parse(text: str) -> Example | Rejection:
        return connect.parse(record, request, Completion(request.key, text))[0]

    cases = {
        "Lena Brandt lives in Meridia.": "copy of a source",
        "Meridia.": "too short",
        "Cats are small animals that purr often.": "not connected",
        "Lena Brandt lives in Meridia, a nice place to be.": "not connected",
    }
    for text, reason in cases.items():
        verdict = parse(text)
        assert isinstance(verdict, Rejection) and verdict.reason == reason, text
    good = parse("Lena Brandt, daughter of Olaf Brandt, lives in Meridia near the Zorvath Tower.")
    assert isinstance(good, Example)


def test_no_related_record_is_a_rejection() -> None:
    study = Study(ScriptedTeacher(linker), [Connect(corpus=FACTS[:1], k=2)])
    items = list(study.stream(FACTS[:1]))
    assert len(items) == 1 and isinstance(items[0], Rejection)
    assert items[0].stage == "render" and "no related record" in items[0].detail


def test_invalid_settings() -> None:
    for kwargs in ({}, {"corpus": FACTS, "k": 0}, {"corpus": FACTS, "backend": "bm26"}):
        with pytest.raises(ValueError):
            Connect(**kwargs)
    with pytest.raises(ValueError, match="embed"):
        Connect(corpus=FACTS, backend="embedding")


@pytest.mark.parametrize("backend", ["bm25", "tfidf"])
def test_by_name_and_from_toml_on_the_studys_own_source(tmp_path: Path, backend: str) -> None:
    assert isinstance(create("strategies", "connect", corpus=FACTS), Connect)
    data = tmp_path / "data"
    data.mkdir()
    (data / "facts.jsonl").write_text("".join(json.dumps(f) + "\n" for f in FACTS))
    config = parse_config(
        textwrap.dedent(
            f"""
            [source]
            path = "data/facts.jsonl"

            [teacher]
            name = "scripted"
            reply = "{{{{ text }}}} It relates to this: {{{{ related_texts[0] }}}}"

            [[strategies]]
            name = "connect"
            corpus_path = "data/facts.jsonl"
            backend = "{backend}"
            k = 2
            min_linked = 1

            [[filters]]
            name = "near_dedup"
            """
        ),
        tmp_path / "study.toml",
    )
    study, source = config.build()
    report = study.run(source)
    stats = report.strategies["connect"]
    assert report.records == 6 and stats.requests == 5 and report.accepted == 5
    assert stats.rejected == {("render", "bad field"): 1}  # the fact about water links nothing
