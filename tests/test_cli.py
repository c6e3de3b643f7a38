"""The ``mstudy`` command line: plugins listing, version, exit codes, ``run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mstudy import __version__, plugins
from mstudy.cli import main

BASE = """\
[source]
path = "data.jsonl"

[teacher]
name = "scripted"

[[strategies]]
name = "reverse"
"""


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A hand-made distribution on sys.path: filter ``cli_ok`` works, ``cli_broken`` does not."""
    site = tmp_path / "site"
    dist = site / "mstudy_cli_fake-2.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mstudy-cli-fake\nVersion: 2.0\n")
    (dist / "entry_points.txt").write_text(
        "[mstudy.filters]\n"
        "cli_ok = mstudy_cli_fake_mod:OkFilter\n"
        "cli_broken = mstudy_cli_fake_missing:Nope\n"
    )
    (site / "mstudy_cli_fake_mod.py").write_text(
        "class OkFilter:\n"
        '    """Keep everything."""\n'
        '    name = "cli_ok"\n'
        "    def __init__(self, threshold: int = 3) -> None:\n"
        "        self.threshold = threshold\n"
        "    def check(self, example):\n"
        "        return example\n"
    )
    monkeypatch.syspath_prepend(str(site))
    plugins.clear_cache()
    yield site
    plugins.clear_cache()
    sys.modules.pop("mstudy_cli_fake_mod", None)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mstudy {__version__}"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "run" in capsys.readouterr().err


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert main(["run", "x.toml", "--limit", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_plugins_table(capsys: pytest.CaptureFixture[str], fake_dist: Path) -> None:
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "DISTRIBUTION", "VERSION", "STATUS"]
    rows = {tuple(line.split()[:2]): line.split() for line in lines[1:]}
    assert rows[("strategies", "reverse")][2] == "mstudy"
    assert rows[("filters", "cli_ok")][2:] == ["mstudy-cli-fake", "2.0", "available"]
    assert rows[("filters", "cli_broken")][4] == "available"  # listing imports nothing


def test_plugins_json_and_kind(capsys: pytest.CaptureFixture[str], fake_dist: Path) -> None:
    assert main(["plugins", "--json", "--kind", "filter"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows} == {"filters"}
    (ok,) = [r for r in rows if r["name"] == "cli_ok"]
    assert ok == {
        "kind": "filters",
        "name": "cli_ok",
        "distribution": "mstudy-cli-fake",
        "version": "2.0",
        "value": "mstudy_cli_fake_mod:OkFilter",
        "status": "available",
    }
    assert main(["plugins", "--kind", "widgets"]) == 2
    assert "unknown plugin kind 'widgets'" in capsys.readouterr().err


def test_plugins_check(capsys: pytest.CaptureFixture[str], fake_dist: Path) -> None:
    assert main(["plugins", "--check", "--json", "--kind", "filters"]) == 1  # one is broken
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cli_ok"]["status"] == "ok"
    assert rows["cli_broken"]["status"].startswith("error: ModuleNotFoundError")
    assert "mstudy_cli_fake_missing" in rows["cli_broken"]["status"]
    assert rows["length"]["status"] == "ok"


def test_plugins_verbose(capsys: pytest.CaptureFixture[str], fake_dist: Path) -> None:
    assert main(["plugins", "--verbose", "--kind", "filters"]) == 0
    out = capsys.readouterr().out
    assert "Keep everything." in out
    assert "threshold: int = 3" in out


def test_python_dash_m(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mstudy", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ},
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"mstudy {__version__}"


# -- mstudy run: exit codes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE + "[[filters]\n", "study.toml:9:"),  # malformed TOML
        (BASE.replace('"reverse"', '"revers"'), "study.toml:8: strategy 'revers' is not inst"),
        (BASE + "nn = 1\n", "study.toml:9: strategy 'reverse': unknown parameter 'nn'"),
        (BASE.replace("[teacher]", "[teachers]"), "unknown section 'teachers'"),
    ],
)
def test_run_bad_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "study.toml"
    path.write_text(text)
    assert main(["run", str(path)]) == 2
    captured = capsys.readouterr()
    assert expected in captured.err
    assert captured.err.startswith("mstudy: error: ")
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_run_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "no such config file" in capsys.readouterr().err


def test_run_failure_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data.jsonl").write_text('{"id": 1, "text": "A is B."}\n')
    (tmp_path / "study.toml").write_text(BASE + "\n[[sinks]]\nname = 'jsonl'\npath = 'out.jsonl'\n")
    (tmp_path / "out.jsonl").mkdir()  # the sink cannot commit onto a folder
    assert main(["run", str(tmp_path / "study.toml"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mstudy: error: ")
    assert "Traceback" not in err


def test_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    facts = [
        {"id": "a", "text": "Olaf Brandt is the father of Lena Brandt.", "subject": "Olaf Brandt",
         "object": "Lena Brandt"},
        {"id": "b", "text": "Marie Curie discovered polonium.", "subject": "Marie Curie",
         "object": "polonium"},
        {"id": "c", "text": "Rome is in Italy.", "subject": "Rome", "object": "Italy"},
    ]  # fmt: skip
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(f) + "\n" for f in facts))
    (tmp_path / "study.toml").write_text(
        BASE.replace(
            'name = "scripted"', "name = 'scripted'\nreply = '{{ object }} <- {{ subject }}'"
        )
        + "\n[[sinks]]\nname = 'jsonl'\npath = 'out/rows.jsonl'\n[run]\nprogress = true\n"
    )
    report_path = tmp_path / "reports" / "report.json"
    code = main(
        ["run", str(tmp_path / "study.toml"), "--limit", "2", "--json-report", str(report_path)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "reverse" in captured.out  # the report table
    report = json.loads(report_path.read_text())
    assert report["records"] == 2 and report["accepted"] == 2
    rows = [json.loads(line) for line in (tmp_path / "out" / "rows.jsonl").open()]
    assert [r["source_id"] for r in rows] == ["a", "b"]
    assert rows[0]["text"] == "Lena Brandt <- Olaf Brandt"
    assert rows[0]["provenance"]["strategy"] == "reverse"
    assert rows[0]["provenance"]["source_id"] == "a"
    # --quiet: nothing on stdout
    assert main(["run", str(tmp_path / "study.toml"), "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def test_run_is_resumable_by_default_and_leaves_no_journal(tmp_path: Path) -> None:
    import json as _json

    from mstudy.cli import main as cli_main

    data = tmp_path / "facts.jsonl"
    data.write_text(
        _json.dumps({"id": "a", "text": "A is in B.", "subject": "A", "object": "B"}) + "\n"
    )
    config = tmp_path / "study.toml"
    config.write_text(
        '[source]\npath = "facts.jsonl"\n[teacher]\nname = "scripted"\n'
        'reply = "{{ object }} holds {{ subject }}."\n'
        '[[strategies]]\nname = "reverse"\n[[sinks]]\nname = "jsonl"\npath = "out/rows.jsonl"\n'
        '[run]\ncache = "calls.sqlite"\n'
    )
    assert cli_main(["run", "-q", str(config)]) == 0
    assert (tmp_path / "out" / "rows.jsonl").read_text().count("\n") == 1
    assert not (tmp_path / "out" / ".study.journal").exists()
    assert (tmp_path / "calls.sqlite").exists()
    assert cli_main(["run", "-q", "--restart", str(config)]) == 0


def test_cache_stats_and_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json as _json

    from mstudy.cache import CallCache
    from mstudy.cli import main as cli_main
    from mstudy.records import Completion

    path = tmp_path / "calls.sqlite"
    with CallCache(path) as cache:
        cache.put("t1", Completion("k1", "a", completion_tokens=3))
        cache.put("t2", Completion("k2", "b", completion_tokens=4))
    assert cli_main(["cache", "stats", "--json", str(path)]) == 0
    stats = _json.loads(capsys.readouterr().out)
    assert stats["entries"] == 2 and stats["teachers"] == {"t1": 1, "t2": 1}
    assert stats["completion_tokens"] == 7
    assert cli_main(["cache", "prune", "--teacher", "t1", str(path)]) == 0
    assert "deleted 1" in capsys.readouterr().out
    assert cli_main(["cache", "prune", str(path)]) == 2
    assert cli_main(["cache", "stats", str(tmp_path / "missing.sqlite")]) == 2


# -- mstudy run: publishing settings are checked first ----------------------------------------

PUBLISHING = (
    BASE + "\n[[sinks]]\nname = 'jsonl'\npath = 'out/rows.jsonl'\n\n[hub]\nfolder = 'hub'\n"
)


def test_run_refuses_a_token_in_hub_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data.jsonl").write_text('{"id": 1, "text": "A is B."}\n')
    text = PUBLISHING + "token = 'hf_canaryCANARYcanary0123456789'\n"
    (tmp_path / "study.toml").write_text(text)
    assert main(["run", str(tmp_path / "study.toml")]) == 2
    captured = capsys.readouterr()
    line = text.splitlines().index("token = 'hf_canaryCANARYcanary0123456789'") + 1
    assert captured.err.startswith(f"mstudy: error: {tmp_path / 'study.toml'}:{line}: ")
    assert "tokens never belong in config files" in captured.err
    assert "HF_TOKEN" in captured.err and "hf auth login" in captured.err
    assert "hf_canary" not in captured.err and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "study.toml"]


@pytest.mark.parametrize("repo_id", ["not a/valid//id", "me/", "a/b/c"])
def test_run_refuses_a_bad_repo_id_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], repo_id: str
) -> None:
    (tmp_path / "data.jsonl").write_text('{"id": 1, "text": "A is B."}\n')
    (tmp_path / "study.toml").write_text(PUBLISHING)
    assert main(["run", str(tmp_path / "study.toml"), "--push-to-hub", repo_id]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"mstudy: error: --push-to-hub: invalid Hub repo id {repo_id!r}")
    assert "Traceback" not in captured.err and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "study.toml"]


def test_run_publishing_needs_a_file_sink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "study.toml").write_text(BASE)
    assert main(["run", str(tmp_path / "study.toml"), "--save-for-hub", str(tmp_path / "h")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'study.toml'}: publishing uploads the rows of the first jsonl" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


# -- config errors: every documented key, any wrong type ------------------------------------

_STR, _INT, _FLOAT, _BOOL, _LIST, _TABLE = "str", "int", "float", "bool", "list", "table"
_NUMBER = {_INT, _FLOAT}
REMOTE = '[teacher]\nname = "remote"\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n'
# (section, key): the kinds of TOML value the key accepts ("list" means a list of strings;
# the lists drawn below hold integers, so they never fit one)
DOCUMENTED: dict[tuple[str, str], set[str]] = {
    ("source", "path"): {_STR},
    ("source", "id_field"): {_STR},
    ("source", "limit"): {_INT},
    ("run", "progress"): {_BOOL},
    ("run", "cache"): {_STR},
    ("run", "journal"): {_BOOL, _STR},
    ("run", "checkpoint_every"): _NUMBER,
    ("run", "max_tokens"): {_INT},
    ("run", "max_cost"): _NUMBER,
    ("run", "price_in"): _NUMBER,
    ("run", "price_out"): _NUMBER,
    ("hub", "repo_id"): {_STR},
    ("hub", "private"): {_BOOL},
    ("hub", "folder"): {_STR},
    ("hub", "license"): {_STR},
    ("hub", "pretty_name"): {_STR},
    ("hub", "split"): {_STR},
    ("hub", "tags"): set(),
    ("hub", "language"): set(),
    ("hub", "task_categories"): set(),
    ("strategies", "n"): {_INT},
    ("strategies", "template"): {_STR},
    ("strategies", "system"): {_STR},
    ("strategies", "prefill"): {_STR},
    ("strategies", "fields"): {_TABLE},
    ("strategies", "params"): {_TABLE},
    ("strategies", "accept_truncated"): {_BOOL},
    ("strategies", "max_input_chars"): {_INT},
    ("teacher", "concurrency"): {_INT, _LIST},  # a pair (low, high) of integers too
    ("teacher", "timeout"): _NUMBER,
    ("teacher", "max_retries"): {_INT},
    ("teacher", "prefill_mode"): {_STR},
    ("teacher", "extra_body"): {_TABLE},
    ("teacher", "max_consecutive_failures"): {_INT},
}


def _toml_values() -> Any:
    from hypothesis import strategies as st

    words = st.text("abcxyz", min_size=1, max_size=6)
    return st.one_of(
        words.map(lambda s: (_STR, json.dumps(s))),
        st.integers(-5, 10**6).map(lambda i: (_INT, str(i))),
        st.floats(allow_nan=True, allow_infinity=True).map(
            lambda f: (_FLOAT, {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(f), repr(f)))
        ),
        st.booleans().map(lambda b: (_BOOL, str(b).lower())),
        st.lists(st.integers(0, 9), min_size=1, max_size=3).map(lambda xs: (_LIST, str(xs))),
        st.dictionaries(words, st.integers(0, 9), min_size=1, max_size=2).map(
            lambda d: (_TABLE, "{ " + ", ".join(f"{k} = {v}" for k, v in d.items()) + " }")
        ),
    )


def _config_with(section: str, key: str, value: str) -> str:
    teacher = '[teacher]\nname = "scripted"\n'
    text = BASE.replace(teacher, "")
    if section == "source":
        text = text.replace(
            'path = "data.jsonl"\n', "" if key == "path" else 'path = "data.jsonl"\n'
        )
        text = text.replace("[source]\n", f"[source]\n{key} = {value}\n")
    elif section == "strategies":
        text += f"{key} = {value}\n"
    elif section == "teacher":
        text += f"\n{REMOTE}{key} = {value}\n"
    else:
        text += f"\n[{section}]\n{key} = {value}\n"
    if section != "teacher":
        text += f"\n{teacher}"
    return text


def test_wrong_typed_documented_keys_are_config_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from mstudy.config import load_config
    from mstudy.errors import ConfigError

    (tmp_path / "data.jsonl").write_text('{"id": 1, "text": "A is B."}\n')
    keys = sorted(DOCUMENTED)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(keys), _toml_values())
    def check(where: tuple[str, str], drawn: tuple[str, str]) -> None:
        kind, value = drawn
        if kind in DOCUMENTED[where]:
            return  # a value of a type the key takes
        section, key = where
        path = tmp_path / "study.toml"
        path.write_text(_config_with(section, key, value))
        with pytest.raises(ConfigError) as info:
            load_config(path).check_components()
        assert info.value.parameter == key, str(info.value)
        assert info.value.line is not None and info.value.path == str(path)
        capsys.readouterr()
        assert main(["run", str(path), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mstudy: error: {path}:{info.value.line}: ")
        assert "Traceback" not in err and err.count(str(path)) == 1

    check()
    assert not (tmp_path / ".study.journal").exists()


def test_template_syntax_error_exits_2_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data.jsonl").write_text('{"id": 1, "text": "A is B."}\n')
    text = BASE + 'template = "Reverse {{ text "\n\n[[sinks]]\nname = "jsonl"\npath = "o.jsonl"\n'
    (tmp_path / "study.toml").write_text(text)
    assert main(["run", str(tmp_path / "study.toml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.startswith("template"))
    assert f"study.toml:{line}:" in err
    assert "template syntax error" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_source_exits_2_and_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE + '\n[[sinks]]\nname = "jsonl"\npath = "out/rows.jsonl"\n'
    (tmp_path / "study.toml").write_text(text)
    assert main(["run", str(tmp_path / "study.toml")]) == 2
    err = capsys.readouterr().err
    assert "study.toml:2: source file not found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]  # no journal, no out/


def test_server_down_error_masks_credentials_in_base_url(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    key = "sk-canary-url-5d1e"
    (tmp_path / "data.jsonl").write_text('{"id": 1, "text": "A is B."}\n')
    text = BASE.replace(
        '[teacher]\nname = "scripted"\n',
        f'[teacher]\nname = "remote"\nmodel = "m"\nmax_retries = 0\n'
        f'base_url = "http://user:{key}@127.0.0.1:{port}/v1"\n',
    )
    (tmp_path / "study.toml").write_text(text + "\n[run]\njournal = false\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-m", "mstudy", "run", str(tmp_path / "study.toml"), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert "could not reach http://***@127.0.0.1" in result.stderr
    assert key not in result.stderr and key not in result.stdout
