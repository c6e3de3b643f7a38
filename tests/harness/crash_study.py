"""A study run used by the crash tests: ``python crash_study.py DATA OUT [--journal DIR]``.

The scripted teacher logs every call it makes (one key a line, flushed) so the tests can
count repeated calls across kills. A run refused because another holds its output or journal
prints ``{"locked": PATH, "pid": PID}`` and exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mstudy import ExactDedup, Paraphrase, Request, Reverse, ScriptedTeacher, Study
from mstudy.cache import CallCache
from mstudy.errors import LockedError


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--journal")
    parser.add_argument("--calls-log")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--rows-per-shard", type=int, help="also write sharded outputs")
    args = parser.parse_args()
    log = open(args.calls_log, "a", buffering=1) if args.calls_log else None  # noqa: SIM115

    def reply(request: Request) -> str:
        if args.delay:
            time.sleep(args.delay)
        if log is not None:
            log.write(request.key + "\n")
        v = request.variables
        if request.strategy == "reverse":
            number = int(v["subject"].split()[-1])
            if number % 7 == 0:
                return v["text"]  # a copy: rejected, so rejects are exercised too
            return f"{v['object']} belongs to {v['subject']}."
        return f"Said differently: {v['text'].lower()}"

    out = Path(args.out)
    journal = Path(args.journal) if args.journal else None
    cache = CallCache(journal.with_suffix(".calls.sqlite"), commit_every=1) if journal else None
    sharded: list[object] = []
    if args.rows_per_shard:
        from mstudy.sinks.jsonl import JSONLSink
        from mstudy.sinks.parquet import ParquetSink

        n = args.rows_per_shard
        sharded = [
            JSONLSink(out / "sharded-jsonl", rows_per_shard=n, workers=2),
            ParquetSink(out / "sharded-parquet", rows_per_shard=n, workers=2),
        ]
    study = Study(
        ScriptedTeacher(reply, fingerprint="crash-harness"),
        [Reverse(), Paraphrase(n=2)],
        [ExactDedup(scope="global")],
        sinks=[out / "enriched.jsonl", out / "enriched.parquet", *sharded],
        rejects=out / "rejects.jsonl",
        journal=journal,
        cache=cache,
        checkpoint_every=0.05,
        progress=False,
    )
    try:
        study.run(args.data)
    except LockedError as exc:
        print(json.dumps({"locked": exc.path, "pid": exc.pid, "message": str(exc)}), flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
