"""The probe package's shape: its exported names, one-job modules, no import cycles."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import mstudy.probes

# What ``mstudy.probes`` promises its users; a change here is a change of public API.
EXPORTS = [
    "ProbeResult",
    "StudentConfig",
    "World",
    "WorldError",
    "generate_world",
    "load_world",
    "run_probe",
    "write_outputs",
]

PACKAGE = Path(mstudy.probes.__file__).parent
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE)]))


def test_exported_names_are_pinned_and_each_imports() -> None:
    assert mstudy.probes.__all__ == EXPORTS
    for name in EXPORTS:
        obj = getattr(mstudy.probes, name)
        assert getattr(obj, "__name__", name) == name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = mstudy.probes.nothing


def test_star_import_in_a_fresh_process_gives_every_name() -> None:
    code = (
        "from mstudy.probes import *\n"
        f"missing = [n for n in {EXPORTS!r} if n not in globals()]\n"
        "assert not missing, missing\n"
        "import sys\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _probe_imports(module: str) -> set[str]:
    """The ``mstudy.probes`` modules that ``module`` imports anywhere (type-checking too)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("mstudy.probes."):
                found.add(node.module.removeprefix("mstudy.probes.").split(".")[0])
            elif node.module == "mstudy.probes":
                found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mstudy.probes."):
                    found.add(alias.name.removeprefix("mstudy.probes.").split(".")[0])
    return found - {module}


def test_probe_modules_import_each_other_without_cycles() -> None:
    graph = {m: _probe_imports(m) for m in MODULES if m != "__init__"}
    assert graph["chart"] == {"result"}  # the chart needs only the result type
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            cycle = " -> ".join((*path[path.index(module) :], module))
            pytest.fail(f"import cycle: {cycle}")
        if module in done:
            return
        for other in graph.get(module, ()):
            visit(other, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


@pytest.mark.parametrize("module", [m for m in MODULES if m != "__init__"])
def test_every_probe_module_says_its_job(module: str) -> None:
    imported = importlib.import_module(f"mstudy.probes.{module}")
    assert imported.__doc__ and imported.__doc__.strip()
