"""The ``mstudy`` command line: argument handling only; the work is in config and plugins.

::

    mstudy run study.toml [--limit N] [--quiet] [--json-report FILE]
                          [--push-to-hub REPO] [--save-for-hub DIR]
    mstudy plugins [--json] [--check] [--kind K] [--verbose]
    mstudy view PATH [--port N] [--open] [--source FILE] [--refresh SECONDS]
    mstudy export OUTPUT --format F --out PATH [--system TEXT] [--instruction S=TEXT]
                         [--keep FIELD] [--conversational]
    mstudy --version

Exit codes: 0 success, 1 a failure while running (or ``plugins --check`` found a broken
plugin), 2 a bad config, command line or plugin name. Errors print one line on stderr, no
traceback. A new subcommand is a ``_add_<name>`` function registering its parser (with
``func=`` its handler) listed in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mstudy._version import __version__
from mstudy.errors import ConfigError, MstudyError, PluginError

if TYPE_CHECKING:
    from mstudy.config import HubSettings, StudyConfig
    from mstudy.report import Report
    from mstudy.study import Study

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

_Subparsers = Any  # argparse's _SubParsersAction, which is private


# -- mstudy run -------------------------------------------------------------------------------


def _add_run(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a study described by a TOML config",
        description="Build the study a TOML config describes, run it and print its report.",
    )
    parser.add_argument("config", type=Path, help="the study config (TOML)")
    parser.add_argument(
        "--limit", type=_positive_int, metavar="N", help="study at most N source records"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no report on stdout"
    )
    parser.add_argument(
        "--json-report", type=Path, metavar="FILE", help="also write the report as JSON to FILE"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="count the teacher requests and tokens (and cost, with [run] prices); call nothing",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="discard the journal of an interrupted run and start over (default: resume)",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run the teacher as a pool of Ray actors set by [ray] (needs mstudy[ray]); "
        "ADDRESS joins a cluster (host:port, auto, ray://...), none starts a local one",
    )
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="after a completed run, push the rows of the first jsonl or parquet sink with a "
        "dataset card to the Hub dataset repo REPO (overrides [hub] repo_id)",
    )
    parser.add_argument(
        "--save-for-hub",
        type=Path,
        metavar="DIR",
        help="after a completed run, write the folder a push uploads to DIR "
        "(overrides [hub] folder)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mstudy.config import load_config

    config = load_config(args.config)
    if args.push_to_hub is not None:  # publishing is checked before anything is built or run
        from mstudy.hub import check_repo_id

        try:
            check_repo_id(args.push_to_hub)
        except ConfigError as exc:
            raise ConfigError(f"--push-to-hub: {exc}") from None
    if config.is_chain:
        return _run_chain(args, config)
    publish = config.hub_settings(repo_id=args.push_to_hub, folder=args.save_for_hub)
    config.check_components()  # names, parameters and their types: nothing is built yet
    config.check_source()  # before anything (journal, outputs) is created on disk
    study, source = config.build(
        progress=False if args.quiet else None,
        ray=args.ray is not None,
        ray_address=args.ray or None,
    )
    limit = args.limit if args.limit is not None else config.limit
    if args.dry_run:
        estimate = study.estimate(source, limit=limit)
        if args.json_report is not None:
            args.json_report.parent.mkdir(parents=True, exist_ok=True)
            args.json_report.write_text(json.dumps(estimate.to_dict(), indent=2) + "\n")
        print(estimate)
        return EXIT_OK
    if (
        study.journal is not None
        and (study.journal / "checkpoint.json").exists()
        and not args.restart
    ):
        print(f"resuming the interrupted run journaled in {study.journal}", file=sys.stderr)
    report = study.run(source, limit=limit, restart=args.restart)
    if args.json_report is not None:
        args.json_report.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str)
        args.json_report.write_text(text + "\n", encoding="utf-8")
    if not args.quiet:
        print(report)
    if publish is not None:
        if report.status == "done":
            _publish(publish, study, report)
        else:
            print(
                f"mstudy: not published: the run is {report.status}"
                + (f" ({report.note})" if report.note else "")
                + "; run it again to finish, then it is published",
                file=sys.stderr,
            )
    return EXIT_OK


def _run_chain(args: argparse.Namespace, config: StudyConfig) -> int:
    """``mstudy run`` of a config with ``[[stages]]``: the chain, its report per stage."""
    for flag, value in (
        ("--dry-run", args.dry_run),
        ("--push-to-hub", args.push_to_hub),
        ("--save-for-hub", args.save_for_hub),
    ):
        if value:
            raise ConfigError(
                f"{flag} is for a single study; a chain's later stages study the replies of "
                "the earlier ones",
                path=str(config.path),
            )
    config.check_components()
    config.check_source()
    chain, source = config.build_chain(
        progress=False if args.quiet else None,
        ray=args.ray is not None,
        ray_address=args.ray or None,
    )
    limit = args.limit if args.limit is not None else config.limit
    if chain.journal is not None and chain.journal.exists() and not args.restart:
        print(f"resuming the interrupted chain journaled in {chain.journal}", file=sys.stderr)
    report = chain.run(source, limit=limit, restart=args.restart)
    _write_report(args, report)
    return EXIT_OK


def _write_report(args: argparse.Namespace, report: Report) -> None:
    if args.json_report is not None:
        args.json_report.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str)
        args.json_report.write_text(text + "\n", encoding="utf-8")
    if not args.quiet:
        print(report)


def _publish(settings: HubSettings, study: Study, report: Report) -> None:
    """Write the Hub folder and/or push, as ``settings`` say; say where on stderr."""
    import datasets

    from mstudy import hub

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one line per step says what happened
    try:
        if settings.folder is not None:
            card = dict(settings.card)
            if settings.repo_id is not None:  # the very folder that is pushed
                card["repo_id"] = settings.repo_id
            folder = hub.save_for_hub(settings.data, study, report, settings.folder, **card)
            print(f"wrote {folder} (README.md card, mstudy.json, data/)", file=sys.stderr)
        if settings.repo_id is not None:
            url = hub.push_to_hub(
                settings.data,
                study,
                report,
                settings.repo_id,
                private=settings.private,
                **settings.card,
            )
            print(f"pushed to {url}", file=sys.stderr)
    finally:
        if bars:
            datasets.enable_progress_bars()


# -- mstudy plugins ---------------------------------------------------------------------------


def _add_plugins(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list installed teachers, strategies, filters and sinks",
        description="List the plugins registered through entry points, without importing them.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.add_argument(
        "--check", action="store_true", help="import every plugin and report ok or its error"
    )
    parser.add_argument(
        "--kind",
        metavar="K",
        help="only this kind: teachers, strategies, filters or sinks (singular works too)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show each plugin's summary and parameters",
    )
    parser.set_defaults(func=_plugins)


def _plugins(args: argparse.Namespace) -> int:
    from mstudy import plugins

    infos = plugins.list_plugins(args.kind)
    rows: list[dict[str, Any]] = [info.to_dict() for info in infos]
    broken = False
    if args.check or args.verbose:
        for info, row in zip(infos, rows, strict=True):
            try:
                if args.verbose:
                    details = plugins.describe(info.kind, info.qualified_name)
                    row["summary"] = details["summary"]
                    row["parameters"] = details["parameters"]
                else:
                    plugins.load(info.kind, info.qualified_name)
                status = "ok"
            except PluginError as exc:
                status = f"error: {_cause(exc)}"
                broken = True
            duplicate = info.status == "duplicate"
            if args.check:
                row["status"] = f"{status} (duplicate)" if duplicate else status
            else:
                row["status"] = "duplicate" if duplicate and status == "ok" else status
                if status == "ok" and not duplicate:
                    row["status"] = "loaded"
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no plugins installed" + (f" of kind {args.kind}" if args.kind else ""))
    else:
        _print_table(rows, verbose=args.verbose)
    return EXIT_FAILURE if args.check and broken else EXIT_OK


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)


def _print_table(rows: Sequence[dict[str, Any]], *, verbose: bool) -> None:
    columns = ("kind", "name", "distribution", "version", "status")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns[:-1]}
    print("  ".join(c.upper().ljust(widths.get(c, 0)) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths.get(c, 0)) for c in columns).rstrip())
        if verbose and row.get("summary") is not None:
            if row["summary"]:
                print(f"    {row['summary']}")
            for parameter in row.get("parameters", ()):
                print(f"      {parameter}")


# -- the program ------------------------------------------------------------------------------

# -- mstudy cache ----------------------------------------------------------------------------


def _add_cache(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="show or prune a teacher-call cache",
        description="Show what a call cache holds, or delete old entries from it.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    stats = actions.add_parser("stats", help="entries per teacher, tokens, size")
    stats.add_argument("path", type=Path, help="the cache file (SQLite)")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(func=_cache_stats)
    prune = actions.add_parser("prune", help="delete entries")
    prune.add_argument("path", type=Path, help="the cache file (SQLite)")
    prune.add_argument(
        "--older-than", type=float, metavar="DAYS", help="delete entries older than DAYS days"
    )
    prune.add_argument("--teacher", metavar="FINGERPRINT", help="delete one teacher's entries")
    prune.set_defaults(func=_cache_prune)


def _open_cache(path: Path) -> Any:
    from mstudy.cache import CallCache

    if not path.is_file():
        raise ConfigError(f"no cache file at {path}")
    return CallCache(path)


def _cache_stats(args: argparse.Namespace) -> int:
    with _open_cache(args.path) as cache:
        stats = cache.stats()
    if args.json:
        print(
            json.dumps(
                {
                    "path": stats.path,
                    "entries": stats.entries,
                    "teachers": stats.teachers,
                    "completion_tokens": stats.completion_tokens,
                    "size_bytes": stats.size_bytes,
                },
                indent=2,
            )
        )
    else:
        print(stats)
    return EXIT_OK


def _cache_prune(args: argparse.Namespace) -> int:
    if args.older_than is None and args.teacher is None:
        raise ConfigError("say what to prune: --older-than DAYS and/or --teacher FINGERPRINT")
    with _open_cache(args.path) as cache:
        older = args.older_than * 86400 if args.older_than is not None else None
        deleted = cache.prune(older_than_s=older, teacher=args.teacher)
    print(f"deleted {deleted} cached calls from {args.path}")
    return EXIT_OK


# -- mstudy view -----------------------------------------------------------------------------


def _add_view(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "view",
        help="show a study's output or a probe's folder as a local web page",
        description="Serve a read-only web page of a study's output (an output folder, a "
        ".jsonl or .parquet file, or a study config) or of a probe's folder, on 127.0.0.1. "
        "While a run is going the page shows what it has committed and refreshes.",
    )
    parser.add_argument(
        "path", type=Path, help="output folder, .jsonl/.parquet file, study config or probe folder"
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=0,
        metavar="N",
        help="port on 127.0.0.1 (default: 0, a free one; the URL is printed)",
    )
    parser.add_argument("--open", action="store_true", help="open the page in a web browser")
    parser.add_argument(
        "--source",
        type=Path,
        metavar="FILE",
        help="the study's source (JSONL/Parquet), to show each row's source record "
        "(a study config names it already)",
    )
    parser.add_argument(
        "--refresh",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often the page checks for new rows (default: 2; 0: never)",
    )
    parser.set_defaults(func=_view)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {value}")
    return value


def _view(args: argparse.Namespace) -> int:
    from mstudy.view.outputs import find

    if args.refresh < 0:
        raise ConfigError(f"--refresh must be >= 0, got {args.refresh}", parameter="refresh")
    target = find(args.path, source=args.source)
    try:
        from mstudy.view.serve import serve
    except ImportError as exc:  # pragma: no cover - the view extra is not installed
        _error(exc)
        return EXIT_FAILURE
    try:
        serve(target, port=args.port, open_browser=args.open, refresh_s=args.refresh)
    except ImportError as exc:  # starlette or uvicorn missing: say how to install them
        _error(exc)
        return EXIT_FAILURE
    return EXIT_OK


def _add_probe(subparsers: _Subparsers) -> None:
    from mstudy.probes.cli import register

    register(subparsers)


# -- mstudy export ----------------------------------------------------------------------------


def _add_export(subparsers: _Subparsers) -> None:
    from mstudy.sinks.formats import FORMATS

    parser = subparsers.add_parser(
        "export",
        help="write a study's output in a training format (TRL, Alpaca, ShareGPT, text)",
        description="Read the rows a study wrote (JSON Lines, Parquet or a saved dataset) and "
        "write them in a training format. Rows with no place in the format are counted on "
        "stderr, not written.",
    )
    parser.add_argument("output", type=Path, help="the rows mstudy wrote (.jsonl or .parquet)")
    parser.add_argument(
        "--format", required=True, choices=sorted(FORMATS), help="the training format"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="the file to write (.jsonl, or .parquet)"
    )
    parser.add_argument("--system", metavar="TEXT", help="a system message for every row")
    parser.add_argument(
        "--instruction",
        action="append",
        default=[],
        metavar="STRATEGY=TEXT",
        help="the instruction for a strategy's rows (repeatable; '*' for any other strategy)",
    )
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="FIELD",
        help="copy this field of each row into the output as it is (repeatable; e.g. id)",
    )
    parser.add_argument(
        "--conversational",
        action="store_true",
        help="sft_prompt_completion only: prompt and completion as message lists",
    )
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from collections import Counter

    from mstudy.records import Record
    from mstudy.sinks.training import training_sink
    from mstudy.sources import iter_source

    instructions: dict[str, str] = {}
    for item in args.instruction:
        strategy, sep, text = item.partition("=")
        if not sep or not strategy.strip():
            raise ConfigError(f"--instruction takes STRATEGY=TEXT, got {item!r}")
        instructions[strategy.strip()] = text
    if args.conversational and args.format != "sft_prompt_completion":
        raise ConfigError("--conversational applies to --format sft_prompt_completion only")
    if args.output.resolve() == args.out.resolve():
        raise ConfigError(f"--out {args.out} is the output being read; write another file")
    options: dict[str, Any] = {"instructions": instructions, "system": args.system}
    options["keep"] = args.keep
    if args.conversational:
        options["conversational"] = True
    rows = iter_source(args.output)  # checks the path before anything is created
    unreadable: Counter[str] = Counter()
    with training_sink(args.format, args.out, **options) as sink:
        batch: list[Any] = []
        for item in rows:
            if isinstance(item, Record):
                batch.append(item.fields)
            else:
                unreadable[item.reason] += 1
            if len(batch) >= 1000:
                sink.write(batch)
                batch = []
        sink.write(batch)
    skipped = Counter({f"unreadable row ({k})": n for k, n in unreadable.items()})
    skipped.update(sink.skipped)
    message = f"wrote {sink.rows_formatted} rows to {args.out}"
    message += f" ({args.format})"
    if skipped:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in skipped.most_common())
        message += f"; not written: {sum(skipped.values())} ({reasons})"
    print(message, file=sys.stderr)
    return EXIT_OK


COMMANDS: tuple[Callable[[_Subparsers], None], ...] = (
    _add_run,
    _add_probe,
    _add_plugins,
    _add_cache,
    _add_view,
    _add_export,
)
"""Each adds one subcommand."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``mstudy`` argument parser, with every subcommand of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="mstudy",
        description="Machine studying: a teacher model enriches a dataset before a student "
        "is trained on it.",
    )
    parser.add_argument("--version", action="version", version=f"mstudy {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ConfigError, PluginError) as exc:
        _error(exc)
        return EXIT_USAGE
    except MstudyError as exc:
        _error(exc)
        return EXIT_FAILURE
    except BrokenPipeError:  # `mstudy plugins | head`: the reader left, say nothing
        _silence_stdout()
        return EXIT_FAILURE
    except OSError as exc:  # e.g. --json-report to a folder that cannot be written
        _error(exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("mstudy: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (captured output)
        pass


def _error(exc: BaseException) -> None:
    print(f"mstudy: error: {exc}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["build_parser", "main"]
