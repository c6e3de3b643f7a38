"""TOML study configs: parsing, errors that point at their line, path resolution, building."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from mstudy.config import build_component, load_config, parse_config
from mstudy.errors import ConfigError, PluginLoadError

BASE = """\
[source]
path = "data.jsonl"

[teacher]
name = "scripted"

[[strategies]]
name = "reverse"
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str, *, build: bool = False) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config = load_config(path)
        if build:
            config.build()
    return str(info.value)


def line_of(text: str, needle: str, occurrence: int = 0) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return lines[occurrence]


# -- parsing ----------------------------------------------------------------------------------


def test_full_config_parses(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """\
            [source]
            path = "data/facts.jsonl"
            id_field = "key"
            limit = 100

            [teacher]
            name = "scripted"
            reply = "ok"

            [[strategies]]
            name = "reverse"
            n = 2
            fields = { text = "fact", subject = "subject", object = "object" }
            params = { temperature = 0.7, max_new_tokens = 64 }

            [[strategies]]
            name = "paraphrase"

            [[filters]]
            name = "length"
            min_chars = 10

            [[sinks]]
            name = "jsonl"
            path = "out/enriched.jsonl"

            [rejects]
            name = "jsonl"
            path = "out/rejects.jsonl"

            [run]
            progress = true
            """,
        )
    )
    assert config.teacher == {"name": "scripted", "reply": "ok"}
    assert [s["name"] for s in config.strategies] == ["reverse", "paraphrase"]
    assert config.strategies[0]["params"] == {"temperature": 0.7, "max_new_tokens": 64}
    assert config.filters == [{"name": "length", "min_chars": 10}]
    assert config.rejects == {"name": "jsonl", "path": "out/rejects.jsonl"}
    assert (config.limit, config.id_field, config.progress) == (100, "key", True)
    assert config.source_path == str(tmp_path / "data" / "facts.jsonl")


def test_short_forms(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """\
            teacher = "scripted"
            strategies = ["reverse", "explain"]
            sinks = ["out/rows.jsonl"]

            [source]
            path = "data.jsonl"
            """,
        )
    )
    assert config.teacher == {"name": "scripted"}
    assert config.strategies == [{"name": "reverse"}, {"name": "explain"}]
    assert config.sinks == [{"name": "jsonl", "path": "out/rows.jsonl"}]
    assert (config.limit, config.id_field, config.progress) == (None, "id", None)


# -- errors with lines ------------------------------------------------------------------------


def test_malformed_toml_names_file_line_and_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, BASE + "\n[[filters]\nname = 'length'\n")
    assert "study.toml:10:" in message  # the line of "[[filters]"
    assert "invalid TOML" in message
    assert "(at line" not in message  # the position is moved to the front


def test_unknown_plugin_name_points_at_name_line_and_suggests(tmp_path: Path) -> None:
    text = BASE + '\n[[strategies]]\nn = 2\nname = "revers"\n'
    message = error_of(tmp_path, text, build=True)
    assert f"study.toml:{line_of(text, 'revers', 1)}: strategy 'revers' is not installed" in message
    assert "(did you mean 'reverse'?)" in message


def test_unknown_parameter_points_at_its_line(tmp_path: Path) -> None:
    text = BASE + 'n = 2\n\n[[filters]]\nname = "length"\nmin_char = 3\n'
    message = error_of(tmp_path, text, build=True)
    assert f"study.toml:{line_of(text, 'min_char')}: filter 'length': unknown parameter" in message
    assert "did you mean 'min_chars'?" in message


def test_bad_value_points_at_the_key_it_names(tmp_path: Path) -> None:
    text = BASE + "n = 0\n"
    message = error_of(tmp_path, text, build=True)
    assert message.startswith(f"{tmp_path / 'study.toml'}:{line_of(text, 'n = 0')}: strategy")
    assert "n must be >= 1" in message
    text = BASE + "params = { temprature = 0.3 }\n"
    message = error_of(tmp_path, text, build=True)
    assert f"study.toml:{line_of(text, 'temprature')}:" in message
    assert "temprature" in message


def test_parameter_in_sub_table_points_at_it(tmp_path: Path) -> None:
    text = BASE + "\n[[strategies]]\nname = \"explain\"\n\n[strategies.fieldz]\ntext = 'x'\n"
    message = error_of(tmp_path, text, build=True)
    assert f"study.toml:{line_of(text, '[strategies.fieldz]')}: strategy 'explain'" in message


def test_unknown_section(tmp_path: Path) -> None:
    text = BASE + "\n[[strategy]]\nname = 'cot'\n"
    message = error_of(tmp_path, text)
    assert f"study.toml:{line_of(text, '[[strategy]]')}: unknown section 'strategy'" in message
    assert "did you mean 'strategies'?" in message
    assert "accepted: source, teacher, strategies, filters, sinks, rejects, run" in message


