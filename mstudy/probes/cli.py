"""``mstudy probe reversal``: argument handling for the reversal probe.

Wire it into the main parser with ``register(subparsers)``; the handler is :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_OUT", "register", "run"]

DEFAULT_OUT = Path("out/probe-reversal")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: Any) -> None:
    """Add ``probe`` (with its ``reversal`` subcommand) to an argparse subparsers object."""
    from mstudy.probes.defaults import DEFAULTS

    probe = subparsers.add_parser(
        "probe",
        help="measure what studying does for a student (reversal curse probe)",
        description="Probes that train a tiny student on studied data and measure it.",
    )
    kinds = probe.add_subparsers(dest="probe", metavar="PROBE")
    kinds.required = True
    parser = kinds.add_parser(
        "reversal",
        help="does a teacher's reversal fix a student's reversal curse?",
        description=(
            "Build a world of invented facts, study it with the reverse and paraphrase "
            "strategies on a teacher, train a tiny student from scratch on each version of the "
            "data, and print how well it answers questions in the direction it was never told."
        ),
    )
    parser.add_argument(
        "--teacher",
        default=DEFAULTS["teacher"],
        help="teacher plugin name, or 'rules' for the teacher-free ceiling "
        f"(default: {DEFAULTS['teacher']}, the embedded SmolLM2)",
    )
    parser.add_argument(
        "--facts",
        type=_positive,
        default=DEFAULTS["facts"],
        metavar="N",
        help=f"facts in the generated world (default: {DEFAULTS['facts']})",
    )
    parser.add_argument(
        "--relations",
        type=_positive,
        default=DEFAULTS["relations"],
        metavar="N",
        help=f"relation types, 1-6 (default: {DEFAULTS['relations']})",
    )
    parser.add_argument(
        "--world-dir",
        type=Path,
        metavar="DIR",
        help="load the world from DIR/facts.jsonl and DIR/relations.toml (or .json)",
    )
    parser.add_argument(
        "--world-seed", type=int, default=0, metavar="N", help="seed of the world (default: 0)"
    )
    parser.add_argument(
        "--seeds",
        type=_positive,
        default=DEFAULTS["seeds"],
        metavar="N",
        help=f"student seeds per condition (default: {DEFAULTS['seeds']})",
    )
    parser.add_argument(
        "--epochs",
        type=_positive,
        default=DEFAULTS["epochs"],
        metavar="N",
        help=f"student training epochs (default: {DEFAULTS['epochs']})",
    )
    parser.add_argument(
        "--samples",
        type=_positive,
        default=DEFAULTS["samples"],
        metavar="N",
        help="teacher sampling rounds per fact; a round only re-asks facts that have no "
        f"accepted reversal yet (default: {DEFAULTS['samples']})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"where report.json, table.md and chart.png go (default: {DEFAULT_OUT})",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report, not the table")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the probe with parsed arguments; print the table (or JSON); return 0."""
    from mstudy.probes.outputs import write_outputs
    from mstudy.probes.reversal import run_probe

    result = run_probe(
        teacher=args.teacher,
        facts=args.facts,
        relations=args.relations,
        world_dir=args.world_dir,
        world_seed=args.world_seed,
        seeds=args.seeds,
        epochs=args.epochs,
        samples=args.samples,
        progress=not args.quiet,
    )
    paths = write_outputs(result, args.out)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.table())
    if not args.quiet:
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m mstudy.probes.cli reversal ...``) for use before wiring."""
    parser = argparse.ArgumentParser(prog="mstudy")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["probe", *(argv if argv is not None else sys.argv[1:])])
    from mstudy.errors import MstudyError

    try:
        code: int = args.func(args)
    except MstudyError as exc:
        print(f"mstudy: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
