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
    from mstudy.probes.compose import COMPOSE_DEFAULTS
    from mstudy.probes.defaults import DEFAULTS

    probe = subparsers.add_parser(
        "probe",
        help="measure what studying does for a student (reversal, composition)",
        description="Probes that train a tiny student on studied data and measure it.",
    )
    kinds = probe.add_subparsers(dest="probe", metavar="PROBE")
    kinds.required = True
    reversal = kinds.add_parser(
        "reversal",
        help="does a teacher's reversal fix a student's reversal curse?",
        description=(
            "Build a world of invented facts, study it with the reverse and paraphrase "
            "strategies on a teacher, train a tiny student from scratch on each version of the "
            "data, and print how well it answers questions in the direction it was never told."
        ),
    )
    _teacher_option(reversal, DEFAULTS["teacher"], "the teacher-free ceiling")
    reversal.add_argument(
        "--facts",
        type=_positive,
        default=DEFAULTS["facts"],
        metavar="N",
        help=f"facts in the generated world (default: {DEFAULTS['facts']})",
    )
    reversal.add_argument(
        "--relations",
        type=_positive,
        default=DEFAULTS["relations"],
        metavar="N",
        help=f"relation types, 1-6 (default: {DEFAULTS['relations']})",
    )
    _shared_options(
        reversal,
        DEFAULTS,
        "seed of the world (default: 0)",
        "teacher sampling rounds per fact; a round only re-asks facts that have no "
        f"accepted reversal yet (default: {DEFAULTS['samples']})",
        DEFAULT_OUT,
    )
    reversal.set_defaults(func=run)

    compose = kinds.add_parser(
        "compose",
        help="do a teacher's chains of thought or connected statements teach two-hop answers?",
        description=(
            "Build a world of atomic facts about people and two-hop questions about them, "
            "study it with the cot and connect strategies on a teacher, train a tiny student "
            "from scratch on each version of the data, and print how well it answers the "
            "held-out two-hop questions."
        ),
    )
    _teacher_option(compose, COMPOSE_DEFAULTS["teacher"], "the teacher-free ceilings")
    compose.add_argument(
        "--people",
        type=_positive,
        default=COMPOSE_DEFAULTS["people"],
        metavar="N",
        help="people in the generated world, 2 questions each "
        f"(default: {COMPOSE_DEFAULTS['people']})",
    )
    _shared_options(
        compose,
        COMPOSE_DEFAULTS,
        "seed of the world and of its held-out split (default: 0)",
        "teacher rounds; a round only re-asks what has no accepted text yet "
        f"(default: {COMPOSE_DEFAULTS['samples']})",
        COMPOSE_OUT,
    )
    compose.set_defaults(func=run_compose)


def _teacher_option(parser: argparse.ArgumentParser, default: str, ceiling: str) -> None:
    parser.add_argument(
        "--teacher",
        default=default,
        help=f"teacher plugin name, or 'rules' for {ceiling} "
        f"(default: {default}, the embedded SmolLM2)",
    )


def _shared_options(
    parser: argparse.ArgumentParser,
    defaults: dict[str, Any],
    world_seed_help: str,
    samples_help: str,
    out: Path,
) -> None:
    """The options both probes take: the world, the students, the teacher's rounds, output."""
    parser.add_argument(
        "--world-dir",
        type=Path,
        metavar="DIR",
        help="load the world from DIR/facts.jsonl and DIR/relations.toml (or .json)",
    )
    parser.add_argument("--world-seed", type=int, default=0, metavar="N", help=world_seed_help)
    for name, what in (
        ("seeds", "student seeds per condition"),
        ("epochs", "student training epochs"),
    ):
        parser.add_argument(
            f"--{name}",
            type=_positive,
            default=defaults[name],
            metavar="N",
            help=f"{what} (default: {defaults[name]})",
        )
    parser.add_argument(
        "--samples", type=_positive, default=defaults["samples"], metavar="N", help=samples_help
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=out,
        metavar="DIR",
        help=f"where report.json, table.md and chart.png go (default: {out})",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report, not the table")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")


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
    return _report(args, result, write_compose_outputs(result, args.out))


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
    return _report(args, result, write_outputs(result, args.out))


def _report(args: argparse.Namespace, result: Any, paths: list[Path]) -> int:
    """Print a probe's table (or its JSON report) and, unless quiet, what was written."""
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