@pytest.mark.parametrize("section", ["source", "teacher", "strategies"])
def test_missing_sections(tmp_path: Path, section: str) -> None:
    tables = {
        "source": '[source]\npath = "data.jsonl"\n',
        "teacher": '[teacher]\nname = "scripted"\n',
        "strategies": '[[strategies]]\nname = "reverse"\n',
    }
    text = "".join(t for name, t in tables.items() if name != section)
    message = error_of(tmp_path, text)
    assert f"missing [{section}] section" in message


def test_top_level_key_after_a_table_is_explained(tmp_path: Path) -> None:
    text = '[source]\npath = "d.jsonl"\n[teacher]\nname = "scripted"\nstrategies = ["reverse"]\n'
    message = error_of(tmp_path, text)
    assert "study.toml:5: 'strategies' is inside [teacher]" in message


def test_source_and_run_keys_are_checked(tmp_path: Path) -> None:
    text = BASE.replace('path = "data.jsonl"', 'path = "data.jsonl"\nlimt = 3')
    message = error_of(tmp_path, text)
    assert "study.toml:3: unknown key 'limt' in [source] (did you mean 'limit'?)" in message
    message = error_of(tmp_path, BASE.replace('path = "data.jsonl"', "path = 'x'\nlimit = 0"))
    assert "study.toml:3: limit must be a positive integer" in message
    message = error_of(tmp_path, BASE + "[run]\nprogress = 'yes'\n")
    assert "progress must be true or false" in message
    text = BASE + "[[filters]]\nmin_chars = 3\n"
    message = error_of(tmp_path, text, build=True)
    assert f"study.toml:{line_of(text, '[[filters]]')}: a filter needs a 'name'" in message


def test_missing_file_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


# -- building ---------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    config = parse_config(BASE, folder / "study.toml")
    assert config.source_path == str(folder / "data.jsonl")
    sink = build_component(
        "sinks", {"name": "jsonl", "path": "out/rows.jsonl"}, "x.toml:3", base_dir=folder
    )
    assert Path(sink.path) == folder / "out" / "rows.jsonl"  # type: ignore[attr-defined]
    sink.abort()  # type: ignore[attr-defined]
    absolute = tmp_path / "abs.jsonl"
    sink = build_component("sinks", {"name": "jsonl", "path": str(absolute)}, base_dir=folder)
    assert Path(sink.path) == absolute  # type: ignore[attr-defined]
    sink.abort()  # type: ignore[attr-defined]


def test_build_component_messages_use_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^here\.toml:4: strategy 'reverse': unknown param"):
        build_component("strategies", {"name": "reverse", "nn": 1}, "here.toml:4")
    with pytest.raises(ConfigError, match=r"^strategy 'nope' is not installed"):
        build_component("strategies", {"name": "nope"})


def test_plugin_load_errors_keep_their_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a distribution whose entry point names a module that does not exist
    dist = tmp_path / "cfg_broken_plugin-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cfg-broken-plugin\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[mstudy.filters]\ncfgbroken = no_such_module_x:F\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError) as info:
        build_component("filters", {"name": "cfgbroken"}, "s.toml:9")
    assert str(info.value).startswith("s.toml:9: cannot load filter 'cfgbroken'")
    assert "cfg-broken-plugin 0.3" in str(info.value)


def test_build_returns_study_and_source(tmp_path: Path) -> None:
    config = parse_config(BASE + "[run]\nprogress = true\n", tmp_path / "study.toml")
    study, source = config.build(progress=False)
    assert source == str(tmp_path / "data.jsonl")
    assert [s.name for s in study.strategies] == ["reverse"]
    assert study.progress is False
    assert study.teacher.name == "scripted"


def test_names_are_checked_before_anything_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mstudy import plugins

    created: list[str] = []
    real_create = plugins.create

    def spy(kind: str, spec: object, /, **params: object) -> object:
        created.append(str(spec))
        return real_create(kind, spec, **params)

    monkeypatch.setattr(plugins, "create", spy)
    text = BASE + "\n[[sinks]]\nname = 'jsonl'\npath = 'o.jsonl'\n[[sinks]]\nname = 'jsnol'\n"
    message = error_of(tmp_path, text, build=True)
    assert "sink 'jsnol' is not installed (did you mean 'jsonl'?)" in message
    assert created == []


