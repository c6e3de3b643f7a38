"""Run the code blocks of a Markdown page: the convention behind ``tests/test_docs.py``.

Every fenced code block of a page in ``docs/`` is proven, in page order, in one temporary
working directory and one Python namespace per page:

- ``python``: executed. A ``title="path"`` attribute (```` ```python title="pkg/mod.py" ````)
  makes it a file instead: written to that path, not executed.
- any language with ``title="path"``: written to that path (a data file, a config, a
  ``pyproject.toml``). A TOML file that is a study config is also loaded with mstudy's config
  loader and every component in it is looked up and its parameters checked.
- ``toml`` without a title: a study config (or a fragment of one: its missing required
  sections are filled in) is checked the same way; any other TOML must parse.
- ``bash`` / ``console``: every command must be ``mstudy ...`` (or ``python -m mstudy ...``)
  and runs through :func:`mstudy.cli.main`, expecting exit status 0. In ``console`` blocks
  only ``$ `` lines are commands; the rest is output. ``#`` comments are ignored.
- ``pycon``: an interactive session (``>>>`` prompts): run as a doctest in the page's
  namespace, so the output shown must be the output produced (``...`` matches anything,
  whitespace differences are ignored).
- anything else (``text``, ``json`` without a title, ...): shown output, not run.

A directive in an HTML comment on the line just before a block changes that:

- ``<!-- test: slow -->``: run only in the slow tier (the real embedded teacher, minutes of
  work). The slow tier runs the whole page, so later blocks may use what a slow one made,
  but then they must be slow too (the default tier runs the page without the slow blocks).
- ``<!-- test: skip (reason) -->``: never run; only for what cannot run in CI at all (the
  Hugging Face Hub, a GPU, a server that CI does not start). The reason is required.
- ``<!-- test: exit N -->``: a ``bash`` block whose commands exit with status N.
- ``<!-- test: broken -->``: a TOML config written (it has a title) to show an error: it must
  fail the config check.
- ``<!-- test: pip-install -->``: a ``bash`` block ``pip install -e .`` or ``pip install .``,
  run as ``pip install --no-deps --no-build-isolation --no-index --target SITE .`` with
  ``SITE`` then put on ``sys.path``, so the plugin it installs is found by what follows.
"""

from __future__ import annotations

import doctest
import io
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)(?P<attrs>.*)$")
_TITLE = re.compile(r"""title=(?:"([^"]*)"|'([^']*)')""")
_DIRECTIVE = re.compile(r"^\s*<!--\s*test:\s*(?P<body>.*?)\s*-->\s*$")
_SKIP = re.compile(r"^skip\s*\((?P<reason>.+)\)$")
_EXIT = re.compile(r"^exit\s+(?P<code>\d+)$")
SHELLS = ("bash", "sh", "shell", "console")


class DocsError(AssertionError):
    """A block that fails, or a page that breaks the convention; names the page and line."""


@dataclass
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    title: str | None = None
    directive: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def slow(self) -> bool:
        return self.directive == "slow"

    @property
    def skip_reason(self) -> str | None:
        match = _SKIP.match(self.directive or "")
        return match.group("reason").strip() if match else None

    @property
    def expected_exit(self) -> int:
        match = _EXIT.match(self.directive or "")
        return int(match.group("code")) if match else 0


def parse_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, with their directive (checked for syntax)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match.group("indent"), match.group("fence")
        start, body = i, []
        i += 1
        closing = re.compile(rf"^{re.escape(indent)}{fence[0]}{{{len(fence)},}}\s*$")
        while i < len(lines) and not closing.match(lines[i]):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        if i == len(lines):
            raise DocsError(f"{page.relative_to(ROOT)}:{start + 1}: unclosed code block")
        i += 1
        title = _TITLE.search(match.group("attrs"))
        directive = None
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        if before >= 0:
            found = _DIRECTIVE.match(lines[before])
            if found:
                directive = found.group("body")
        block = Block(
            page=page,
            line=start + 1,
            lang=match.group("lang").lower(),
            code="\n".join(body) + "\n",
            title=(title.group(1) or title.group(2)) if title else None,
            directive=directive,
        )
        _check_directive(block)
        blocks.append(block)
    return blocks


