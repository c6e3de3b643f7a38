"""Filters that ask a teacher (``judge``, ``round_trip``): one pass for a batch of requests."""

from __future__ import annotations

from collections.abc import Iterable

from mstudy.cache import CallCache
from mstudy.interfaces import Teacher
from mstudy.records import Completion, Request


def ask(
    teacher: Teacher, requests: Iterable[Request], cache: CallCache | None
) -> dict[str, Completion]:
    """Each distinct request's completion by key: from ``cache`` when stored there, else from
    one ``generate`` pass over the rest (answers that came back ok are stored)."""
    replies: dict[str, Completion] = {}
    to_send: dict[str, Request] = {}
    for request in requests:
        if request.key in replies or request.key in to_send:
            continue
        hit = cache.get(teacher.fingerprint, request.key) if cache is not None else None
        if hit is not None:
            replies[request.key] = hit
        else:
            to_send[request.key] = request
    if to_send:
        for completion in teacher.generate(iter(to_send.values())):
            replies[completion.key] = completion
            if cache is not None and completion.ok:
                cache.put(teacher.fingerprint, completion)
        if cache is not None:
            cache.commit()
    return replies