def test_end_to_end_run_writes_rows_with_provenance(tmp_path: Path) -> None:
    rows = [
        {"id": "f1", "fact": "Olaf Brandt is the father of Lena Brandt.", "subject": "Olaf Brandt",
         "object": "Lena Brandt"},
        {"id": "f2", "fact": "Marie Curie discovered polonium.", "subject": "Marie Curie",
         "object": "polonium"},
    ]  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    (data / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = write(
        tmp_path,
        """\
        [source]
        path = "data/facts.jsonl"

        [teacher]
        name = "scripted"
        reply = { reverse = "{{ object }} has {{ subject }} as a counterpart." }

        [[strategies]]
        name = "reverse"
        fields = { text = "fact", subject = "subject", object = "object" }
        params = { temperature = 0.0, max_new_tokens = 32 }

        [[filters]]
        name = "length"
        min_chars = 10

        [[sinks]]
        name = "jsonl"
        path = "out/enriched.jsonl"

        [rejects]
        name = "jsonl"
        path = "out/rejects.jsonl"
        """,
    )
    study, source = load_config(path).build(progress=False)
    report = study.run(source)
    assert report.to_dict()["accepted"] == 2
    written = [json.loads(line) for line in (tmp_path / "out" / "enriched.jsonl").open()]
    assert [r["source_id"] for r in written] == ["f1", "f2"]
    assert written[0]["text"] == "Lena Brandt has Olaf Brandt as a counterpart."
    provenance = written[0]["provenance"]
    assert provenance["strategy"] == "reverse"
    assert provenance["params"]["max_new_tokens"] == 32
    assert provenance["teacher"]
    assert (tmp_path / "out" / "rejects.jsonl").exists()


# -- [hub] ------------------------------------------------------------------------------------

HUB_BASE = BASE + "\n[[sinks]]\nname = 'jsonl'\npath = 'out/rows.jsonl'\n\n[hub]\n"


def test_hub_section_gives_the_publishing_settings(tmp_path: Path) -> None:
    text = HUB_BASE + textwrap.dedent(
        """\
        repo_id = "me/facts-studied"
        private = false
        folder = "out/hub"
        license = "cc-by-4.0"
        pretty_name = "Facts, studied"
        split = "train"
        tags = ["facts"]
        language = ["en"]
        task_categories = ["text-generation", "question-answering"]
        """
    )
    config = load_config(write(tmp_path, text))
    settings = config.hub_settings()
    assert settings is not None
    assert settings.data == tmp_path / "out" / "rows.jsonl"
    assert (settings.repo_id, settings.private) == ("me/facts-studied", False)
    assert settings.folder == tmp_path / "out" / "hub"  # relative to the config file
    assert settings.card == {
        "license": "cc-by-4.0",
        "pretty_name": "Facts, studied",
        "split": "train",
        "tags": ["facts"],
        "language": ["en"],
        "task_categories": ["text-generation", "question-answering"],
        "source": "data.jsonl",
    }
    # the command line's overrides; a folder given there is taken as it is
    override = config.hub_settings(repo_id="other/repo", folder="elsewhere")
    assert override is not None
    assert (override.repo_id, override.folder) == ("other/repo", Path("elsewhere"))
    with pytest.raises(ConfigError, match="invalid Hub repo id 'a b'"):
        config.hub_settings(repo_id="a b")


def test_hub_defaults_and_nothing_to_publish(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, HUB_BASE + "license = 'mit'\n"))
    assert config.hub_settings() is None  # card metadata only: nothing to publish
    settings = config.hub_settings(repo_id="me/x")
    assert settings is not None and settings.private is True and settings.folder is None
    assert load_config(write(tmp_path, BASE)).hub_settings() is None


def test_hub_publishes_the_first_jsonl_or_parquet_sink_with_a_path(tmp_path: Path) -> None:
    sinks = '[{ name = "dataset" }, { name = "mstudy:parquet", path = "o/a.parquet" }, "o/b.jsonl"]'
    text = f"sinks = {sinks}\n" + BASE + "\n[hub]\nfolder = 'hub'\n"
    settings = load_config(write(tmp_path, text)).hub_settings()
    assert settings is not None and settings.data == tmp_path / "o" / "a.parquet"


