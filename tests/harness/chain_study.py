"""A chained run used by the chain kill tests: ``python chain_study.py DATA OUT [--journal DIR]``.

Stage 1 reverses facts in rounds (odd-numbered subjects are copied back in round 1 at low
temperature, so they are rejected and asked again); stage 2 paraphrases the reversals and
drops exact duplicates. The scripted teacher logs every call (one key a line, flushed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mstudy import Chain, ExactDedup, Paraphrase, Request, Reverse, Rounds, ScriptedTeacher, Study
from mstudy.cache import CallCache


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--journal")
    parser.add_argument("--calls-log")
    parser.add_argument("--delay", type=float, default=0.0)
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
            if number % 2 and request.params.temperature < 0.9:
                return v["text"]  # a copy: rejected, asked again in round 2
            return f"{v['object']} belongs to {v['subject']}."
        if v["text"].startswith("Place 1 "):
            return "Same for all."  # duplicates: the dedup filter of stage 2 rejects them
        return f"Said differently: {v['text'].lower()}"

    out = Path(args.out)
    journal = Path(args.journal) if args.journal else None
    cache = CallCache(journal.with_suffix(".calls.sqlite"), commit_every=1) if journal else None
    teacher = ScriptedTeacher(reply, fingerprint="chain-harness")
    reverse = Study(
        teacher,
        [Rounds(Reverse(), rounds=2, schedule=[{"temperature": 0.5}, {"temperature": 1.0}])],
        sinks=[out / "reversed.jsonl"],
        checkpoint_every=0.05,
        progress=False,
        name="reverse",
    )
    paraphrase = Study(
        teacher,
        [Paraphrase()],
        [ExactDedup(scope="global")],
        checkpoint_every=0.05,
        progress=False,
        name="paraphrase",
    )
    chain = Chain(
        [reverse, paraphrase],
        sinks=[out / "final.jsonl"],
        rejects=out / "rejects.jsonl",
        journal=journal,
        cache=cache,
    )
    chain.run(args.data)


if __name__ == "__main__":
    main()
