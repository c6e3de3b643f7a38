"""``connect``: link each record with its most related records, so knowledge is not fragmented.

For every record, the ``k`` most similar *other* records of a corpus are retrieved (BM25 by
default; TF-IDF or an embedding function as options) and the teacher writes a short text that
connects them. The example's provenance lists every source id used: the record's first, then
the related records' in rank order.

The corpus is the study's own source (give the same path or list) or any other collection of
records; its index is built on first use and held in memory (the texts plus the index, about
12 bytes per distinct word of each text).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from mstudy._retrieval import Embed, Index, build_index
from mstudy.errors import RecordError
from mstudy.records import (
    Completion,
    Example,
    GenerationParams,
    Record,
    Rejection,
    Request,
)
from mstudy.strategies.base import FewShot, Reject, TemplateStrategy, is_copy
from mstudy.text import normalize, strip_label

__all__ = ["Connect"]

_STOP_WORDS = (
    "a an the is are was were be been of in on at to for by with and or as it its this that "
    "these those from has have had not but which who whom whose what where when how than "
    "then there their they he she his her him we you i"
)
_STOP = frozenset(_STOP_WORDS.split())


def _content_words(text: str) -> set[str]:
    return {w for w in normalize(text).split() if w not in _STOP and len(w) > 1}


class Connect(TemplateStrategy):
    """Write a text that connects a record with the ``k`` most related records of a corpus.

    Args:
        corpus: the records to retrieve from: a list/iterable of dicts or a path (JSONL,
            Parquet, ...), read like a study source.
        corpus_path: the same as a path (a TOML config resolves it against its folder).
        k: how many related records to put in each prompt.
        backend: ``bm25`` (default), ``tfidf`` or ``embedding`` (with ``embed``, a function
            from a list of texts to vectors, or ``embed_model``, a sentence-transformers name).
        id_field: the corpus's id field (ids are content hashes where it is absent, the
            same as the study's records get).
        min_score: related records must score above this.
        max_related_chars: each related text is cut to this length in the prompt.
        min_linked: how many related records the reply must share a content word with.
        min_words: replies shorter than this are rejected.

    Rows: ``input`` (the record's text), ``text`` (the connecting text), ``answer`` (None)
    and ``related`` (the related records' ids); provenance ``source_ids`` lists all ids.
    """

    name = "connect"
    version = "1"
    roles = ("text",)
    system = (
        "You connect facts. Given one fact and a few related facts, write one or two "
        "sentences that state how the fact relates to them, using only what the facts say. "
        "Keep every name exactly as written."
    )
    template = (
        "Fact: {{ text }}\nRelated facts:\n{{ related }}\n"
        "Write one or two sentences that connect the fact with the related facts."
    )
    examples: ClassVar[Sequence[FewShot]] = (
        (
            {
                "text": "Olaf Brandt is the father of Lena Brandt.",
                "related": "- Lena Brandt lives in Meridia.\n- Olaf Brandt was born in 1950.",
            },
            "Olaf Brandt, born in 1950, is the father of Lena Brandt, who lives in Meridia.",
        ),
    )
    default_params = GenerationParams(max_new_tokens=128, temperature=0.7)
    # Requests depend on the corpus, which the fingerprint names but does not hash.
    memoizable = False

    def __init__(
        self,
        *,
        corpus: Any = None,
        corpus_path: str | None = None,
        k: int = 3,
        backend: str = "bm25",
        id_field: str = "id",
        min_score: float = 0.0,
        max_related_chars: int = 500,
        min_linked: int = 1,
        min_words: int = 5,
        embed: Embed | None = None,
        embed_model: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if corpus is None and corpus_path is None:
            raise ValueError("connect: give a corpus (records or a path) or corpus_path")
        if corpus is not None and corpus_path is not None:
            raise ValueError("connect: give corpus or corpus_path, not both")
        if k < 1:
            raise ValueError(f"connect: k must be >= 1, got {k}")
        if backend not in ("bm25", "tfidf", "embedding"):
            raise ValueError(f"connect: backend must be bm25, tfidf or embedding, got {backend!r}")
        if backend == "embedding" and embed is None and embed_model is None:
            raise ValueError("connect: the embedding backend needs embed or embed_model")
        if not 0 <= min_linked <= k:
            raise ValueError(f"connect: min_linked must be in [0, k], got {min_linked}")
        self.corpus = corpus if corpus is not None else corpus_path
        self.k, self.backend, self.id_field = k, backend, id_field
        self.min_score, self.max_related_chars = min_score, max_related_chars
        self.min_linked, self.min_words = min_linked, min_words
        self._embed, self.embed_model = embed, embed_model
        self._index: Index | None = None
        self._ids: list[str] = []
        self._texts: list[str] = []
        self._position: dict[str, int] = {}

    def settings(self) -> Mapping[str, Any]:
        corpus = self.corpus
        described = os.fspath(corpus) if isinstance(corpus, (str, os.PathLike)) else "records"
        return {
            **super().settings(),
            "corpus": described,
            "k": self.k,
            "backend": self.backend,
            "embed_model": self.embed_model,
            "min_score": self.min_score,
            "max_related_chars": self.max_related_chars,
            "min_linked": self.min_linked,
            "min_words": self.min_words,
        }

    # -- retrieval ------------------------------------------------------------------------

    def _records(self) -> Iterable[Record]:
        from mstudy.sources import iter_source

        for item in iter_source(self.corpus, id_field=self.id_field):
            if isinstance(item, Record):
                yield item

    def index(self) -> Index:
        """The corpus index (built on first use)."""
        if self._index is None:
            field = self.fields["text"]
            for record in self._records():
                value = record.fields.get(field)
                if isinstance(value, str) and value.strip():
                    self._position.setdefault(record.id, len(self._ids))
                    self._ids.append(record.id)
                    self._texts.append(value)
            self._index = build_index(
                self._texts, self.backend, embed=self._embed, embed_model=self.embed_model
            )
        return self._index

    def related(self, record_id: str, text: str) -> list[tuple[str, str, float]]:
        """The ``k`` records most related to ``text``: (id, text, score), best first.

        The record itself and records with the same normalised text are left out.
        """
        index = self.index()
        own = normalize(text)
        exclude = {i for i, rid in enumerate(self._ids) if rid == record_id}
        out: list[tuple[str, str, float]] = []
        wanted = self.k + len(exclude)
        while True:
            hits = index.search(text, wanted, exclude=exclude)
            out = [
                (self._ids[d], self._texts[d], score)
                for d, score in hits
                if score > self.min_score and normalize(self._texts[d]) != own
            ]
            if len(out) >= self.k or len(hits) < wanted:
                return out[: self.k]
            wanted *= 2

    # -- requests and parsing -------------------------------------------------------------

    def template_vars(self, record: Record, variables: Mapping[str, Any]) -> Mapping[str, Any]:
        """``related`` (the prompt's list), ``related_ids`` and ``related_texts``."""
        related = self.related(record.id, variables["text"])
        if not related:
            raise RecordError(
                f"record {record.id!r}: no related record in the corpus",
                record_id=record.id,
                field=self.fields["text"],
                reason="bad field",
            )
        limit = self.max_related_chars
        return {
            "related": "\n".join(
                f"- {t if len(t) <= limit else t[:limit].rstrip() + '...'}" for _, t, _ in related
            ),
            "related_ids": [rid for rid, _, _ in related],
            "related_texts": [t for _, t, _ in related],
        }

    def parse(
        self, record: Record, request: Request, completion: Completion
    ) -> list[Example | Rejection]:
        results = super().parse(record, request, completion)
        ids = (record.id, *(str(r) for r in request.variables.get("related_ids", ())))
        for item in results:
            if isinstance(item, Example):
                item.provenance = item.provenance._replace(source_ids=ids)
        return results

    def check(self, variables: Mapping[str, Any], text: str) -> Mapping[str, Any] | Reject:
        reply = strip_label(text)
        words = len(reply.split())
        if words < self.min_words:
            return Reject("too short", f"{words} words, need {self.min_words}")
        source: str = variables["text"]
        related: list[str] = list(variables.get("related_texts", ()))
        for other in (source, *related):
            if is_copy(reply, other):
                return Reject("copy of a source", reply[:120])
        if self.min_linked:
            said, own = _content_words(reply), _content_words(source)
            if not said & own:
                return Reject("not connected", "the reply shares no content word with the record")
            linked = 0
            for other in related:
                theirs = _content_words(other)
                new = theirs - own  # what this record adds; a mere repeat counts as any overlap
                linked += bool(said & (new or theirs))
            if linked < self.min_linked:
                return Reject(
                    "not connected",
                    f"the reply uses {linked} of {len(related)} related records, "
                    f"need {self.min_linked}",
                )
        return {
            "input": source,
            "text": reply,
            "answer": None,
            "related": list(variables.get("related_ids", ())),
        }