def test_hub_token_is_refused(tmp_path: Path) -> None:
    text = HUB_BASE + 'repo_id = "me/x"\ntoken = "hf_secret"\n'
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'study.toml'}:{line_of(text, 'token =')}: ")
    assert "tokens never belong in config files" in message
    assert "HF_TOKEN" in message and "hf auth login" in message
    assert "hf_secret" not in message
    message = error_of(tmp_path, HUB_BASE + 'hf_token = "x"\n')
    assert "[hub] does not take 'hf_token'" in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("licence = 'mit'", "unknown key 'licence' in [hub] (did you mean 'license'?)"),
        ("repo_id = 'not a/valid//id'", "invalid Hub repo id 'not a/valid//id'"),
        ("repo_id = 3", "repo_id must be a non-empty string"),
        ("private = 'no'", "private must be true or false"),
        ("folder = ''", "folder must be a non-empty string"),
        ("license = ['mit']", "license must be a non-empty string"),
        ("split = 'train/x'", "split must be letters, digits or '_'"),
        ("tags = 'facts'", "tags must be a list of strings"),
        ("language = ['en', 1]", "language must be a list of strings"),
        ("task_categories = 'text-generation'", "task_categories must be a list of strings"),
    ],
)
def test_hub_values_are_checked_with_their_line(tmp_path: Path, line: str, expected: str) -> None:
    text = HUB_BASE + "license = 'mit'\n" * (not line.startswith("license")) + line + "\n"
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'study.toml'}:{line_of(text, line)}: ")
    assert expected in message


def test_hub_without_a_file_sink_names_the_hub_line(tmp_path: Path) -> None:
    text = BASE + "\n[hub]\nlicense = 'mit'\nrepo_id = 'me/x'\n"
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'study.toml'}:{line_of(text, 'repo_id')}: ")
    assert "first jsonl or parquet sink" in message
    config = load_config(write(tmp_path, BASE + "\n[hub]\nlicense = 'mit'\n"))
    with pytest.raises(ConfigError, match=r"study\.toml:\d+: publishing uploads the rows"):
        config.hub_settings(folder="out/hub")


def test_hub_keys_are_documented() -> None:
    """docs/config.md has a [hub] table of exactly the keys the loader accepts."""
    from docs_snippets import DOCS, first_column_names, sections

    from mstudy.config import HUB_KEYS

    (section,) = [s for s in sections(DOCS / "config.md") if s.heading.startswith("`[hub]`")]
    assert first_column_names(section.tables[0]) == set(HUB_KEYS)


# -- errors carry data ------------------------------------------------------------------------


def config_error(tmp_path: Path, text: str, *, build: bool = True) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config = load_config(path)
        if build:
            config.build()
    return info.value


@pytest.mark.parametrize(
    ("extra", "parameter", "needle"),
    [
        ('n = "three"\n', "n", 'n = "three"'),
        ('[run]\nmax_tokens = "lots"\n', "max_tokens", "max_tokens"),
        ('params = { max_new_tokens = "many" }\n', "params", "params"),
        ("params = { temprature = 0.3 }\n", "params", "params"),
        ("fields = 3\n", "fields", "fields ="),
    ],
)
def test_wrong_typed_values_name_their_parameter_and_line(
    tmp_path: Path, extra: str, parameter: str, needle: str
) -> None:
    text = BASE + extra
    error = config_error(tmp_path, text)
    assert error.parameter == parameter
    assert error.path == str(tmp_path / "study.toml")
    assert error.line == line_of(text, needle)
    message = str(error)
    assert message.count(str(tmp_path / "study.toml")) == 1  # the file named once
    assert "not supported between" not in message


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", '"2"', "true"])
def test_checkpoint_every_must_be_a_finite_number(tmp_path: Path, value: str) -> None:
    text = BASE + f"\n[run]\ncheckpoint_every = {value}\n"
    error = config_error(tmp_path, text, build=False)
    assert error.parameter == "checkpoint_every"
    assert error.line == line_of(text, "checkpoint_every")


@pytest.mark.parametrize(
    ("key", "template"),
    [("template", "Say {{ text "), ("system", "{% if x %}no end"), ("prefill", "{{ }}")],
)
def test_template_syntax_errors_are_reported_at_load(
    tmp_path: Path, key: str, template: str
) -> None:
    text = BASE + f"{key} = {json.dumps(template)}\n"
    error = config_error(tmp_path, text, build=False)  # before any record is read
    assert error.parameter == key
    assert error.line == line_of(text, f"{key} =")
    assert "template syntax error" in str(error)


def test_config_errors_survive_pickling() -> None:
    import pickle

    from mstudy.errors import RecordError

    error = ConfigError("bad", parameter="n", path="s.toml", line=3)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.parameter, copy.path, copy.line) == ("s.toml:3: bad", "n", "s.toml", 3)
    record = pickle.loads(pickle.dumps(RecordError("m", record_id="r", field="f", reason="x")))
    assert (record.record_id, record.field, record.reason) == ("r", "f", "x")


def test_a_missing_source_is_found_before_anything_is_built(tmp_path: Path) -> None:
    text = BASE + '\n[[sinks]]\nname = "jsonl"\npath = "out/rows.jsonl"\n'
    config = load_config(write(tmp_path, text))
    with pytest.raises(ConfigError) as info:
        config.check_source()
    assert info.value.parameter == "path" and info.value.line == line_of(text, "data.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]
