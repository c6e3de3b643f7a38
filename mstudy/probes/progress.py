"""How the probe's stages report: their wall and CPU time, progress lines and bars on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Times", "progress_bar", "say", "timer"]


Times = dict[str, dict[str, float]]
"""Stage -> ``{"wall": seconds, "cpu": seconds of this process's CPU time}``."""


@contextmanager
def timer(times: Times, key: str) -> Iterator[Callable[[], float]]:
    """Add the block's wall and CPU time to ``times[key]``; yields a wall clock."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield lambda: time.perf_counter() - start
    finally:
        entry = times.setdefault(key, {"wall": 0.0, "cpu": 0.0})
        entry["wall"] += time.perf_counter() - start
        entry["cpu"] += time.process_time() - cpu


def say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def progress_bar(progress: bool, total: int) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="epoch", desc="student", dynamic_ncols=True)
