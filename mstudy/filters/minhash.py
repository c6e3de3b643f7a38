"""``near_dedup``: near-duplicate removal with MinHash signatures and banded LSH.

Each example's text is cut into shingles (word n-grams by default, character n-grams for
scripts written without spaces), hashed once, and summarised by a MinHash signature of
``num_perm`` values; two texts whose signatures agree in every row of some band land in the
same LSH bucket and become candidates. A candidate whose estimated Jaccard similarity reaches
``threshold`` (or any candidate, with ``verify=False``) makes the new example a duplicate.

Everything per text is vectorised with numpy over a batch of texts: code points are
classified, words split and hashed with a polynomial hash, shingles combined, and all
``num_perm`` permutations ``(a * x + b) mod 2**32`` applied to all shingles of the batch in
one pass. ``check_many`` takes a batch; ``check`` is a batch of one.

Streaming: each example is queried, then inserted if kept, in stream order, so the verdicts
are the same whatever the batch size. Memory grows with the *kept* examples (the index:
one signature of ``4 * num_perm`` bytes plus one bucket entry per band each), never with the
data read; ``max_docs`` caps it by forgetting the oldest kept examples. The same ``seed``
gives the same verdicts on every run and machine.
"""

from __future__ import annotations

import base64
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from mstudy._hashing import stable_hash
from mstudy.records import Example, Rejection

__all__ = [
    "MinHasher",
    "NearDedup",
    "optimal_bands",
    "shingle_hashes",
    "token_hashes",
]

U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_M64 = (1 << 64) - 1
_CHUNK_ELEMENTS = 1 << 20  # shingles x permutations computed at once (4 MiB of uint32)
_BATCH = 512  # texts hashed together by check_many
_EMPTY_TOKEN = 0x9E3779B97F4A7C15  # stands for the single "token" of an empty text
_word_table: npt.NDArray[np.bool_] | None = None
_STATE_FORMAT = "mstudy.near_dedup.v1"


def _word_chars() -> npt.NDArray[np.bool_]:
    """A table over the Basic Multilingual Plane: True where ``re``'s ``\\w`` matches."""
    global _word_table
    if _word_table is None:
        table = np.frombuffer(bytes(chr(c).isalnum() for c in range(0x10000)), dtype=np.bool_)
        table = table.copy()
        table[ord("_")] = True
        _word_table = table
    return _word_table


def _is_word(codes: U32) -> npt.NDArray[np.bool_]:
    """Whether each code point is a word character (``str.isalnum()`` or ``_``)."""
    table = _word_chars()
    astral = codes > 0xFFFF
    if not astral.any():
        return table[codes]
    out = table[np.where(astral, 0, codes)]
    high = np.unique(codes[astral])
    word = np.fromiter((chr(int(c)).isalnum() for c in high), dtype=np.bool_, count=len(high))
    out[astral] = word[np.searchsorted(high, codes[astral])]
    return out


