"""The examples stay runnable and documented; ``.ci/examples`` runs each of them for real."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"quickstart", "local_model", "remote_server", "hf_datasets"} <= names
    assert {"custom_strategy", "probe"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_says_what_it_shows_and_how_to_run_it(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    assert doc, f"{path.name} has no docstring"
    assert f"python examples/{path.name}" in doc, f"{path.name}'s docstring shows no command"
    guards = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    ]
    assert guards, f"{path.name} runs on import"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_ci_runs_every_example(path: Path) -> None:
    script = (REPO / ".ci" / "examples").read_text(encoding="utf-8")
    assert f"examples/{path.name}" in script


def test_notebook_is_committed_clean_and_runs_in_ci() -> None:
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(REPO / "examples" / "notebook.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "examples/notebook.ipynb" in (REPO / ".ci" / "examples").read_text(encoding="utf-8")
