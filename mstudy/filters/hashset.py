"""``HashSet``: an exact set of 64-bit integers whose resident memory stays bounded.

Three tiers, all exact:

1. **Table**: an open-addressing hash table (linear probing) in a numpy ``uint64`` array of
   ``table_slots`` slots, 0 marking an empty slot (the key 0 is kept as a flag). When it is
   ``LOAD`` full, its keys are sorted and *spilled* to a run file, and the table is emptied.
2. **Runs**: sorted ``uint64`` files in a private temporary directory (under ``temp_dir``,
   default :func:`tempfile.gettempdir`), deleted by :meth:`HashSet.clear`, :meth:`HashSet.close`
   or garbage collection. Each keeps in memory only every ``block_keys``-th key (its fence),
   so a lookup reads one block with ``os.pread`` and bisects it: run pages sit in the OS page
   cache, never in this process's RSS (nothing is memory-mapped). When there are more than
   ``max_runs`` runs they are merged into one, streaming, a table's worth of keys at a time.
3. **Bloom filter** over every spilled key: a blocked filter of ``bloom_bytes`` (one 64-bit
   word per key, a precomputed pattern of ``K`` bits), so most keys that are new never touch
   a run file. It only rules keys out; a "maybe" is always confirmed in the runs.

Memory: ``table_slots * 8 + bloom_bytes`` bytes, 8 bytes per ``block_keys`` spilled keys (the
fences) and, while spilling or merging, transient buffers of about a table's worth.
``max_memory_mb`` (default 8) gives a quarter to the table and half to the Bloom filter: a 2 MB
table (2^18 slots, a spill every 131,072 keys) and a 4 MB filter (8 bits a key at 4M spilled
keys, where ~3% of new keys read a block of a run; 16 bits a key at 2M, ~0.5%). Past that the
filter saturates gracefully: memory stays put, more new keys pay block reads. A bigger budget
buys fewer false positives and fewer spills, a smaller one the converse; exactness never moves.

Speed from Python (benchmarks/bench_dedup.py, one core): ``add`` ~0.8-1 µs (a built-in ``set``
is 3-5x faster), a miss ~0.7-1 µs, a hit in a run ~5 µs (one ``pread`` per run tried). Peak
memory ~10-11 MB at 400k and at 4M keys, against 39 MB and 308 MB for a ``set``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]

LOAD = 0.5  # the table spills at this fill ratio (linear probing: ~2 probes a lookup)
K = 5  # bits per key in the Bloom filter's 64-bit word
READ_KEYS = 1 << 14  # keys per read of a run when merging (128 KiB per run)
_MUL = 0x9E3779B97F4A7C15  # Fibonacci hashing: keys need not be uniform
_M64 = (1 << 64) - 1
_PATTERN_SHIFT, _PATTERN_MASK = 20, 0xFFF  # bits of the mixed key that pick a pattern


def _patterns() -> U64:
    """4096 64-bit words with ``K`` distinct bits set each (fixed seed: deterministic)."""
    rng = np.random.default_rng(0x6D737475)
    bits = np.array([rng.choice(64, K, replace=False) for _ in range(_PATTERN_MASK + 1)])
    patterns: U64 = np.bitwise_or.reduce(np.uint64(1) << bits.astype(np.uint64), axis=1)
    return patterns


PATTERNS = _patterns()
_PATTERN_LIST: list[int] = PATTERNS.tolist()


def _pow2_at_most(n: float, low: int, high: int) -> int:
    return max(low, min(high, 1 << max(0, int(n).bit_length() - 1)))


class _Run:
    """One sorted run file and its in-memory fence (every ``block``-th key)."""

    def __init__(self, path: Path, size: int, fence: U64, first: int, last: int, block: int):
        self.path, self.size, self.block = path, size, block
        self.fence = fence
        self._fence = fence.data  # bisect on Python ints, no numpy call per lookup
        self.first, self.last = first, last
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def __contains__(self, key: int) -> bool:
        if key < self.first or key > self.last:
            return False
        j = bisect_right(self._fence, key) - 1
        data = os.pread(self.fd, self.block * 8, j * self.block * 8)
        keys = memoryview(data).cast("Q")
        i = bisect_left(keys, key)
        return i < len(keys) and keys[i] == key

    def chunks(self, n: int) -> Iterator[U64]:
        for start in range(0, self.size, n):
            data = os.pread(self.fd, n * 8, start * 8)
            yield np.frombuffer(data, dtype=np.uint64)

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


class _Writer:
    """Writes sorted chunks to a new run file, collecting its fence."""

    def __init__(self, path: Path, block: int) -> None:
        self.path, self.block = path, block
        self.handle = open(path, "wb")  # noqa: SIM115 - closed in finish()
        self.size = 0
        self.fences: list[U64] = []
        self.first = self.last = 0

    def write(self, keys: U64) -> None:
        if not len(keys):
            return
        if not self.size:
            self.first = int(keys[0])
        self.last = int(keys[-1])
        self.fences.append(keys[(-self.size) % self.block :: self.block].copy())
        self.handle.write(keys.tobytes())
        self.size += len(keys)

    def finish(self) -> _Run:
        self.handle.close()
        fence = np.concatenate(self.fences) if self.fences else np.zeros(0, np.uint64)
        return _Run(self.path, self.size, fence, self.first, self.last, self.block)


class _Spill:
    """The temporary directory and its runs; separate from HashSet so a finalizer can own it."""

    def __init__(self, temp_dir: str | Path | None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="mstudy-hashset-", dir=temp_dir))
        self.runs: list[_Run] = []
        self.serial = 0
        self.owner = os.getpid()  # a forked child must not delete its parent's files

    def path(self) -> Path:
        self.serial += 1
        return self.directory / f"run-{self.serial:06d}.u64"

    def close(self) -> None:
        if os.getpid() != self.owner:
            return
        for run in self.runs:
            with contextlib.suppress(OSError):
                run.close()
        self.runs.clear()
        shutil.rmtree(self.directory, ignore_errors=True)


class HashSet:
    """An exact set of integers in ``[0, 2**64)`` in bounded memory (module docstring)."""

    def __init__(
        self,
        max_memory_mb: float = 8,
        *,
        temp_dir: str | Path | None = None,
        table_slots: int | None = None,
        bloom_bytes: int | None = None,
        block_keys: int = 512,
        max_runs: int = 4,
    ) -> None:
        budget = max_memory_mb * 2**20
        slots = table_slots or _pow2_at_most(budget / 4 / 8, 16, 2**20)
        if slots & (slots - 1) or slots < 4:
            raise ValueError(f"table_slots must be a power of two >= 4, got {slots}")
        words = (bloom_bytes or _pow2_at_most(budget / 2, 64, 2**32)) // 8
        if words & (words - 1) or not words:
            raise ValueError(f"bloom_bytes must be a power of two >= 8, got {bloom_bytes}")
        if block_keys < 1 or max_runs < 1:
            raise ValueError("block_keys and max_runs must be >= 1")
        self.temp_dir = temp_dir
        self.block_keys, self.max_runs = block_keys, max_runs
        self._array: U64 = np.zeros(slots, np.uint64)  # calloc: pages resident once touched
        self._table = self._array.data
        self._mask, self._shift = slots - 1, 64 - (slots.bit_length() - 1)
        self._limit = max(1, int(slots * LOAD))
        self._read = min(self._limit, READ_KEYS)  # keys per read when merging or iterating
        self._bloom_array: U64 = np.zeros(words, np.uint64)
        self._bloom = self._bloom_array.data
        self._bloom_shift = 64 - (words.bit_length() - 1)
        self._count = 0  # keys in the table
        self._spilled = 0  # keys in runs
        self._zero = False
        self._spill: _Spill | None = None
        self._finalizer: weakref.finalize[[], HashSet] | None = None

    # -- the hot path ---------------------------------------------------------------------

    def add(self, key: int) -> bool:
        """Add ``key``; True if it was new, False if it was already in the set."""
        if not key:
            new, self._zero = not self._zero, True
            return new
        if key < 0 or key > _M64:
            raise ValueError(f"HashSet holds integers in [0, 2**64), got {key}")
        i, h = self._probe(key)
        if i < 0 or (self._spill is not None and self._in_runs(key, h)):
            return False
        self._table[i] = key
        self._count += 1
        if self._count >= self._limit:
            self._spill_table()
        return True

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int) or key < 0 or key > _M64:
            return False
        if not key:
            return self._zero
        i, h = self._probe(key)
        return i < 0 or (self._spill is not None and self._in_runs(key, h))

    def _probe(self, key: int) -> tuple[int, int]:
        """Linear probing for a non-zero ``key``: (-1 if it is in the table, else the empty
        slot it would take; its mixed hash)."""
        table, mask = self._table, self._mask
        h = (key * _MUL) & _M64
        i = h >> self._shift
        while True:
            v = table[i]
            if not v:
                return i, h
            if v == key:
                return -1, h
            i = (i + 1) & mask

    def _in_runs(self, key: int, h: int) -> bool:
        pattern = _PATTERN_LIST[(h >> _PATTERN_SHIFT) & _PATTERN_MASK]
        if self._bloom[h >> self._bloom_shift] & pattern != pattern:
            return False
        assert self._spill is not None
        return any(key in run for run in self._spill.runs)

    # -- spilling and merging -------------------------------------------------------------

    def _spill_table(self) -> None:
        keys = self._array[self._array != 0]
        keys.sort()
        self._write_run([keys])  # first: if writing fails, the table still holds its keys
        self._array[:] = 0
        self._count = 0

    def _write_run(self, chunks: Iterable[U64]) -> None:
        """Store sorted, disjoint-from-the-set ``chunks`` as a new run; Bloom them; merge."""
        if self._spill is None:
            self._spill = _Spill(self.temp_dir)
            self._finalizer = weakref.finalize(self, self._spill.close)
        writer = _Writer(self._spill.path(), self.block_keys)
        for chunk in chunks:
            writer.write(chunk)
            self._bloom_add(chunk)
        self._spill.runs.append(writer.finish())
        self._spilled += writer.size
        if len(self._spill.runs) > self.max_runs:
            self._merge()

    def _bloom_add(self, keys: U64) -> None:
        for start in range(0, len(keys), 1 << 15):
            h = keys[start : start + (1 << 15)] * np.uint64(_MUL)  # wraps modulo 2**64
            words = h >> np.uint64(self._bloom_shift)
            patterns = PATTERNS[(h >> np.uint64(_PATTERN_SHIFT)) & np.uint64(_PATTERN_MASK)]
            np.bitwise_or.at(self._bloom_array, words, patterns)

    def _merge(self) -> None:
        """Merge every run into one, streaming ``READ_KEYS`` keys per run at a time."""
        assert self._spill is not None
        spill = self._spill
        runs, spill.runs = spill.runs, []
        writer = _Writer(spill.path(), self.block_keys)
        for chunk in _merged([run.chunks(self._read) for run in runs]):
            writer.write(chunk)
        spill.runs.append(writer.finish())
        for run in runs:
            run.close()

    # -- the rest of the set interface ----------------------------------------------------

    def __len__(self) -> int:
        return self._count + self._spilled + self._zero

    def chunks(self) -> Iterator[U64]:
        """Every key, in unsorted chunks of at most a table's worth (runs are read back)."""
        if self._zero:
            yield np.zeros(1, np.uint64)
        if self._count:
            yield self._array[self._array != 0]
        if self._spill is not None:
            for run in self._spill.runs:
                yield from run.chunks(self._read)

    def __iter__(self) -> Iterator[int]:
        for chunk in self.chunks():
            yield from chunk.tolist()

    def to_array(self) -> U64:
        """Every key, sorted (8 bytes per key: this one is not bounded)."""
        parts = list(self.chunks())
        keys = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        keys.sort()
        return keys

    def update(self, keys: Iterable[int] | U64) -> None:
        """Add many keys; into an empty set they go in as one sorted run, not one by one."""
        if isinstance(keys, np.ndarray):
            if keys.dtype.kind not in "ui" or (keys.dtype.kind == "i" and (keys < 0).any()):
                raise ValueError("HashSet holds integers in [0, 2**64)")
            array = np.unique(keys.astype(np.uint64))
        else:
            try:
                array = np.unique(np.array(list(keys), dtype=np.uint64))
            except OverflowError as exc:
                raise ValueError("HashSet holds integers in [0, 2**64)") from exc
        if len(self) == 0 and len(array) > self._limit:
            if array[0] == 0:
                self._zero, array = True, array[1:]
            self._write_run(array[i : i + self._limit] for i in range(0, len(array), self._limit))
            return
        for key in array.tolist():
            self.add(key)

    def clear(self) -> None:
        """Empty the set and delete its run files and their directory."""
        if self._finalizer is not None:
            self._finalizer()
        self._spill = self._finalizer = None
        if self._count:
            self._array[:] = 0
        if self._spilled:
            self._bloom_array[:] = 0
        self._count = self._spilled = 0
        self._zero = False

    close = clear

    @property
    def directory(self) -> Path | None:
        """The temporary directory holding the runs (None until the first spill)."""
        return self._spill.directory if self._spill is not None else None

    @property
    def runs(self) -> int:
        return len(self._spill.runs) if self._spill is not None else 0


def _merged(sources: list[Iterator[U64]]) -> Iterator[U64]:
    """Sorted chunks of the union of sorted, disjoint chunk streams (k-way, bounded memory)."""
    buffers: list[U64] = []
    live: list[Iterator[U64]] = []
    for source in sources:
        first = next(source, None)
        if first is not None:
            buffers.append(first)
            live.append(source)
    while buffers:
        bound = min(buffer[-1] for buffer in buffers)
        parts = []
        for i, buffer in enumerate(buffers):
            cut = int(np.searchsorted(buffer, bound, side="right"))
            parts.append(buffer[:cut])
            buffers[i] = buffer[cut:]
        out = np.concatenate(parts)
        out.sort(kind="stable")  # timsort: linear on concatenated sorted runs
        yield out
        for i in reversed(range(len(buffers))):
            if not len(buffers[i]):
                refill = next(live[i], None)
                if refill is None:
                    del buffers[i], live[i]
                else:
                    buffers[i] = refill


__all__ = ["HashSet"]
