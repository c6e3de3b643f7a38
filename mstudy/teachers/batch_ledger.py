"""The batch teacher's ledger: which requests went into which provider batch, durably.

A JSON Lines file, appended to and fsynced before each step that costs money is taken, so a
run killed at any point picks its batches up again instead of paying twice:

- ``intent``: a submission is about to be created (its id, the uploaded input file, its keys);
- ``submitted``: the provider accepted it as batch ``batch_id``;
- ``resolved``: the batch ended (status, output and error files), so it is not polled again.

A key belongs to its latest submission. A resolved submission's results are read again from
its files when the key is asked for again (the run died before storing them); a key whose
result was missing or failed retryably is submitted anew, and only then. A torn last line
(a kill mid-write) is ignored. The file is locked while a run uses it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mstudy._locks import PathLock

__all__ = ["Ledger", "Submission"]

FORMAT = "mstudy.batch_ledger.v1"


@dataclass
class Submission:
    """One batch as the ledger knows it."""

    id: str
    input_file_id: str
    keys: list[str]
    attempt: int = 1
    batch_id: str | None = None
    status: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    resolved: bool = False
    errors: list[str] = field(default_factory=list)


class Ledger:
    """The submissions of one teacher, read from and appended to ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.submissions: dict[str, Submission] = {}
        self.by_key: dict[str, str] = {}
        self._lock = PathLock(self.path, what="batch ledger")
        self._file: Any = None

    def __enter__(self) -> Ledger:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._read()
            self._file = open(self.path, "ab")
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._lock.release()

    # -- reading --------------------------------------------------------------------------
    def _read(self) -> None:
        if not self.path.exists():
            return
        for raw in self.path.read_bytes().split(b"\n"):
            try:
                entry = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a torn last line
            if isinstance(entry, dict) and entry.get("format") == FORMAT:
                self._apply(entry)

    def _apply(self, entry: dict[str, Any]) -> None:
        event, sid = entry.get("event"), str(entry.get("submission"))
        if event == "intent":
            keys = [str(k) for k in entry.get("keys", [])]
            self.submissions[sid] = Submission(
                sid, str(entry["input_file_id"]), keys, int(entry.get("attempt", 1))
            )
            for key in keys:
                self.by_key[key] = sid
            return
        submission = self.submissions.get(sid)
        if submission is None:
            return
        if event == "submitted":
            submission.batch_id = str(entry["batch_id"])
        elif event == "resolved":
            submission.resolved = True
            submission.status = entry.get("status")
            submission.output_file_id = entry.get("output_file_id")
            submission.error_file_id = entry.get("error_file_id")
            submission.errors = [str(e) for e in entry.get("errors", [])]

    # -- writing --------------------------------------------------------------------------
    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"format": FORMAT, **entry}, separators=(",", ":")) + "\n"
        self._file.write(line.encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._apply({"format": FORMAT, **entry})

    def intend(self, sid: str, input_file_id: str, keys: Iterable[str], attempt: int) -> None:
        self._append(
            {
                "event": "intent",
                "submission": sid,
                "input_file_id": input_file_id,
                "keys": list(keys),
                "attempt": attempt,
            }
        )

    def submitted(self, sid: str, batch_id: str) -> None:
        self._append({"event": "submitted", "submission": sid, "batch_id": batch_id})

    def resolved(
        self,
        sid: str,
        status: str,
        output_file_id: str | None,
        error_file_id: str | None,
        errors: list[str],
    ) -> None:
        self._append(
            {
                "event": "resolved",
                "submission": sid,
                "status": status,
                "output_file_id": output_file_id,
                "error_file_id": error_file_id,
                "errors": errors,
            }
        )

    def submission_of(self, key: str) -> Submission | None:
        """The latest submission that holds ``key``."""
        sid = self.by_key.get(key)
        return None if sid is None else self.submissions[sid]
