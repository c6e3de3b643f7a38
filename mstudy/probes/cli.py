"""``mstudy probe reversal`` and ``mstudy probe compose``: argument handling for the probes.

Wire it into the main parser with ``register(subparsers)``; the handler is :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["COMPOSE_OUT", "DEFAULT_OUT", "register", "run", "run_compose"]

DEFAULT_OUT = Path("out/probe-reversal")
COMPOSE_OUT = Path("out/probe-compose")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: Any) -> None:
    """Add ``probe`` (with its ``reversal`` and ``compose`` subcommands) to an argparse
    subparsers object."""
    from mstudy.probes.defaults import DEFAULTS

    probe = subparsers.add_parser(
        "probe",
        help="measure what studying does for a student (reversal, composition)",
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
    _register_compose(kinds)


def _register_compose(kinds: Any) -> None:
    from mstudy.probes.compose import COMPOSE_DEFAULTS as D

    parser = kinds.add_parser(
        "compose",
        help="do a teacher's chains of thought or connected statements teach two-hop answers?",
        description=(
            "Build a world of atomic facts about people and two-hop questions about them, "
            "study it with the cot and connect strategies on a teacher, train a tiny student "
            "from scratch on each version of the data, and print how well it answers the "
            "held-out two-hop questions."
        ),
    )
    parser.add_argument(
        "--teacher",
        default=D["teacher"],
        help="teacher plugin name, or 'rules' for the teacher-free ceilings "
        f"(default: {D['teacher']}, the embedded SmolLM2)",
    )
    parser.add_argument(
        "--people",
        type=_positive,
        default=D["people"],
        metavar="N",
        help=f"people in the generated world, 2 questions each (default: {D['people']})",
    )
    parser.add_argument(
        "--world-dir",
        type=Path,
        metavar="DIR",
        help="load the world from DIR/facts.jsonl and DIR/relations.toml (or .json)",
    )
    parser.add_argument(
        "--world-seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the world and of its held-out split (default: 0)",
    )
    parser.add_argument(
        "--seeds",
        type=_positive,
        default=D["seeds"],
        metavar="N",
        help=f"student seeds per condition (default: {D['seeds']})",
    )
    parser.add_argument(
        "--epochs",
        type=_positive,
        default=D["epochs"],
        metavar="N",
        help=f"student training epochs (default: {D['epochs']})",
    )
    parser.add_argument(
        "--samples",
        type=_positive,
        default=D["samples"],
        metavar="N",
        help="teacher rounds; a round only re-asks what has no accepted text yet "
        f"(default: {D['samples']})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=COMPOSE_OUT,
        metavar="DIR",
        help=f"where report.json, table.md and chart.png go (default: {COMPOSE_OUT})",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report, not the table")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run_compose)


def run_compose(args: argparse.Namespace) -> int:
    """Run the composition probe with parsed arguments; print the table (or JSON); return 0."""
    from mstudy.probes.compose import run_compose_probe, write_compose_outputs

    result = run_compose_probe(
        teacher=args.teacher,
        people=args.people,
        world_dir=args.world_dir,
        world_seed=args.world_seed,
        seeds=args.seeds,
        epochs=args.epochs,
        samples=args.samples,
        progress=not args.quiet,
    )
    paths = write_compose_outputs(result, args.out)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.table())
    if not args.quiet:
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


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
    """Stand-alone entry (``python -m mstudy.probes.cli reversal|compose ...``)."""
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
