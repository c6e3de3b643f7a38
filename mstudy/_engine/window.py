"""The window: records in flight in source order, and their requests waiting by key.

Identical requests in flight together (the same key) are sent to the teacher once and the
one completion answers all of them. A finished record leaves only from the head, so rows come
out in source order whatever order the teacher answers in.
"""

from __future__ import annotations

from collections import deque

from mstudy.records import Request

from .slots import Pending, Slot


class Window:
    """Slots in source order and the requests that wait for the teacher."""

    __slots__ = ("_slots", "_waiting")

    def __init__(self) -> None:
        self._slots: deque[Slot] = deque()
        self._waiting: dict[str, list[Pending]] = {}

    def __len__(self) -> int:
        """Records in the window (waiting for answers, or finished behind an unfinished one)."""
        return len(self._slots)

    @property
    def waiting(self) -> bool:
        """Whether any request waits for the teacher."""
        return bool(self._waiting)

    def add(self, slot: Slot) -> None:
        """Append a record's slot at the tail."""
        self._slots.append(slot)

    def send(self, entry: Pending) -> Request | None:
        """Register ``entry`` as waiting; its request if it must go to the teacher, None when
        an identical request is already in flight (one answer will serve both)."""
        key = entry.request.key
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.append(entry)
            return None
        self._waiting[key] = [entry]
        return entry.request

    def answer(self, key: str) -> list[Pending] | None:
        """The entries waiting for ``key`` (removed), or None when no request has that key."""
        return self._waiting.pop(key, None)

    def unanswered(self) -> list[Pending]:
        """Every entry still waiting (removed): the teacher ended without answering them."""
        entries = [entry for waiting in self._waiting.values() for entry in waiting]
        self._waiting.clear()
        return entries

    @property
    def head_finished(self) -> bool:
        """Whether the oldest record is finished (so something can be released)."""
        return bool(self._slots) and self._slots[0].finished

    @property
    def head(self) -> Slot:
        """The oldest record (callers check :attr:`head_finished` first)."""
        return self._slots[0]

    def push_front(self, slot: Slot) -> None:
        """Put a record back at the head (it is asked again: :mod:`mstudy.rounds`)."""
        self._slots.appendleft(slot)

    def pop(self) -> Slot:
        """Take the oldest record out (callers check :attr:`head_finished` first)."""
        return self._slots.popleft()
