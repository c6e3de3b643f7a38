"""Teachers that Ray actors build in tests and the benchmark (importable by the workers).

``sleepy`` is the scripted teacher made latency-bound: each request sleeps ``delay`` seconds
(a remote call's wait) and, with ``log``, appends its key to that file, so a test can tell
which calls were made, by which run.
"""

from __future__ import annotations

import os
import time

from mstudy.records import Request
from mstudy.teachers.scripted import ScriptedTeacher


def sleepy(delay: float = 0.05, log: str | None = None) -> ScriptedTeacher:
    def reply(request: Request) -> str:
        time.sleep(delay)
        if log is not None:
            with open(log, "a", encoding="utf-8") as out:
                out.write(f"{request.key} {os.getpid()}\n")
        users = [m.content for m in request.messages if m.role == "user"]
        words = (users[-1] if users else "").split()
        return " ".join(reversed(words)) + f" ({request.sample})"

    return ScriptedTeacher(reply, fingerprint="sleepy-reverser-v1")
