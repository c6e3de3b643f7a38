"""One version, in one place: the package, its metadata, the CLI and the changelog agree."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import mstudy
from mstudy.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_and_its_metadata_agree() -> None:
    assert mstudy.__version__ == metadata.version("mstudy")


def test_the_cli_prints_the_version(capsys) -> None:  # type: ignore[no-untyped-def]
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert mstudy.__version__ in capsys.readouterr().out


def test_the_changelog_describes_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    version = mstudy.__version__
    if re.fullmatch(r"\d+\.\d+\.\d+", version):  # a release: its own dated section
        heading = rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$"
        assert re.search(heading, changelog, re.M), f"CHANGELOG.md has no section for {version}"
    else:  # a development version: changes go under Unreleased
        assert re.search(r"^## \[Unreleased\]$", changelog, re.M)