def _check_directive(block: Block) -> None:
    directive = block.directive
    if directive is None or directive in ("slow", "pip-install", "broken"):
        return
    if _SKIP.match(directive) or _EXIT.match(directive):
        return
    raise DocsError(
        f"{block.where}: unknown directive {directive!r}; use slow, skip (reason), exit N, "
        "broken or pip-install"
    )


def has_slow_blocks(page: Path) -> bool:
    return any(block.slow for block in parse_blocks(page))


@dataclass
class PageRun:
    """Runs one page's blocks in order in ``workdir`` (the current directory)."""

    page: Path
    workdir: Path
    slow: bool
    namespace: dict[str, Any] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)

    def run(self) -> None:
        self.namespace.setdefault("__name__", "__docs__")
        for block in parse_blocks(self.page):
            if block.skip_reason is not None or (block.slow and not self.slow):
                continue
            try:
                self.run_block(block)
            except DocsError:
                raise
            except BaseException as exc:
                raise DocsError(
                    f"{block.where}: {block.lang or 'code'} block failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self.ran.append(block.where)

    def run_block(self, block: Block) -> None:
        if block.title is not None:
            self.write_file(block)
        elif block.lang == "python":
            code = compile(block.code, block.where, "exec")
            exec(code, self.namespace)
        elif block.lang == "pycon":
            self.run_doctest(block)
        elif block.lang == "toml":
            check_toml(block.code, self.workdir / "study.toml", block.where)
        elif block.lang in SHELLS:
            self.run_shell(block)

    def run_doctest(self, block: Block) -> None:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(
            block.code, self.namespace, block.where, str(self.page), block.line
        )
        flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        runner = doctest.DocTestRunner(optionflags=flags)
        report = io.StringIO()
        runner.run(test, out=report.write, clear_globs=False)
        self.namespace.update(test.globs)  # the doctest ran on a copy
        if runner.failures:
            raise DocsError(f"{block.where}: pycon output differs:\n{report.getvalue()}")

    def write_file(self, block: Block) -> None:
        assert block.title is not None
        relative = Path(block.title)
        if relative.is_absolute() or ".." in relative.parts:
            raise DocsError(
                f"{block.where}: title must be a relative path inside the page's folder"
            )
        path = self.workdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.code, encoding="utf-8")
        if block.lang != "toml" or not is_study_config(tomllib.loads(block.code)):
            return
        if block.directive != "broken":
            check_toml(block.code, path, block.where)
            return
        from mstudy.errors import ConfigError

        try:
            check_toml(block.code, path, block.where)
        except ConfigError:
            return
        raise DocsError(f"{block.where}: marked broken, but the config checks out")

    def run_shell(self, block: Block) -> None:
        for command in shell_commands(block):
            argv = shlex.split(command, comments=True)
            if not argv:
                continue
            if block.directive == "pip-install":
                self.pip_install(block, argv)
                continue
            if argv[:3] == ["python", "-m", "mstudy"]:
                argv = ["mstudy", *argv[3:]]
            if argv[0] != "mstudy":
                raise DocsError(
                    f"{block.where}: {argv[0]!r} is not an mstudy command; mark the block "
                    "<!-- test: skip (reason) --> if it cannot run in CI"
                )
            code = run_cli(argv[1:])
            if code != block.expected_exit:
                raise DocsError(
                    f"{block.where}: {command!r} exited with {code}, expected {block.expected_exit}"
                )

    def pip_install(self, block: Block, argv: list[str]) -> None:
        if argv[:2] != ["pip", "install"] or argv[-1] != ".":
            raise DocsError(f"{block.where}: pip-install runs 'pip install [-e] .' only")
        site = self.workdir / ".site"
        subprocess.run(
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), ".",
            ],
            cwd=self.workdir,
            check=True,
            capture_output=True,
            timeout=300,
        )  # fmt: skip
        sys.path.insert(0, str(site))
        from mstudy import plugins

        plugins.clear_cache()


