"""Outcomes: with a call cache, a record's parsed outcome is stored once it is finished and
read back on a re-run instead of rendering and parsing again (:mod:`mstudy._memo`)."""

from __future__ import annotations

from collections.abc import Sequence

from mstudy import _memo as memo
from mstudy.cache import CallCache
from mstudy.interfaces import Strategy
from mstudy.records import Record

from .reading import Item
from .slots import Slot


class Outcomes:
    """A study's outcome memo in one call cache."""

    __slots__ = ("_cache", "_fingerprint", "_prefix", "_shared")

    def __init__(self, cache: CallCache, fingerprint: str, prefix: str, shared: memo.Shared):
        self._cache, self._fingerprint = cache, fingerprint
        self._prefix, self._shared = prefix, shared

    @classmethod
    def of(
        cls, cache: CallCache | None, fingerprint: str, strategies: Sequence[Strategy]
    ) -> Outcomes | None:
        """The memo for a study; None without a cache or when a strategy opts out."""
        if cache is None:
            return None
        prefix = memo.memo_prefix(fingerprint, strategies)
        if prefix is None:
            return None
        return cls(cache, fingerprint, prefix, memo.Shared(fingerprint, strategies))

    def look_up(self, items: Sequence[Item]) -> list[tuple[Item, str | None, Slot | None]]:
        """Each item with its outcome key (None for an input rejection) and the slot read
        back from the memo (None when nothing usable is stored), in one query for the lot."""
        keys = [memo.outcome_key(self._prefix, i) if isinstance(i, Record) else None for i in items]
        found = self._cache.get_outcomes([k for k in keys if k is not None])
        out: list[tuple[Item, str | None, Slot | None]] = []
        for item, key in zip(items, keys, strict=True):
            payload = found.get(key) if key is not None else None
            decoded = None
            if payload is not None and isinstance(item, Record):
                decoded = memo.decode(payload, item.id, self._shared)
            if decoded is None or not isinstance(item, Record):
                out.append((item, key, None))
                continue
            results, requests, calls = decoded
            slot = Slot(item.id, item, sealed=True, results=results, requests=requests)
            slot.outcome_key, slot.outcome_stored, slot.cached_calls = key, True, calls
            out.append((item, key, slot))
        return out

    def store(self, slot: Slot) -> None:
        """Store a finished record's outcome, unless it was read back or must not be kept."""
        if slot.outcome_key is None or slot.outcome_stored:
            return
        payload = memo.encode(
            slot.results, slot.requests, slot.completions, slot.item_id, self._shared
        )
        if payload is not None:
            self._cache.put_outcome(slot.outcome_key, self._fingerprint, payload)
