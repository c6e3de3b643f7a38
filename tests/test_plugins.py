"""The plugin registry, with real throwaway plugin distributions installed with pip.

tests/fixtures/plugins/ holds four plugin projects: ``mstudy-plugin-good`` (strategy
``shout``, filters ``max_caps`` and ``nonempty``, and teacher ``mistyped``: a strategy
registered as a teacher by mistake), ``mstudy-plugin-broken`` (its module raises ImportError)
and ``mstudy-plugin-dup-a`` / ``-dup-b`` (both register strategy ``dup``). They are installed
once per session into a temporary ``--target`` folder; subprocess tests put it on PYTHONPATH,
in-process tests on sys.path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mstudy import plugins
from mstudy.errors import (
    AmbiguousPluginError,
    ConfigError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
)
from mstudy.records import Completion, Example, Record, Rejection

FIXTURES = Path(__file__).parent / "fixtures" / "plugins"
PLUGIN_PROJECTS = ("good", "broken", "dup_a", "dup_b")


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the four fixture plugin distributions installed (pip --target)."""
    root = tmp_path_factory.mktemp("plugins")
    sources = []
    for project in PLUGIN_PROJECTS:  # build from copies: pip leaves build/ and egg-info behind
        shutil.copytree(FIXTURES / project, root / "src" / project)
        sources.append(str(root / "src" / project))
    site = root / "site"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), *sources,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    return site