def shell_commands(block: Block) -> Iterator[str]:
    """The commands of a shell block: continuation lines joined, console output dropped."""
    pending = ""
    for raw in block.code.splitlines():
        line = raw.rstrip()
        if block.lang == "console" and not pending:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def run_cli(argv: list[str]) -> int:
    """``mstudy ARGV`` in this process (its output goes to pytest's captured streams)."""
    from mstudy.cli import main

    return main(argv)


# -- TOML ---------------------------------------------------------------------------------------


def is_study_config(data: dict[str, Any]) -> bool:
    from mstudy.config import SECTIONS

    return bool(data) and set(data) <= set(SECTIONS)


_FILL = {
    "source": 'source = "facts.jsonl"\n',
    "teacher": 'teacher = "scripted"\n',
    "strategies": 'strategies = ["reverse"]\n',
}


def check_toml(text: str, path: Path, where: str) -> None:
    """Parse TOML; a study config (or fragment) is loaded and its components checked."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DocsError(f"{where}: invalid TOML: {exc}") from exc
    if not is_study_config(data):
        return
    filled = "".join(
        line
        for key, line in _FILL.items()
        if key not in data and not (key == "strategies" and "stages" in data)
    )
    from mstudy.config import parse_config

    config = parse_config(filled + text, path)
    check_components(config)


def check_components(config: Any) -> None:
    """Every component of a parsed config is installed and takes the parameters given."""
    from mstudy import plugins
    from mstudy.config import ROUND_KEYS

    stages = config.stages
    tables: list[tuple[str, dict[str, Any]]] = [
        ("teachers", config.teacher),
        *(
            ("strategies", {k: v for k, v in t.items() if k not in ROUND_KEYS})
            for t in [*config.strategies, *(t for s in stages for t in s["strategies"])]
        ),
        *(("filters", t) for s in stages for t in s["filters"]),
        *(("sinks", t) for s in stages for t in s["sinks"]),
        *(("filters", t) for t in config.filters),
        *(("sinks", t) for t in config.sinks),
        *([("sinks", config.rejects)] if config.rejects is not None else []),
    ]
    for kind, table in tables:
        params = {k: v for k, v in table.items() if k != "name"}
        obj = plugins.load(kind, table["name"])
        plugins.check_params(f"{plugins.singular(kind)} {table['name']!r}", obj, params)


# -- tables -------------------------------------------------------------------------------------

_HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<text>.+?)\s*$")
_CODE = re.compile(r"`([^`]+)`")


@dataclass
class Section:
    """A heading and the Markdown tables below it (up to the next heading of any level)."""

    level: int
    heading: str
    line: int
    tables: list[list[list[str]]] = field(default_factory=list)

    @property
    def code_names(self) -> list[str]:
        """The backticked words of the heading."""
        return _CODE.findall(self.heading)


def sections(page: Path) -> list[Section]:
    """Headings of ``page`` (outside code blocks) with the tables that follow each."""
    out: list[Section] = []
    in_code = False
    table: list[list[str]] | None = None
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        heading = _HEADING.match(line)
        if heading:
            out.append(Section(len(heading.group("level")), heading.group("text"), number))
            table = None
            continue
        if line.startswith("|") and out:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if table is None:
                table = []
                out[-1].tables.append(table)
            if not all(set(c) <= set(":- ") for c in cells):
                table.append(cells)
        else:
            table = None
    return out


def first_column_names(table: list[list[str]]) -> set[str]:
    """The backticked names in a table's first column (header row excluded), first word each."""
    names: set[str] = set()
    for row in table[1:]:
        for token in _CODE.findall(row[0]):
            names.add(token.split()[0].rstrip(","))
    return names
