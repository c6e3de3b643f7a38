"""``decontaminate``: drop examples that share long n-grams with evaluation sets.

Training on text that overlaps a benchmark inflates its scores. Every row of the given
evaluation sets is cut into word n-grams (13 by default, as in GPT-3's decontamination),
after the normalisation of :func:`mstudy.text.normalize`; an example sharing at least
``min_matches`` of them (in any of ``fields``, default ``text`` and ``input``) is rejected
with the reason ``contaminated: <eval set>`` and, as detail, the evaluation row and the
shared words. Evaluation texts shorter than ``n`` words but at least ``min_tokens`` long
count as one n-gram of their own length.

The index holds one 64-bit hash per distinct evaluation n-gram (plus where it first
occurs), so memory follows the evaluation sets, not the data checked; lookups are
vectorised (``numpy.searchsorted``) over all n-grams of a batch.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mstudy._hashing import stable_hash
from mstudy.filters.minhash import _EMPTY_TOKEN, _mix, token_hashes
from mstudy.records import Example, Record, Rejection
from mstudy.text import normalize

__all__ = ["Decontaminate", "EvalSet", "ngram_hashes"]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_SEED = 0x5EED
_BATCH = 2048


def _weights(n: int) -> U64:
    rng = np.random.default_rng([_SEED, n])
    weights: U64 = rng.integers(1, 1 << 63, size=n, dtype=np.uint64) | np.uint64(1)
    return weights


def _real_counts(tokens: U64, offsets: I64) -> I64:
    """Tokens per text, not counting the stand-in token of an empty text."""
    counts = np.diff(offsets)
    if len(tokens):
        firsts = tokens[np.minimum(offsets[:-1], len(tokens) - 1)]
        counts = counts - ((counts == 1) & (firsts == np.uint64(_EMPTY_TOKEN)))
    return counts


def ngram_hashes(texts: Sequence[str], n: int) -> tuple[U64, I64, I64]:
    """64-bit hashes of every word n-gram of ``texts``: hashes, text index, start position."""
    tokens, offsets = token_hashes(texts)
    return _windows(tokens, offsets, n, _real_counts(tokens, offsets))


def _windows(tokens: U64, offsets: I64, n: int, counts: I64) -> tuple[U64, I64, I64]:
    total = len(tokens)
    if total < n:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0, dtype=np.uint64), empty, empty
    weights = _weights(n)
    width = total - n + 1
    combined = tokens[:width] * weights[0]
    for j in range(1, n):
        combined += tokens[j : j + width] * weights[j]
    doc = np.repeat(np.arange(len(counts)), np.diff(offsets))[:width]
    start = np.arange(width, dtype=np.int64)
    valid = start + n <= offsets[doc] + counts[doc]
    hashes = _mix(combined[valid])
    doc, start = doc[valid], start[valid]
    return hashes, doc, start - offsets[doc]


@dataclass(frozen=True, slots=True)
class EvalSet:
    """One evaluation set: its name and (row id, text) pairs."""

    name: str
    rows: tuple[tuple[str, str], ...]


def _rows_of(source: Any, fields: Sequence[str] | None, name: str) -> Iterable[tuple[str, str]]:
    """(row id, text) pairs of an evaluation source: a path, texts, or rows."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source))
        if path.suffix in (".txt", ".text"):
            with path.open(encoding="utf-8") as handle:
                for i, line in enumerate(handle):
                    if line.strip():
                        yield (f"line {i + 1}", line)
            return
        from mstudy.sources import iter_source

        for item in iter_source(path, id_field="id"):
            if isinstance(item, Record):
                for text in _texts_of(item.fields, fields):
                    yield (item.id, text)
        return
    if isinstance(source, Mapping):
        raise TypeError(f"eval set {name!r}: expected a path or a list of texts or rows")
    for i, item in enumerate(source):
        if isinstance(item, str):
            yield (str(i), item)
        elif isinstance(item, Mapping):
            row_id = item.get("id")
            for text in _texts_of(item, fields):
                yield (str(row_id) if row_id is not None else str(i), text)
        else:
            raise TypeError(
                f"eval set {name!r}: row {i} is a {type(item).__name__}, not text or a mapping"
            )


def _texts_of(row: Mapping[str, Any], fields: Sequence[str] | None) -> list[str]:
    names = list(row) if fields is None else list(fields)
    return [v for k in names if k != "id" and isinstance(v := row.get(k), str) and v.strip()]