@pytest.fixture
def on_path(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fixture plugins importable and discoverable in this process."""
    monkeypatch.syspath_prepend(str(plugin_site))
    plugins.clear_cache()
    yield plugin_site
    plugins.clear_cache()
    for name in list(sys.modules):
        if name.startswith("mstudy_plugin_"):
            del sys.modules[name]


def run_python(code: str, *pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def cli_json(*pythonpath: Path, args: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    done = subprocess.run(
        [sys.executable, "-m", "mstudy", "plugins", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def by_name(rows: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["kind"] == kind and r["name"] == name]


# -- discovery, in a subprocess ---------------------------------------------------------------


def test_cli_lists_third_party_plugins(plugin_site: Path) -> None:
    rows = cli_json(plugin_site)
    assert by_name(rows, "strategies", "shout") == [
        {
            "kind": "strategies",
            "name": "shout",
            "distribution": "mstudy-plugin-good",
            "version": "1.2.3",
            "value": "mstudy_plugin_good.strategy:Shout",
            "status": "available",
        }
    ]
    assert {(r["kind"], r["name"]) for r in rows if r["distribution"] == "mstudy-plugin-good"} == {
        ("strategies", "shout"),
        ("filters", "max_caps"),
        ("filters", "nonempty"),
        ("teachers", "mistyped"),
    }
    (broken,) = by_name(rows, "strategies", "broken")
    assert (broken["distribution"], broken["version"], broken["status"]) == (
        "mstudy-plugin-broken",
        "0.0.1",
        "available",
    )
    dups = by_name(rows, "strategies", "dup")
    assert sorted((r["distribution"], r["version"], r["status"]) for r in dups) == [
        ("mstudy-plugin-dup-a", "0.1.0", "duplicate"),
        ("mstudy-plugin-dup-b", "0.2.0", "duplicate"),
    ]
    # the built-ins come through the same groups
    (reverse,) = by_name(rows, "strategies", "reverse")
    assert reverse["distribution"] == "mstudy"


def test_listing_imports_no_plugin(plugin_site: Path) -> None:
    code = (
        "import sys, json\n"
        "from mstudy import plugins\n"
        "from mstudy.cli import main\n"
        "infos = plugins.list_plugins()\n"
        "assert main(['plugins']) == 0\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('mstudy_plugin'))))\n"
    )
    done = run_python(code, plugin_site)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_same_distribution_twice_on_path_is_one_plugin(plugin_site: Path, tmp_path: Path) -> None:
    copy = tmp_path / "site2"  # e.g. an editable install plus a site-packages one
    copy.mkdir()
    for item in plugin_site.iterdir():
        if item.name.startswith("mstudy_plugin_good"):
            shutil.copytree(item, copy / item.name)
    rows = cli_json(plugin_site, copy)
    assert len(by_name(rows, "strategies", "shout")) == 1
    assert by_name(rows, "strategies", "shout")[0]["status"] == "available"


def test_check_reports_broken_plugin_and_keeps_going(plugin_site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(plugin_site)}
    done = subprocess.run(
        [sys.executable, "-m", "mstudy", "plugins", "--check", "--kind", "strategy"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr  # something is broken
    assert "Traceback" not in done.stderr
    lines = {line.split()[1]: line for line in done.stdout.splitlines()[1:]}
    assert "error: ImportError: mstudy-plugin-broken needs the 'frobnicate'" in lines["broken"]
    assert lines["shout"].rstrip().endswith("ok")
    assert lines["reverse"].rstrip().endswith("ok")


# -- loading, in process ----------------------------------------------------------------------


def test_broken_plugin_is_contained(on_path: Path) -> None:
    with pytest.raises(PluginLoadError) as info:
        plugins.load("strategies", "broken")
    message = str(info.value)
    assert "strategy 'broken'" in message
    assert "mstudy-plugin-broken 0.0.1" in message
    assert "frobnicate" in message
    assert isinstance(info.value.__cause__, ImportError)
    # listing still works and shows the failure; every other plugin still loads
    statuses = {i.name: i.status for i in plugins.list_plugins("strategies")}
    assert statuses["broken"].startswith("error: ImportError")
    assert plugins.load("strategy", "shout").__name__ == "Shout"  # type: ignore[attr-defined]
    assert {i.name: i.status for i in plugins.list_plugins("strategies")}["shout"] == "loaded"


def test_duplicate_names_refused_and_dist_name_accepted(on_path: Path) -> None:
    with pytest.raises(AmbiguousPluginError) as info:
        plugins.load("strategies", "dup")
    assert "mstudy-plugin-dup-a:dup" in str(info.value)
    assert "mstudy-plugin-dup-b:dup" in str(info.value)
    a = plugins.create("strategies", "mstudy-plugin-dup-a:dup")
    b = plugins.create("strategies", "mstudy_plugin_dup_b:dup")  # normalized dist name
    assert (a.version, b.version) == ("a", "b")  # type: ignore[attr-defined]
    # dist:name also works when the name is unique, and names the wrong dist clearly
    assert plugins.load("strategies", "mstudy-plugin-good:shout") is plugins.load(
        "strategies", "shout"
    )
    with pytest.raises(PluginNotFoundError, match="provided by: mstudy-plugin-good:shout"):
        plugins.load("strategies", "mstudy-plugin-dup-a:shout")


def test_unknown_name_lists_available_and_suggests(on_path: Path) -> None:
    with pytest.raises(PluginNotFoundError) as info:
        plugins.load("strategies", "shuot")
    message = str(info.value)
    assert "did you mean 'shout'?" in message
    assert "reverse" in message and "shout" in message
    with pytest.raises(ConfigError, match="unknown plugin kind"):
        plugins.list_plugins("widgets")


def test_good_strategy_works_with_records(on_path: Path) -> None:
    shout = plugins.create("strategies", "shout", n=2, suffix="!!")
    record = Record.from_mapping({"id": "r1", "text": "hello there"})
    requests = shout.requests(record)  # type: ignore[attr-defined]
    assert [r.sample for r in requests] == [0, 1]
    completion = Completion(key=requests[0].key, text="HELLO THERE", teacher="t")
    (example,) = shout.parse(record, requests[0], completion)  # type: ignore[attr-defined]
    assert isinstance(example, Example)
    assert example.to_row()["text"] == "HELLO THERE!!"
    assert example.provenance.strategy == "shout"
    (rejection,) = shout.parse(  # type: ignore[attr-defined]
        record, requests[0], Completion(key=requests[0].key, text="hello")
    )
    assert isinstance(rejection, Rejection) and rejection.reason == "not shouted"


# -- create(): parameters ---------------------------------------------------------------------


def test_create_checks_parameters_before_calling(on_path: Path) -> None:
    with pytest.raises(plugins.ParameterError) as info:
        plugins.create("strategies", "shout", nn=2)
    assert str(info.value).startswith("strategy 'shout': unknown parameter 'nn'")
    assert "did you mean 'n'?" in str(info.value)
    assert "accepted: n, field, suffix, params" in str(info.value)
    assert info.value.parameter == "nn"
    assert isinstance(info.value, ConfigError)


def test_create_follows_kwargs_up_the_mro() -> None:
    # Reverse(**kwargs) passes them on to TemplateStrategy: its parameters are still checked
    with pytest.raises(ConfigError, match=r"unknown parameter 'nn'.*did you mean 'n'"):
        plugins.create("strategies", "reverse", nn=2)
    assert plugins.create("strategies", "reverse", n=2).n == 2  # type: ignore[attr-defined]


def test_create_factory_function_and_required_parameter(on_path: Path) -> None:
    with pytest.raises(ConfigError, match="filter 'max_caps': missing required parameter 'limit'"):
        plugins.create("filters", "max_caps")
    built = plugins.create("filters", "max_caps", limit=3)
    assert built.limit == 3  # type: ignore[attr-defined]


def test_create_value_errors_become_config_errors(on_path: Path) -> None:
    with pytest.raises(ConfigError, match="strategy 'shout': n must be >= 1") as info:
        plugins.create("strategies", "shout", n=0)
    assert isinstance(info.value.__cause__, ValueError)


def test_create_instances_and_objects(on_path: Path) -> None:
    nonempty = plugins.create("filters", "nonempty")
    assert nonempty is plugins.create("filter", "nonempty")  # the registered instance, cached
    with pytest.raises(ConfigError, match=r"ready-made .* takes no parameters"):
        plugins.create("filters", "nonempty", field="text")
    obj = object()
    assert plugins.create("teachers", obj) is obj  # objects pass through untouched
    with pytest.raises(ConfigError, match="parameters go with a plugin name"):
        plugins.create("teachers", obj, model="x")


def test_create_rejects_objects_that_are_not_of_the_kind(on_path: Path) -> None:
    # the good plugin also registers its strategy class as a teacher, by mistake
    with pytest.raises(PluginError, match="not a teacher: it lacks fingerprint, generate"):
        plugins.create("teachers", "mistyped")


def test_describe(on_path: Path) -> None:
    info = plugins.describe("strategies", "shout")
    assert info["distribution"] == "mstudy-plugin-good"
    assert info["summary"] == "Say the record's text louder; keep replies written in capitals."
    assert info["parameters"][:2] == ["n: int = 1", "field: str = 'text'"]


def test_find_does_not_import(on_path: Path) -> None:
    info = plugins.find("strategies", "shout")
    assert (info.distribution, info.version) == ("mstudy-plugin-good", "1.2.3")
    assert "mstudy_plugin_good.strategy" not in sys.modules