def _mix(x: U64) -> U64:
    """The splitmix64 finaliser, in place: spreads every input bit over the output."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@lru_cache(maxsize=64)
def _word_base(seed: int) -> tuple[int, int]:
    """The odd base of the polynomial word hash for ``seed``, and its inverse mod 2**64."""
    rng = np.random.default_rng([seed, 1])
    base = int(rng.integers(1 << 62, 1 << 63, dtype=np.uint64)) | 1
    return base, pow(base, -1, 1 << 64)


_POWERS: dict[int, U64] = {}
_POWERS_CACHED = 1 << 18


def _powers(value: int, n: int) -> U64:
    """``value ** i mod 2**64`` for ``i < n``; cached up to ``_POWERS_CACHED`` entries."""
    size = 1 << max(n - 1, 1).bit_length()
    cached = _POWERS.get(value)
    if cached is not None and len(cached) >= n:
        return cached[:n]
    out = np.full(max(size, n), value, dtype=np.uint64)
    out[0] = 1
    np.cumprod(out, out=out)
    if len(out) <= _POWERS_CACHED:
        _POWERS[value] = out
    return out[:n]


@lru_cache(maxsize=64)
def _shingle_weights(seed: int, n: int) -> U64:
    rng = np.random.default_rng([seed, 2])
    weights: U64 = rng.integers(1, 1 << 63, size=n, dtype=np.uint64) | np.uint64(1)
    return weights


def _prepare(text: str) -> str:
    """Unicode-compatible, case-folded text (what ``mstudy.text.normalize`` starts with)."""
    return unicodedata.normalize("NFKC", text).casefold()


def _codes(texts: Sequence[str]) -> tuple[U32, I64]:
    """Code points of the prepared texts, joined by a space, and where each text starts."""
    prepared = [_prepare(t) for t in texts]
    lengths = np.fromiter((len(t) + 1 for t in prepared), dtype=np.int64, count=len(prepared))
    starts = np.zeros(len(prepared) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    joined = " ".join(prepared) + " "
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return codes, starts


def token_hashes(texts: Sequence[str], unit: str = "word", seed: int = 0) -> tuple[U64, I64]:
    """Hash every token of every text: 64-bit hashes and per-text offsets (``len + 1``).

    ``unit="word"`` tokens are runs of word characters after NFKC and case folding, the
    words of :func:`mstudy.text.normalize`; ``unit="char"`` tokens are the word characters
    themselves (punctuation and spacing dropped). A text without tokens gets one fixed token,
    so that every text has a signature and empty texts match each other.
    """
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    codes, starts = _codes(texts)
    is_word = _is_word(codes)
    if unit == "char":
        positions = np.flatnonzero(is_word)
        hashes = _mix(codes[positions].astype(np.uint64) ^ np.uint64(seed & _M64))
        token_doc = np.searchsorted(starts, positions, side="right") - 1
    else:
        word = is_word.view(np.int8)
        edges = np.empty(len(word), dtype=np.int8)
        edges[:1] = word[:1]
        np.subtract(word[1:], word[:-1], out=edges[1:])
        first = np.flatnonzero(edges == 1)
        last = np.flatnonzero(edges == -1)  # the joined text ends with a space
        base, inverse = _word_base(seed)
        n = len(codes)
        powers, inv_powers = _powers(base, n), _powers(inverse, n)
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(codes.astype(np.uint64) * powers, out=prefix[1:])
        hashes = (prefix[last] - prefix[first]) * inv_powers[first]
        hashes += (last - first).astype(np.uint64)
        hashes = _mix(hashes)
        if len(texts) == 1:
            return _single(hashes)
        token_doc = np.searchsorted(starts, first, side="right") - 1
    counts = np.bincount(token_doc, minlength=len(texts)).astype(np.int64)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        hashes = np.insert(hashes, np.searchsorted(token_doc, empty), np.uint64(_EMPTY_TOKEN))
        counts[empty] = 1
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return hashes, offsets


def _single(hashes: U64) -> tuple[U64, I64]:
    if not len(hashes):
        hashes = np.array([_EMPTY_TOKEN], dtype=np.uint64)
    return hashes, np.array([0, len(hashes)], dtype=np.int64)


def shingle_hashes(tokens: U64, offsets: I64, n: int, seed: int = 0) -> tuple[U32, I64]:
    """32-bit hashes of the n-token shingles of each text, and per-text offsets.

    A text shorter than ``n`` tokens is one shingle of all its tokens.
    """
    if n < 1:
        raise ValueError(f"shingle size must be >= 1, got {n}")
    total = len(tokens)
    weights = _shingle_weights(seed, n)
    if len(offsets) == 2:  # one text: no masking between texts needed
        count = max(total - n + 1, 1)
        combined = tokens[:count] * weights[0]
        for j in range(1, min(n, total)):
            combined += tokens[j : j + count] * weights[j]
        one = (_mix(combined) >> np.uint64(32)).astype(np.uint32)
        return one, np.array([0, count], dtype=np.int64)
    counts = np.diff(offsets)
    ends = np.repeat(offsets[1:], counts)
    padded = np.concatenate([tokens, np.zeros(n, dtype=np.uint64)])
    index = np.arange(total, dtype=np.int64)
    combined = padded[:total] * weights[0]
    for j in range(1, n):
        term = padded[j : j + total] * weights[j]
        term[index + j >= ends] = 0
        combined += term
    starts = np.repeat(offsets[:-1], counts)
    short = np.repeat(counts < n, counts)
    keep = (index <= ends - n) | ((index == starts) & short)
    shingles = (_mix(combined[keep]) >> np.uint64(32)).astype(np.uint32)
    per_doc = np.maximum(counts - n + 1, 1)
    out_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(per_doc, out=out_offsets[1:])
    return shingles, out_offsets


def optimal_bands(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """``(bands, rows)`` minimising the weighted false-positive and false-negative areas.

    The same criterion as datasketch's ``MinHashLSH``: a pair with Jaccard ``s`` becomes a
    candidate with probability ``1 - (1 - s**rows) ** bands``.
    """
    pairs = np.array(
        [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)],
        dtype=np.float64,
    )
    bands, rows = pairs[:, :1], pairs[:, 1:]
    lo = np.linspace(0.0, threshold, 201)[None, :]
    hi = np.linspace(threshold, 1.0, 201)[None, :]

    def area(y: npt.NDArray[np.float64], x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = ((y[:, 1:] + y[:, :-1]) * np.diff(x, axis=1)).sum(axis=1)
        return out / 2

    fp = area(1 - (1 - lo**rows) ** bands, lo)
    fn = area((1 - hi**rows) ** bands, hi)
    best = int(np.argmin(fp_weight * fp + fn_weight * fn))
    return int(pairs[best, 0]), int(pairs[best, 1])


class MinHasher:
    """MinHash signatures of texts: ``num_perm`` values of ``(a * x + b) mod 2**32``."""

    def __init__(
        self, num_perm: int = 128, *, ngram: int = 3, unit: str = "word", seed: int = 1
    ) -> None:
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        if unit not in ("word", "char"):
            raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        self.num_perm, self.ngram, self.unit, self.seed = num_perm, ngram, unit, seed
        rng = np.random.default_rng([seed, 3])
        self._a = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64).astype(np.uint32)
        self._a |= np.uint32(1)
        self._b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64).astype(np.uint32)

    def shingles(self, texts: Sequence[str]) -> tuple[U32, I64]:
        """Shingle hashes of ``texts`` and per-text offsets."""
        tokens, offsets = token_hashes(texts, self.unit, self.seed)
        return shingle_hashes(tokens, offsets, self.ngram, self.seed)

    def signatures(self, texts: Sequence[str]) -> U32:
        """A ``(len(texts), num_perm)`` array of signatures."""
        shingles, offsets = self.shingles(texts)
        return self._minhash(shingles, offsets)

    def _minhash(self, shingles: U32, offsets: I64) -> U32:
        docs = len(offsets) - 1
        sig = np.full((docs, self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        if docs == 0:
            return sig
        rows = max(1, _CHUNK_ELEMENTS // self.num_perm)
        if docs == 1 and len(shingles) <= rows:
            one = shingles[:, None] * self._a
            one += self._b
            sig[0] = one.min(axis=0)
            return sig
        buf = np.empty((min(rows, len(shingles)), self.num_perm), dtype=np.uint32)
        doc_of = np.repeat(np.arange(docs), np.diff(offsets))
        for lo in range(0, len(shingles), rows):
            hi = min(lo + rows, len(shingles))
            out = buf[: hi - lo]
            np.multiply(shingles[lo:hi, None], self._a[None, :], out=out)
            np.add(out, self._b[None, :], out=out)
            chunk_docs = doc_of[lo:hi]
            first = np.flatnonzero(np.diff(chunk_docs, prepend=-1))
            mins = np.minimum.reduceat(out, first, axis=0)
            which = chunk_docs[first]
            sig[which] = np.minimum(sig[which], mins)
        return sig


@dataclass(slots=True)
class _Chunk:
    """Kept examples ``start .. start + len(ids)``: signatures, band keys and ids."""

    start: int
    sigs: U32
    keys: U64
    ids: list[str] = field(default_factory=list)


class _Index:
    """Banded LSH buckets over kept signatures; memory grows with kept examples only."""

    CHUNK = 4096

    def __init__(self, num_perm: int, bands: int, max_docs: int | None) -> None:
        self.num_perm, self.bands, self.max_docs = num_perm, bands, max_docs
        self.buckets: dict[int, int] = {}
        self.more: dict[int, list[int]] = {}
        self.chunks: dict[int, _Chunk] = {}
        self.next = 0
        self.oldest = 0

    def __len__(self) -> int:
        return self.next - self.oldest

    def candidates(self, keys: list[int]) -> list[int]:
        found: list[int] = []
        buckets, more = self.buckets, self.more
        for key in keys:
            doc = buckets.get(key)
            if doc is not None:
                found.append(doc)
                extra = more.get(key)
                if extra:
                    found.extend(extra)
        return found

    def signature(self, doc: int) -> U32:
        chunk = self.chunks[doc // self.CHUNK]
        row: U32 = chunk.sigs[doc - chunk.start]
        return row

    def example_id(self, doc: int) -> str:
        chunk = self.chunks[doc // self.CHUNK]
        return chunk.ids[doc - chunk.start]

    def insert(self, keys: list[int], key_row: U64, sig: U32, example_id: str) -> None:
        doc = self.next
        self.next += 1
        number = doc // self.CHUNK
        chunk = self.chunks.get(number)
        if chunk is None:
            chunk = self.chunks[number] = _Chunk(
                number * self.CHUNK,
                np.empty((self.CHUNK, self.num_perm), dtype=np.uint32),
                np.empty((self.CHUNK, self.bands), dtype=np.uint64),
            )
        chunk.sigs[doc - chunk.start] = sig
        chunk.keys[doc - chunk.start] = key_row
        chunk.ids.append(example_id)
        buckets = self.buckets
        for key in keys:
            if buckets.setdefault(key, doc) != doc:
                self.more.setdefault(key, []).append(doc)
        if self.max_docs is not None and len(self) > self.max_docs + self.CHUNK:
            self._evict_oldest_chunk()

    def _evict_oldest_chunk(self) -> None:
        number = self.oldest // self.CHUNK
        chunk = self.chunks.pop(number)
        self.oldest = chunk.start + self.CHUNK
        for row, doc in enumerate(range(chunk.start, chunk.start + len(chunk.ids))):
            for key in chunk.keys[row].tolist():
                extra = self.more.get(key)
                if self.buckets.get(key) == doc:
                    if extra:
                        self.buckets[key] = extra.pop(0)
                        if not extra:
                            del self.more[key]
                    else:
                        del self.buckets[key]
                elif extra and doc in extra:
                    extra.remove(doc)
                    if not extra:
                        del self.more[key]


class NearDedup:
    """Reject examples whose text nearly duplicates one kept before (MinHash + LSH).

    Args:
        threshold: Jaccard similarity of shingle sets at and above which two texts are
            near-duplicates (0 < threshold <= 1).
        num_perm: signature length; more is more precise and slower.
        ngram: shingle size in tokens (words, or characters with ``unit="char"``).
        unit: ``"word"`` (default) or ``"char"`` (for scripts written without spaces).
        bands / rows: the LSH banding; by default chosen from ``threshold`` (equal weights
            on false positives and false negatives, as datasketch does).
        verify: confirm LSH candidates by their estimated Jaccard similarity (keeps false
            positives out; costs one signature compare per candidate).
        field: the example field compared (default ``text``).
        scope: ``"strategy"`` compares within one strategy's outputs, ``"global"`` across.
        max_docs: remember at most about this many kept examples (the oldest are forgotten).
        seed: seeds every hash function; the same seed gives the same verdicts.
    """

    name = "near_dedup"

    def __init__(
        self,
        *,
        threshold: float = 0.8,
        num_perm: int = 128,
        ngram: int = 3,
        unit: str = "word",
        bands: int | None = None,
        rows: int | None = None,
        verify: bool = True,
        field: str = "text",
        scope: str = "strategy",
        max_docs: int | None = None,
        seed: int = 1,
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"near_dedup: threshold must be in (0, 1], got {threshold}")
        if scope not in ("strategy", "global"):
            raise ValueError(f"near_dedup: scope must be 'strategy' or 'global', got {scope!r}")
        if max_docs is not None and max_docs < 1:
            raise ValueError(f"near_dedup: max_docs must be >= 1, got {max_docs}")
        self.hasher = MinHasher(num_perm, ngram=ngram, unit=unit, seed=seed)
        if bands is None and rows is None:
            bands, rows = optimal_bands(threshold, num_perm)
        elif bands is None or rows is None:
            raise ValueError("near_dedup: give both bands and rows, or neither")
        if bands < 1 or rows < 1 or bands * rows > num_perm:
            raise ValueError(
                f"near_dedup: need bands >= 1, rows >= 1 and bands * rows <= num_perm "
                f"({bands} * {rows} > {num_perm})"
            )
        self.threshold, self.num_perm, self.ngram, self.unit = threshold, num_perm, ngram, unit
        self.bands, self.rows, self.verify = bands, rows, verify
        self.field, self.scope, self.max_docs, self.seed = field, scope, max_docs, seed
        rng = np.random.default_rng([seed, 4])
        self._row_weights = rng.integers(1, 1 << 63, size=rows, dtype=np.uint64) | np.uint64(1)
        self._band_salt = rng.integers(0, 1 << 63, size=bands, dtype=np.uint64)
        self._indexes: dict[str, _Index] = {}

    def __repr__(self) -> str:
        return (
            f"NearDedup(threshold={self.threshold}, num_perm={self.num_perm}, "
            f"ngram={self.ngram}, unit={self.unit!r}, bands={self.bands}, rows={self.rows}, "
            f"scope={self.scope!r})"
        )

    @property
    def stage(self) -> str:
        return f"filter:{self.name}"

    def __len__(self) -> int:
        """Kept examples remembered, over all scopes."""
        return sum(len(index) for index in self._indexes.values())

    def band_keys(self, signatures: U32) -> U64:
        """LSH bucket keys, ``(len(signatures), bands)``: one 64-bit hash per band."""
        used = signatures[:, : self.bands * self.rows].astype(np.uint64)
        banded = used.reshape(len(signatures), self.bands, self.rows)
        keys = (banded * self._row_weights).sum(axis=2, dtype=np.uint64)
        keys += self._band_salt
        return _mix(keys)

    def _text(self, example: Example) -> str:
        value = example.fields.get(self.field)
        if value is None:
            return ""
        return value if isinstance(value, str) else str(value)

    def check(self, example: Example) -> Example | Rejection:
        """Keep ``example`` unless it nearly duplicates a kept one; remember it if kept."""
        return self.check_many([example])[0]

    def check_many(self, examples: Sequence[Example]) -> list[Example | Rejection]:
        """Verdicts for a batch, identical to calling ``check`` on each in order."""
        if len(examples) > _BATCH:  # hashing in sub-batches keeps the arrays in cache
            out: list[Example | Rejection] = []
            for lo in range(0, len(examples), _BATCH):
                out.extend(self.check_many(examples[lo : lo + _BATCH]))
            return out
        if not examples:
            return []
        signatures = self.hasher.signatures([self._text(e) for e in examples])
        keys = self.band_keys(signatures)
        key_lists: list[list[int]] = keys.tolist()
        out = []
        for i, example in enumerate(examples):
            scope = example.strategy if self.scope == "strategy" else ""
            index = self._indexes.get(scope)
            if index is None:
                index = self._indexes[scope] = _Index(self.num_perm, self.bands, self.max_docs)
            match = self._match(index, key_lists[i], signatures[i])
            if match is not None:
                doc, similarity = match
                out.append(
                    example.reject(
                        self.stage,
                        "near duplicate",
                        f"~{similarity:.2f} estimated Jaccard (threshold {self.threshold}) "
                        f"with kept example {index.example_id(doc)}",
                    )
                )
                continue
            index.insert(key_lists[i], keys[i], signatures[i], example.id)
            out.append(example)
        return out

    def _match(self, index: _Index, keys: list[int], sig: U32) -> tuple[int, float] | None:
        found = [d for d in index.candidates(keys) if d >= index.oldest]
        if not found:
            return None
        docs = sorted(set(found))
        stored = np.stack([index.signature(d) for d in docs])
        similarity = (stored == sig).mean(axis=1)
        best = int(np.argmax(similarity))
        if self.verify and similarity[best] < self.threshold:
            return None
        return docs[best], float(similarity[best])

    @property
    def fingerprint(self) -> str:
        """The settings that change verdicts (the hasher follows from them)."""
        return stable_hash(
            {
                "class": "mstudy.filters.minhash.NearDedup",
                "threshold": self.threshold,
                "num_perm": self.num_perm,
                "ngram": self.ngram,
                "unit": self.unit,
                "bands": self.bands,
                "rows": self.rows,
                "verify": self.verify,
                "field": self.field,
                "scope": self.scope,
                "max_docs": self.max_docs,
                "seed": self.seed,
            }
        )

    def reset(self) -> None:
        """Forget every kept example."""
        self._indexes.clear()

    def get_state(self) -> dict[str, Any]:
        """The kept examples per scope (ids and signatures, oldest first), as JSON values."""
        scopes: dict[str, Any] = {}
        for scope, index in self._indexes.items():
            ids: list[str] = []
            rows: list[U32] = []
            for number in sorted(index.chunks):
                chunk = index.chunks[number]
                ids.extend(chunk.ids)
                rows.append(chunk.sigs[: len(chunk.ids)])
            sigs = np.concatenate(rows) if rows else np.empty((0, self.num_perm), np.uint32)
            scopes[scope] = {
                "oldest": index.oldest,
                "ids": ids,
                "signatures": base64.b64encode(sigs.astype("<u4").tobytes()).decode("ascii"),
            }
        return {"format": _STATE_FORMAT, "num_perm": self.num_perm, "scopes": scopes}

    def set_state(self, state: Any) -> None:
        """Restore :meth:`get_state`'s value: the same examples kept, the same verdicts next."""
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError(f"near_dedup: not a saved state of format {_STATE_FORMAT!r}")
        if state.get("num_perm") != self.num_perm:
            raise ValueError(
                f"near_dedup: the state has num_perm={state.get('num_perm')}, "
                f"this filter {self.num_perm}"
            )
        self._indexes.clear()
        for scope, saved in state["scopes"].items():
            raw = np.frombuffer(base64.b64decode(saved["signatures"]), dtype="<u4")
            sigs = raw.astype(np.uint32).reshape(-1, self.num_perm)
            ids = list(saved["ids"])
            if len(ids) != len(sigs):
                raise ValueError(f"near_dedup: {len(ids)} ids for {len(sigs)} signatures")
            index = self._indexes[scope] = _Index(self.num_perm, self.bands, self.max_docs)
            index.next = index.oldest = int(saved["oldest"])
            keys = self.band_keys(sigs) if len(sigs) else np.empty((0, self.bands), np.uint64)
            for i, example_id in enumerate(ids):
                index.insert(keys[i].tolist(), keys[i], sigs[i], example_id)
