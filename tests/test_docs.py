"""The documentation is proven: every page's code runs, and the references match the code.

Each page of ``docs/`` is one test case that runs its code blocks in order (the convention is
in ``tests/docs_snippets.py``); pages with blocks marked ``<!-- test: slow -->`` get a second,
slow-tier case that runs them too. The CLI reference is compared with the argument parser,
the config reference with the loader's accepted sections and keys, and the parameter tables
of the component pages with the signatures of the built-in plugins.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from docs_snippets import (
    DOCS,
    ROOT,
    DocsError,
    PageRun,
    Section,
    first_column_names,
    has_slow_blocks,
    parse_blocks,
    sections,
)

from mstudy import plugins

PAGES = sorted(DOCS.glob("*.md"))
SLOW_PAGES = [page for page in PAGES if has_slow_blocks(page)]


@pytest.fixture
def page_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory; sys.path, the plugin cache and new modules restored after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules = set(sys.modules)
    plugins.clear_cache()
    yield tmp_path
    plugins.clear_cache()
    for name in set(sys.modules) - modules:
        module = sys.modules[name]
        if str(tmp_path) in str(getattr(module, "__file__", None) or ""):
            del sys.modules[name]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page(page: Path, page_env: Path) -> None:
    """Every block of the page that is not slow or skipped runs."""
    PageRun(page, page_env, slow=False).run()


@pytest.mark.slow
@pytest.mark.parametrize("page", SLOW_PAGES, ids=[p.name for p in SLOW_PAGES])
def test_page_slow(page: Path, page_env: Path) -> None:
    """The whole page, slow blocks included (the real embedded teacher)."""
    PageRun(page, page_env, slow=True).run()


def test_skipped_blocks_are_few() -> None:
    """Skips are for what cannot run in CI at all (the Hub, a GPU, a server CI does not
    start); their directives and reasons are checked when the pages are parsed."""
    skips = [b.where for page in PAGES for b in parse_blocks(page) if b.skip_reason is not None]
    # today: the probe's full run and the quickstart's (minutes), a Hub push, a remote
    # provider, and the vllm teacher on a GPU model
    assert len(skips) <= 5, skips


# -- the CLI reference --------------------------------------------------------------------------


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("mstudy",)
) -> Iterator[tuple[str, set[str]]]:
    """(command path, its options and positionals) for every command that takes arguments."""
    names: set[str] = set()
    children: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            children += list(action.choices.items())
        elif action.option_strings:
            names.update(action.option_strings)
        else:
            names.add(str(action.metavar or action.dest).upper())
    if names:
        yield " ".join(path), names
    for name, child in children:
        yield from _commands(child, (*path, name))


def _documented_commands() -> dict[str, set[str]]:
    documented: dict[str, set[str]] = {}
    for section in sections(DOCS / "cli.md"):
        names = section.code_names
        if not names or not names[0].startswith("mstudy") or not section.tables:
            continue
        tokens: set[str] = set()
        for row in section.tables[0][1:]:
            for token in re.findall(r"`([^`]+)`", row[0]):
                word = token.split()[0].rstrip(",")
                if word not in ("-h", "--help"):
                    tokens.add(word if word.startswith("-") else word.upper())
        documented[names[0]] = tokens
    return documented


def test_cli_reference_matches_the_parser() -> None:
    """docs/cli.md has a section per command whose table lists exactly its arguments."""
    from mstudy.cli import build_parser

    actual = dict(_commands(build_parser()))
    documented = _documented_commands()
    assert sorted(documented) == sorted(actual), "commands documented vs. parser"
    for command, names in actual.items():
        assert documented[command] == names, command


# -- the config reference -----------------------------------------------------------------------


def _config_sections() -> dict[str, Section]:
    found = {}
    for section in sections(DOCS / "config.md"):
        match = re.fullmatch(r"`\[{1,2}(\w+)\]{1,2}`.*", section.heading)
        if match:
            found[match.group(1)] = section
    return found


def test_config_reference_matches_the_loader() -> None:
    """docs/config.md documents every section the loader accepts, and every key of the fixed
    ones, and nothing else."""
    from mstudy.config import RUN_KEYS, SECTIONS, SOURCE_KEYS

    documented = _config_sections()
    assert sorted(documented) == sorted(SECTIONS)
    for name, keys in (("source", SOURCE_KEYS), ("run", RUN_KEYS)):
        (table,) = documented[name].tables
        assert first_column_names(table) == set(keys), name
    for name in ("teacher", "strategies", "filters", "sinks", "rejects"):
        tables = documented[name].tables
        assert tables and "name" in first_column_names(tables[0]), name


def test_capabilities_table_matches_the_protocols() -> None:
    """docs/plugins.md lists every optional capability in mstudy.interfaces, with its
    members, and nothing else."""
    from mstudy.interfaces import CAPABILITIES, members

    (section,) = [s for s in sections(DOCS / "plugins.md") if s.heading == "Optional capabilities"]
    (table,) = section.tables
    declared = {cap for caps in CAPABILITIES.values() for cap in caps}
    assert first_column_names(table) == {cap.__name__ for cap in declared}
    for row in table[1:]:
        name = row[0].strip("` ")
        (cap,) = [c for c in declared if c.__name__ == name]
        assert set(re.findall(r"`(\w+)", row[2])) == set(members(cap)), name


# -- component parameters -----------------------------------------------------------------------

KIND_PAGES = {
    "teachers": ("teachers.md",),
    "strategies": ("strategies.md",),
    "filters": ("filters.md", "selection.md"),
    "sinks": ("sinks.md", "training-formats.md"),
}
COMMON_STRATEGY_PARAMETERS = "Parameters of every strategy"
BUILTINS = [
    (info.kind, info.name)
    for info in plugins.list_plugins()
    if info.distribution == "mstudy" and info.kind in KIND_PAGES
]


def _parameter_names(kind: str, name: str) -> tuple[set[str], bool]:
    """The keyword parameters a built-in plugin accepts, and whether it takes any (**kwargs)."""
    names, open_kw = set(), False
    for text in plugins.describe(kind, name)["parameters"]:
        if text.startswith("**"):
            open_kw = True
        elif not text.startswith("*"):
            names.add(re.split(r"[:= ]", text, maxsplit=1)[0])
    return names, open_kw


def _parameter_table(pages: tuple[str, ...], name: str) -> tuple[set[str], str]:
    for page in pages:
        found = sections(DOCS / page)
        for i, section in enumerate(found):
            if section.code_names[:1] != [name]:
                continue
            for later in found[i:]:
                if later is not section and later.level <= section.level:
                    break
                for table in later.tables:
                    if table and table[0][0].strip().lower() == "parameter":
                        return first_column_names(table), f"{page}:{later.line}"
            raise AssertionError(f"{page}:{section.line}: no parameter table for {name!r}")
    raise AssertionError(f"no section headed `{name}` in {', '.join(pages)}")


@pytest.mark.parametrize(("kind", "name"), BUILTINS, ids=[f"{k}:{n}" for k, n in BUILTINS])
def test_builtin_parameters_are_documented(kind: str, name: str) -> None:
    """Each built-in component has a section with a table of exactly the parameters it takes."""
    accepted, open_kw = _parameter_names(kind, name)
    documented, where = _parameter_table(KIND_PAGES[kind], name)
    if kind == "strategies":
        (common,) = [
            s for s in sections(DOCS / "strategies.md") if s.heading == COMMON_STRATEGY_PARAMETERS
        ]
        documented |= first_column_names(common.tables[0])
    if open_kw:  # a factory passing its keywords on (default -> TransformersTeacher)
        assert documented, where
    else:
        assert documented == accepted, where


# -- the site -----------------------------------------------------------------------------------


def _nav_pages(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_pages(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_pages(value)


def test_every_page_is_in_the_nav_once() -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = list(_nav_pages(config["nav"]))
    assert sorted(nav) == sorted(p.name for p in PAGES)


def test_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local
    for target in local:
        assert (ROOT / target).exists(), target


def test_repository_paths_named_in_the_docs_exist() -> None:
    """`examples/...`, `benchmarks/...`, `plugins/...`, `tests/...`, `.ci/...` in the pages."""
    named = {
        path
        for page in PAGES
        for path in re.findall(
            r"`((?:examples|benchmarks|plugins|tests|\.ci)/[\w./-]*)",
            page.read_text(encoding="utf-8"),
        )
    }
    assert named
    missing = sorted(p for p in named if not (ROOT / p.rstrip("/")).exists())
    assert not missing


def test_a_failing_block_names_its_page_and_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```python\nx = 1\n```\n\n```python\nassert x == 2\n```\n")
    run = PageRun(page, tmp_path, slow=False)
    import docs_snippets

    original = docs_snippets.ROOT
    docs_snippets.ROOT = tmp_path
    try:
        with pytest.raises(DocsError, match=r"page\.md:7: python block failed: AssertionError"):
            run.run()
    finally:
        docs_snippets.ROOT = original
    assert run.ran == ["page.md:3"]
