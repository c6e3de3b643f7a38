"""A journaled study with every built-in stateful filter, for the kill tests:
``python stateful_study.py DATA OUT JOURNAL [--calls-log LOG] [--delay S]``.

Every record's paraphrase nearly or exactly repeats one made for a record 600 places
earlier, so what ``dedup`` and ``near_dedup`` remember decides rows long after they saw it:
a resumed run that forgot it would keep rows an uninterrupted run rejects.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mstudy import ExactDedup, Paraphrase, Request, ScriptedTeacher, Study
from mstudy.filters.minhash import NearDedup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("journal")
    parser.add_argument("--calls-log")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    log = open(args.calls_log, "a", buffering=1) if args.calls_log else None  # noqa: SIM115

    def reply(request: Request) -> str:
        if args.delay:
            time.sleep(args.delay)
        if log is not None:
            log.write(request.key + "\n")
        return f"Said differently: {request.variables['text']}"

    out = Path(args.out)
    study = Study(
        ScriptedTeacher(reply, fingerprint="stateful-harness"),
        [Paraphrase()],
        [ExactDedup(scope="global"), NearDedup(threshold=0.6, ngram=2, scope="global")],
        sinks=[out / "enriched.jsonl"],
        rejects=out / "rejects.jsonl",
        journal=args.journal,
        checkpoint_every=0.02,
        progress=False,
    )
    study.run(args.data)


if __name__ == "__main__":
    main()
