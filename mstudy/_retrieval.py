"""Small in-memory retrieval over a corpus of texts: BM25, TF-IDF, or embeddings.

The sparse indexes are plain numpy arrays (no scipy): an inverted index in CSR form, one
row of postings (document numbers and precomputed term weights) per term. A query gathers
the postings of its terms and sums them per document with ``numpy.bincount``; the top
``k`` come from ``argpartition``. Terms found in more than ``max_df`` of the documents
(``the``, ``is``) are left out of queries. Memory: about 12 bytes per (term, document)
pair plus the vocabulary.

The embedding index takes any function from a list of texts to a 2-D array (for example
``SentenceTransformer(name).encode``) and ranks by cosine similarity.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mstudy.text import normalize

__all__ = [
    "BM25Index",
    "EmbeddingIndex",
    "Index",
    "TfidfIndex",
    "build_index",
    "tokenize",
]

F32 = npt.NDArray[np.float32]
Embed = Callable[[list[str]], Any]


def tokenize(text: str, analyzer: str = "word", ngram: int = 3) -> list[str]:
    """Terms of ``text``: normalised words, or character n-grams of the normalised text.

    ``analyzer="char"`` suits scripts written without spaces (Chinese, Japanese, Thai).
    """
    norm = normalize(text)
    if analyzer == "word":
        return norm.split()
    if analyzer == "char":
        squeezed = norm.replace(" ", "_")
        if len(squeezed) <= ngram:
            return [squeezed] if squeezed else []
        return [squeezed[i : i + ngram] for i in range(len(squeezed) - ngram + 1)]
    raise ValueError(f"analyzer must be 'word' or 'char', got {analyzer!r}")


class Index(Protocol):
    """A retrieval index over documents numbered ``0 .. len(index) - 1``."""

    def __len__(self) -> int: ...

    def search(
        self, query: str, k: int, *, exclude: Iterable[int] = ()
    ) -> list[tuple[int, float]]: ...


def _top_k(scores: F32, k: int, exclude: Iterable[int]) -> list[tuple[int, float]]:
    """The ``k`` best (document, score) pairs with a positive score, best first."""
    scores = scores.copy()
    for doc in exclude:
        if 0 <= doc < len(scores):
            scores[doc] = -np.inf
    positive = int(np.count_nonzero(scores > 0))
    k = min(k, positive)
    if k <= 0:
        return []
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.lexsort((best, -scores[best]))]  # score descending, then document number
    return [(int(d), float(scores[d])) for d in best]


class _Sparse:
    """An inverted index in CSR form: per term, postings of (document, weight)."""

    def __init__(
        self, texts: Sequence[str], *, analyzer: str = "word", ngram: int = 3, max_df: float = 1.0
    ) -> None:
        if not 0 < max_df <= 1:
            raise ValueError(f"max_df must be in (0, 1], got {max_df}")
        self.analyzer, self.ngram, self.max_df = analyzer, ngram, max_df
        self.vocab: dict[str, int] = {}
        term_ids: list[int] = []
        doc_ids: list[int] = []
        freqs: list[int] = []
        lengths = np.zeros(len(texts), dtype=np.float32)
        for doc, text in enumerate(texts):
            terms = tokenize(text, analyzer, ngram)
            lengths[doc] = len(terms)
            for term, count in Counter(terms).items():
                term_id = self.vocab.setdefault(term, len(self.vocab))
                term_ids.append(term_id)
                doc_ids.append(doc)
                freqs.append(count)
        self.n_docs = len(texts)
        terms_arr = np.asarray(term_ids, dtype=np.int64)
        order = np.argsort(terms_arr, kind="stable")
        self.docs = np.asarray(doc_ids, dtype=np.int32)[order]
        tf = np.asarray(freqs, dtype=np.float32)[order]
        df = np.bincount(terms_arr, minlength=len(self.vocab))
        self.indptr = np.zeros(len(self.vocab) + 1, dtype=np.int64)
        np.cumsum(df, out=self.indptr[1:])
        self.df = df
        self.lengths = lengths
        term_of = np.repeat(np.arange(len(self.vocab)), df)
        self.weights = self._weights(tf, term_of).astype(np.float32)

    def _weights(self, tf: F32, term_of: npt.NDArray[np.int64]) -> F32:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.n_docs

    def _query_terms(self, query: str) -> Counter[int]:
        limit = self.max_df * self.n_docs
        out: Counter[int] = Counter()
        for term in tokenize(query, self.analyzer, self.ngram):
            term_id = self.vocab.get(term)
            if term_id is not None and (self.df[term_id] <= limit or self.n_docs < 3):
                out[term_id] += 1
        return out

    def _query_weight(self, term_id: int, count: int) -> float:
        return 1.0

    def scores(self, query: str) -> F32:
        """A score for every document (0 where no query term occurs)."""
        terms = self._query_terms(query)
        if not terms or not self.n_docs:
            return np.zeros(self.n_docs, dtype=np.float32)
        docs, weights = [], []
        for term_id, count in terms.items():
            lo, hi = self.indptr[term_id], self.indptr[term_id + 1]
            docs.append(self.docs[lo:hi])
            weights.append(self.weights[lo:hi] * self._query_weight(term_id, count))
        summed = np.bincount(
            np.concatenate(docs), weights=np.concatenate(weights), minlength=self.n_docs
        )
        return summed.astype(np.float32)

    def search(self, query: str, k: int, *, exclude: Iterable[int] = ()) -> list[tuple[int, float]]:
        """The ``k`` documents scoring highest for ``query`` (positive scores only)."""
        return _top_k(self.scores(query), k, exclude)


class BM25Index(_Sparse):
    """Okapi BM25 (``k1``, ``b``) with the non-negative idf ``log(1 + (N - df + .5)/(df + .5))``."""

    def __init__(
        self,
        texts: Sequence[str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        analyzer: str = "word",
        ngram: int = 3,
        max_df: float = 1.0,
    ) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError("bm25: need k1 >= 0 and 0 <= b <= 1")
        self.k1, self.b = k1, b
        super().__init__(texts, analyzer=analyzer, ngram=ngram, max_df=max_df)

    def _weights(self, tf: F32, term_of: npt.NDArray[np.int64]) -> F32:
        n = max(self.n_docs, 1)
        idf = np.log1p((n - self.df + 0.5) / (self.df + 0.5)).astype(np.float32)
        avg = float(self.lengths.mean()) if self.n_docs else 1.0
        norm = self.k1 * (1 - self.b + self.b * self.lengths[self.docs] / max(avg, 1e-9))
        out = idf[term_of] * tf * (self.k1 + 1) / (tf + norm)
        return np.asarray(out, dtype=np.float32)


class TfidfIndex(_Sparse):
    """Cosine similarity of sublinear TF-IDF vectors (``1 + log tf`` times smoothed idf)."""

    def _weights(self, tf: F32, term_of: npt.NDArray[np.int64]) -> F32:
        n = self.n_docs
        self.idf = (np.log((1 + n) / (1 + self.df)) + 1).astype(np.float32)
        raw = (1 + np.log(tf)) * self.idf[term_of]
        norms = np.sqrt(np.bincount(self.docs, weights=raw * raw, minlength=n))
        out = raw / np.maximum(norms[self.docs], 1e-12)
        return np.asarray(out, dtype=np.float32)

    def _query_weight(self, term_id: int, count: int) -> float:
        return (1 + math.log(count)) * float(self.idf[term_id])

    def scores(self, query: str) -> F32:
        """Cosine similarity of ``query`` with every document."""
        terms = self._query_terms(query)
        norm = math.sqrt(sum(self._query_weight(t, c) ** 2 for t, c in terms.items()))
        out: F32 = super().scores(query) / np.float32(max(norm, 1e-12))
        return out


class EmbeddingIndex:
    """Cosine similarity of embeddings from ``embed(texts) -> array (n, d)``."""

    def __init__(self, texts: Sequence[str], embed: Embed, *, batch_size: int = 256) -> None:
        self.embed = embed
        chunks = [
            self._encode(list(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)
        ]
        self.vectors: F32 = np.concatenate(chunks) if chunks else np.zeros((0, 1), dtype=np.float32)

    def _encode(self, texts: list[str]) -> F32:
        vectors = np.asarray(self.embed(texts), dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(f"embed returned shape {vectors.shape} for {len(texts)} texts")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        out: F32 = vectors / np.maximum(norms, 1e-12)
        return out

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, query: str, k: int, *, exclude: Iterable[int] = ()) -> list[tuple[int, float]]:
        if not len(self.vectors):
            return []
        scores: F32 = self.vectors @ self._encode([query])[0]
        return _top_k(scores, k, exclude)


def _sentence_transformer(model: str) -> Embed:
    try:
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError(
            "the embedding backend with embed_model needs sentence-transformers "
            "(pip install sentence-transformers), or pass embed=<function>"
        ) from exc
    encoder = SentenceTransformer(model)

    def embed(texts: list[str]) -> Any:
        return encoder.encode(texts, convert_to_numpy=True)

    return embed


def build_index(
    texts: Sequence[str],
    backend: str = "bm25",
    *,
    embed: Embed | None = None,
    embed_model: str | None = None,
    **options: Any,
) -> Index:
    """An index of ``backend`` (``bm25``, ``tfidf`` or ``embedding``) over ``texts``."""
    if backend == "bm25":
        return BM25Index(texts, **options)
    if backend == "tfidf":
        return TfidfIndex(texts, **options)
    if backend == "embedding":
        if embed is None:
            if embed_model is None:
                raise ValueError("the embedding backend needs embed=<function> or embed_model")
            embed = _sentence_transformer(embed_model)
        return EmbeddingIndex(texts, embed, **options)
    raise ValueError(f"unknown retrieval backend {backend!r} (bm25, tfidf, embedding)")