def _eval_sets(
    eval_sets: Any, eval_path: str | None, fields: Sequence[str] | None
) -> list[EvalSet]:
    named: list[tuple[str, Any]] = []
    if eval_path is not None:
        named.append((Path(eval_path).stem, eval_path))
    if isinstance(eval_sets, Mapping):
        named.extend((str(k), v) for k, v in eval_sets.items())
    elif isinstance(eval_sets, (str, os.PathLike)):
        named.append((Path(os.fspath(eval_sets)).stem, eval_sets))
    elif eval_sets is not None:
        for i, item in enumerate(eval_sets):
            if isinstance(item, EvalSet):
                named.append((item.name, list(item.rows)))
            elif isinstance(item, (str, os.PathLike)):
                named.append((Path(os.fspath(item)).stem, item))
            else:
                named.append((f"eval{i}", item))
    out = []
    for name, source in named:
        rows = tuple(_rows_of(source, fields, name))
        out.append(EvalSet(name, rows))
    if not out:
        raise ValueError("decontaminate: give eval_sets or eval_path")
    return out


class Decontaminate:
    """Reject examples sharing long word n-grams with evaluation sets.

    Args:
        eval_sets: a list of evaluation sets, or a mapping of set name to one. A set is a
            path (JSONL, JSON, Parquet, or ``.txt`` with one item per line) or a list of
            texts or of rows (mappings). A set's name is its key, its file's stem, or
            ``eval<i>``.
        eval_path: one more evaluation file (resolved against a TOML config's folder).
        n: n-gram length in words (default 13).
        fields: the example fields checked (default ``text`` and ``input``).
        eval_fields: the evaluation row fields used (default: every text field but ``id``).
        min_tokens: evaluation texts shorter than ``n`` words but at least this long are
            matched whole; shorter ones are ignored (a one-word answer matches everything).
        min_matches: shared n-grams needed to reject (default 1).

    ``dropped`` counts rejections per evaluation set; ``summary()`` reports them.
    """

    name = "decontaminate"

    def __init__(
        self,
        *,
        eval_sets: Any = None,
        eval_path: str | None = None,
        n: int = 13,
        fields: Sequence[str] = ("text", "input"),
        eval_fields: Sequence[str] | None = None,
        min_tokens: int = 8,
        min_matches: int = 1,
    ) -> None:
        if n < 1:
            raise ValueError(f"decontaminate: n must be >= 1, got {n}")
        if min_tokens < 1 or min_matches < 1:
            raise ValueError("decontaminate: min_tokens and min_matches must be >= 1")
        self.n, self.fields = n, tuple(fields)
        self.min_tokens, self.min_matches = min_tokens, min_matches
        self.sets = _eval_sets(eval_sets, eval_path, eval_fields)
        self.dropped: Counter[str] = Counter()
        self.checked = 0
        self._index: dict[int, tuple[U64, I64, I64]] = {}
        self._row_ids: list[list[str]] = [[row_id for row_id, _ in s.rows] for s in self.sets]
        self._build()

    @property
    def fingerprint(self) -> str:
        """The settings and evaluation rows that change verdicts (not the run's counts)."""
        return stable_hash(
            {
                "class": "mstudy.filters.decontaminate.Decontaminate",
                "n": self.n,
                "fields": list(self.fields),
                "min_tokens": self.min_tokens,
                "min_matches": self.min_matches,
                "sets": [[s.name, [list(row) for row in s.rows]] for s in self.sets],
            }
        )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s.name}: {len(s.rows)}" for s in self.sets)
        return f"Decontaminate(n={self.n}, eval_sets={{{sizes}}}, ngrams={self.ngrams})"

    @property
    def stage(self) -> str:
        return f"filter:{self.name}"

    @property
    def ngrams(self) -> int:
        """Distinct evaluation n-grams indexed."""
        return sum(len(h) for h, _, _ in self._index.values())

    def _build(self) -> None:
        parts: dict[int, list[tuple[U64, I64, I64]]] = {}
        for set_no, eval_set in enumerate(self.sets):
            for lo in range(0, len(eval_set.rows), _BATCH):
                texts = [text for _, text in eval_set.rows[lo : lo + _BATCH]]
                tokens, offsets = token_hashes(texts)
                counts = _real_counts(tokens, offsets)
                lengths = {self.n} | {
                    int(c) for c in np.unique(counts) if self.min_tokens <= c < self.n
                }
                for length in lengths:
                    keep = counts >= length if length == self.n else counts == length
                    hashes, doc, _ = _windows(tokens, offsets, length, np.where(keep, counts, 0))
                    rows = doc + lo
                    sets = np.full(len(hashes), set_no, dtype=np.int64)
                    parts.setdefault(length, []).append((hashes, sets, rows))
        for length, chunks in parts.items():
            hashes = np.concatenate([c[0] for c in chunks])
            sets = np.concatenate([c[1] for c in chunks])
            rows = np.concatenate([c[2] for c in chunks])
            order = np.argsort(hashes, kind="stable")
            hashes, sets, rows = hashes[order], sets[order], rows[order]
            first = np.ones(len(hashes), dtype=bool)
            first[1:] = hashes[1:] != hashes[:-1]
            if first.any():
                self._index[length] = (hashes[first], sets[first], rows[first])

    def _texts(self, example: Example) -> list[str]:
        out = []
        for name in self.fields:
            value = example.fields.get(name)
            if isinstance(value, str) and value.strip():
                out.append(value)
        return out

    def check(self, example: Example) -> Example | Rejection:
        return self.check_many([example])[0]

    def check_many(self, examples: Sequence[Example]) -> list[Example | Rejection]:
        """Verdicts for a batch (the filter keeps no state between examples)."""
        texts: list[str] = []
        owner: list[int] = []
        for i, example in enumerate(examples):
            for text in self._texts(example):
                texts.append(text)
                owner.append(i)
        self.checked += len(examples)
        out: list[Example | Rejection] = list(examples)
        if not texts:
            return out
        owners = np.asarray(owner, dtype=np.int64)
        tokens, offsets = token_hashes(texts)
        counts = _real_counts(tokens, offsets)
        found: list[tuple[I64, I64, I64, I64]] = []  # owner, text, start, index entry
        lengths: list[int] = []
        for length, (keys, _, _) in self._index.items():
            hashes, doc, start = _windows(tokens, offsets, length, counts)
            if not len(hashes):
                continue
            where = np.minimum(np.searchsorted(keys, hashes), len(keys) - 1)
            hit = keys[where] == hashes
            if hit.any():
                found.append((owners[doc[hit]], doc[hit], start[hit], where[hit]))
                lengths.extend([length] * int(hit.sum()))
        if not found:
            return out
        hit_owner = np.concatenate([f[0] for f in found])
        hit_text = np.concatenate([f[1] for f in found])
        hit_start = np.concatenate([f[2] for f in found])
        hit_entry = np.concatenate([f[3] for f in found])
        hit_length = np.asarray(lengths, dtype=np.int64)
        shared = np.bincount(hit_owner, minlength=len(examples))
        example_nos, first = np.unique(hit_owner, return_index=True)
        for example_no, f in zip(example_nos.tolist(), first.tolist(), strict=True):
            if shared[example_no] < self.min_matches:
                continue
            length = int(hit_length[f])
            _, sets, rows = self._index[length]
            set_no, row_no = int(sets[hit_entry[f]]), int(rows[hit_entry[f]])
            eval_set = self.sets[set_no]
            start_at, text_no = int(hit_start[f]), int(hit_text[f])
            same = (hit_text == text_no) & (hit_length == length)
            end = start_at
            for position in np.unique(hit_start[same]).tolist():  # the first overlapping run
                if position == end + 1:
                    end = position
                elif position > end:
                    break
            words = normalize(texts[text_no]).split()[start_at : end + length]
            self.dropped[eval_set.name] += 1
            out[example_no] = examples[example_no].reject(
                self.stage,
                f"contaminated: {eval_set.name}",
                f"{int(shared[example_no])} shared {length}-gram(s) with {eval_set.name} row "
                f"{self._row_ids[set_no][row_no]!r}, e.g. {' '.join(words)[:200]!r}",
            )
        return out

    def summary(self) -> dict[str, Any]:
        """Examples checked and dropped per evaluation set, and the index size."""
        return {
            "checked": self.checked,
            "dropped": dict(self.dropped),
            "eval_texts": {s.name: len(s.rows) for s in self.sets},
            "ngrams": self.ngrams,
            "n": self.n,
        }
